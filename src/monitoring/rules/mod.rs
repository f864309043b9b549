//! Monitoring rules and alerts (SPEC §7): the condition language, schedules, sliding windows
//! and baselines, the engine the activity sink calls, and the endpoints. docs/MONITORING.md
//! describes the language, the built-ins and the multi-instance design.

pub mod condition;
pub mod engine;
pub mod event;
pub mod model;
pub mod routes;
pub mod schedule;
pub mod store;
pub mod window;
