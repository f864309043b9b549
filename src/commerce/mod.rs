//! The seller-facing API: everything here runs inside one tenant's context.

pub mod tenant;
pub mod users;
