//! Monitoring (SPEC §7): the activity log, rules and alerts.

pub mod activity;
pub mod rules;
