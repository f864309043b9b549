//! API keys (SPEC §2, §6; trust level 3): create (shown once), list, revoke. The key format
//! and its hash are `auth::api_key`; requests made with a key are resolved by `TenantCtx`.

pub mod model;
pub mod routes;
pub mod store;
