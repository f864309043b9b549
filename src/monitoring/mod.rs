//! Monitoring (SPEC §7): the live WebSocket hub.

pub mod hub;
pub mod ws;
