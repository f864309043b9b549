//! What every handler can reach. Deliberately no raw pool: tenant data goes through
//! `TenantCtx`, platform data through the admin module.

use std::sync::Arc;

use crate::auth::jwt::Verifier;
use crate::commerce::media::storage::MediaStore;
use crate::config::Config;
use crate::db::Db;
use crate::telemetry::Metrics;
use crate::tenancy::directory::Directory;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub(crate) db: Db,
    pub verifier: Arc<Verifier>,
    pub directory: Directory,
    pub metrics: Arc<Metrics>,
    pub media: MediaStore,
}
