//! What every handler can reach. Deliberately no raw pool: tenant data goes through
//! `TenantCtx`, platform data through the admin module.

use std::sync::Arc;

use crate::auth::jwt::Verifier;
use crate::clock::Clock;
use crate::config::Config;
use crate::db::Db;
use crate::limits::Limiter;
use crate::limits::redis::RedisBackend;
use crate::limits::usage::UsageRecorder;
use crate::metrics::Metrics;
use crate::monitoring::activity::ActivitySink;
use crate::monitoring::activity::writer::ActivityWriter;
use crate::monitoring::hub::Hub;
use crate::monitoring::hub::fanout::Publisher;
use crate::notify::Notifier;
use crate::storage::MediaStore;
use crate::tenancy::directory::Directory;
use crate::trust::recompute::Trust;

/// A cheap handle (one reference count) to [`Services`]: axum clones the state for every
/// extractor of every request.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub config: Arc<Config>,
    pub(crate) db: Db,
    pub verifier: Arc<Verifier>,
    pub directory: Directory,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// `None` when rate limits are off (`RATE_LIMITS=off`).
    pub limiter: Option<Arc<Limiter>>,
    /// The Redis rate-limit backend, when configured (also checked by readiness).
    pub redis: Option<Arc<RedisBackend>>,
    pub usage: UsageRecorder,
    /// The last readiness probe, reused for a second.
    pub readiness: crate::health::Readiness,
    pub media: MediaStore,
    /// Where durable activities go (the rules engine, the WebSocket hub).
    pub activity_sink: Arc<dyn ActivitySink>,
    /// The batch writer for activities that are not part of a data change.
    pub activity: ActivityWriter,
    /// The WebSocket hub of this instance (fed by the fan-out only).
    pub hub: Arc<Hub>,
    /// Where producers send their events, after their rows commit.
    pub publisher: Publisher,
    /// Trust levels: the recompute, the override and the trust document (SPEC §6).
    pub trust: Trust,
    /// Notifications: enqueue in a transaction, publish after its commit (SPEC §8).
    pub notifier: Notifier,
}
