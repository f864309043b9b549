//! Platform administration: the only code that works across tenants. Every action, reads
//! included, is an audit event (`audit`).

pub mod audit;
pub mod model;
pub mod routes;
pub(crate) mod store;
pub mod trust;
