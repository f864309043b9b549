//! The server's Prometheus metrics: a leaf that every layer increments. It depends only on the
//! Prometheus client; callers pass plain labels (`&'static str` kinds, the matched route).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    outcome: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The server's metrics, in a registry of its own (one per `Application`).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    directory_lookups: Family<KindLabels, Counter>,
    auth_failures: Family<KindLabels, Counter>,
    rate_limit_decisions: Family<KindLabels, Counter>,
    rate_limit_fallbacks: Counter,
    job_failures: Family<KindLabels, Counter>,
    connections_refused: Counter,
    activity_dropped: Family<KindLabels, Counter>,
    directory_refusals: Counter,
    audit_events: Family<KindLabels, Counter>,
    media_orphans_deleted: Counter,
    media_uploads_refused: Counter,
    notification_deliveries: Family<DeliveryLabels, Counter>,
    sms_callbacks: Family<KindLabels, Counter>,
    redis_healthy: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
    /// The WebSocket hub's metrics.
    pub ws: WsMetrics,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("convcommerce");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        let directory_lookups = Family::<KindLabels, Counter>::default();
        registry.register(
            "directory_lookups",
            "Tenant and membership lookups that reached the database (cache misses)",
            directory_lookups.clone(),
        );
        let auth_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Rejected bearer tokens by reason",
            auth_failures.clone(),
        );
        let rate_limit_decisions = Family::<KindLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by result (admitted, refused)",
            rate_limit_decisions.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Decisions made in-process because Redis failed",
            rate_limit_fallbacks.clone(),
        );
        let job_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "job_failures",
            "Background job passes that failed or panicked, by job",
            job_failures.clone(),
        );
        let directory_refusals = Counter::default();
        registry.register(
            "directory_lookups_refused",
            "Lookups refused before the database: the caller's misses for the minute were spent",
            directory_refusals.clone(),
        );
        let audit_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "audit_events",
            "Platform-admin actions on tenants, reads included, by action",
            audit_events.clone(),
        );
        let media_orphans_deleted = Counter::default();
        registry.register(
            "media_orphans_deleted",
            "Media objects the cleanup deleted because no row named them for an hour",
            media_orphans_deleted.clone(),
        );
        let media_uploads_refused = Counter::default();
        registry.register(
            "media_uploads_refused",
            "Uploads answered 503 because every upload place was taken",
            media_uploads_refused.clone(),
        );
        let activity_dropped = Family::<KindLabels, Counter>::default();
        registry.register(
            "activity_dropped",
            "Activities not written by the batch writer (buffer_full, write_failed), or not evaluated by the rules (evaluation_full)",
            activity_dropped.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "Connections closed at once because the connection cap was reached",
            connections_refused.clone(),
        );
        let notification_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Email and SMS delivery attempts by channel and outcome (sent, retried, failed, deferred: held for quiet hours)",
            notification_deliveries.clone(),
        );
        let sms_callbacks = Family::<KindLabels, Counter>::default();
        registry.register(
            "notification_sms_callbacks",
            "Twilio status callbacks by kind (applied, unchanged, ignored, unknown, refused)",
            sms_callbacks.clone(),
        );
        let redis_healthy = Gauge::default();
        redis_healthy.set(1);
        registry.register(
            "rate_limit_redis_healthy",
            "1 while the Redis rate-limit backend answers (or none is configured), else 0",
            redis_healthy.clone(),
        );
        let pool_size = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_size.clone(),
        );
        let pool_available = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            pool_available.clone(),
        );
        let ws = WsMetrics::register(&mut registry);
        Self {
            registry,
            ws,
            requests,
            latency,
            directory_lookups,
            auth_failures,
            rate_limit_decisions,
            rate_limit_fallbacks,
            job_failures,
            connections_refused,
            activity_dropped,
            directory_refusals,
            audit_events,
            media_orphans_deleted,
            media_uploads_refused,
            notification_deliveries,
            sms_callbacks,
            redis_healthy,
            pool_size,
            pool_available,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn directory_lookup(&self, kind: &str) {
        self.directory_lookups
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// A rejected bearer token, by the verifier's reason (`malformed`, `unknown_key`, ...).
    pub fn auth_failure(&self, kind: &'static str) {
        self.auth_failures
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn rate_limit_decision(&self, admitted: bool) {
        let kind = if admitted { "admitted" } else { "refused" };
        self.rate_limit_decisions
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn rate_limit_fallback(&self) {
        self.rate_limit_fallbacks.inc();
    }

    pub fn job_failure(&self, job: &'static str) {
        self.job_failures
            .get_or_create(&KindLabels { kind: job.into() })
            .inc();
    }

    pub fn audit_event(&self, action: &'static str) {
        self.audit_events
            .get_or_create(&KindLabels {
                kind: action.into(),
            })
            .inc();
    }

    pub fn media_orphans_deleted(&self, count: u64) {
        self.media_orphans_deleted.inc_by(count);
    }

    pub fn media_upload_refused(&self) {
        self.media_uploads_refused.inc();
    }

    pub fn directory_refusal(&self) {
        self.directory_refusals.inc();
    }

    /// An activity the batch writer lost: `buffer_full` or `write_failed`.
    pub fn activity_dropped(&self, reason: &'static str, count: u64) {
        self.activity_dropped
            .get_or_create(&KindLabels {
                kind: reason.into(),
            })
            .inc_by(count);
    }

    /// An email or SMS attempt: `outcome` is `sent`, `retried`, `failed` or `deferred` (quiet hours).
    pub fn notification_delivery(&self, channel: &'static str, outcome: &'static str) {
        self.notification_deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A Twilio status callback: `applied`, `unchanged`, `ignored` (no sid or status),
    /// `unknown` (signed, but its sid leads to no delivery) or `refused`.
    pub fn sms_callback(&self, kind: &'static str) {
        self.sms_callbacks
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn set_redis_healthy(&self, healthy: bool) {
        self.redis_healthy.set(i64::from(healthy));
    }

    /// The OpenMetrics text, with the pool gauges set to `pool_size` open and `pool_idle` idle
    /// connections.
    pub fn render(&self, pool_size: usize, pool_idle: usize) -> String {
        self.pool_size.set(pool_size as i64);
        self.pool_available.set(pool_idle as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The WebSocket hub's metrics (SPEC §7), all with closed label sets.
pub struct WsMetrics {
    open: Gauge,
    delivered: Counter,
    closed: Family<KindLabels, Counter>,
    refused: Family<KindLabels, Counter>,
    fanout_dropped: Counter,
}

impl WsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            open: Gauge::default(),
            delivered: Counter::default(),
            closed: Family::default(),
            refused: Family::default(),
            fanout_dropped: Counter::default(),
        };
        registry.register(
            "ws_connections",
            "Open WebSocket connections (authenticated)",
            metrics.open.clone(),
        );
        registry.register(
            "ws_events_delivered",
            "Event frames queued to WebSocket connections (replays included)",
            metrics.delivered.clone(),
        );
        registry.register(
            "ws_closed",
            "WebSockets the server closed, by reason (slow_consumer, missed_pongs, shutdown)",
            metrics.closed.clone(),
        );
        registry.register(
            "ws_refused",
            "WebSockets refused, by reason (tenant_cap, total_cap)",
            metrics.refused.clone(),
        );
        registry.register(
            "ws_fanout_dropped",
            "Published events dropped because the fan-out queue or transport failed",
            metrics.fanout_dropped.clone(),
        );
        metrics
    }

    pub fn opened(&self) {
        self.open.inc();
    }

    pub fn gone(&self) {
        self.open.dec();
    }

    pub fn delivered(&self, frames: u64) {
        self.delivered.inc_by(frames);
    }

    /// `reason`: `slow_consumer`, `missed_pongs` or `shutdown`.
    pub fn closed(&self, reason: &'static str) {
        self.closed
            .get_or_create(&KindLabels {
                kind: reason.into(),
            })
            .inc();
    }

    /// `reason`: `tenant_cap` or `total_cap`.
    pub fn refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&KindLabels {
                kind: reason.into(),
            })
            .inc();
    }

    pub fn fanout_dropped(&self, events: u64) {
        self.fanout_dropped.inc_by(events);
    }
}
