//! Members of a tenant: identity-provider subjects mapped to a role.

pub mod model;
pub mod routes;
mod store;
