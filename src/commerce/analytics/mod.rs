//! Sales analytics (SPEC §6: the summary needs trust level 1, the time series level 2):
//! revenue, orders, average order value, top products and conversations turned into orders,
//! by day in the tenant's time zone, read under row-level security from covering indexes.

pub mod model;
pub mod routes;
pub mod store;
