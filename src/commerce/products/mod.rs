//! The tenant's catalogue: products with price, stock, status and images.

pub mod model;
pub mod routes;
pub mod store;
