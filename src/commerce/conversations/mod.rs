//! Conversations with customers: messages grouped in one thread per customer and channel.

pub mod model;
pub mod routes;
pub(crate) mod store;
