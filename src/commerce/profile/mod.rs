//! The seller's public profile: one per tenant.

pub mod model;
pub mod routes;
pub(crate) mod store;
