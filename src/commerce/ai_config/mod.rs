//! How the tenant's chat bot behaves: one configuration per tenant.

pub mod model;
pub mod routes;
pub(crate) mod store;
