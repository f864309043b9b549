//! Monitoring (SPEC §7): rules and alerts.

pub mod rules;
