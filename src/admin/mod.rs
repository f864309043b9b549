//! Platform administration: the only code that works across tenants. Every action is
//! logged on the `audit` target with the acting subject.

pub mod model;
pub mod routes;
pub(crate) mod store;
