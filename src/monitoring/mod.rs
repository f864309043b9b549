//! Monitoring (SPEC §7): the activity log.

pub mod activity;
