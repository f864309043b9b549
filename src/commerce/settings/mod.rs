//! The tenant's settings (SPEC §4): its time zone and automatic order confirmation.

pub mod model;
pub mod routes;
pub mod store;
