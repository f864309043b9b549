//! Orders: server-computed totals, stock reserved with the order, the status state machine
//! and the customer's rating.

pub mod model;
pub mod routes;
pub mod store;
