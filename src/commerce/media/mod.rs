//! Uploaded files (product images, documents): metadata in `media`, bytes in an object store.

pub mod model;
pub mod routes;
mod store;
