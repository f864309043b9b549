//! Monitoring (SPEC §7): the activity log, rules and alerts, the live WebSocket hub.

pub mod activity;
pub mod hub;
pub mod live;
pub mod rules;
pub mod ws;
