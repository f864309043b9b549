//! Logs, request ids and Prometheus metrics.
//!
//! Every request runs inside a `request` span carrying its request id, route, tenant and
//! actor (the last two recorded once known), so every log line of the request names them.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::{Instrument, Span, field};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::auth::jwt::TokenError;
use crate::config::LogFormat;
use crate::limits::Decision;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}

/// The request's id, as sent back in `X-Request-ID`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Per-request state shared between the outer middleware and the extractors inside the
/// handler: extractors record what they learn (tenant, actor, the rate-limit decision) and
/// `observe` uses it on the way out.
#[derive(Debug, Clone)]
pub struct RequestScope(Arc<ScopeInner>);

#[derive(Debug)]
struct ScopeInner {
    span: Span,
    rate_limit: OnceLock<Decision>,
}

impl RequestScope {
    pub fn set_rate_limit(&self, decision: Decision) {
        let _ = self.0.rate_limit.set(decision);
    }

    pub fn record_tenant(&self, tenant_id: Uuid) {
        self.0.span.record("tenant_id", field::display(tenant_id));
    }

    pub fn record_actor(&self, actor: &str) {
        self.0.span.record("actor", actor);
    }
}

/// A client-sent id is echoed only when it is short, visible ASCII; otherwise a new one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        tenant_id = field::Empty,
        actor = field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let scope = RequestScope(Arc::new(ScopeInner {
        span: span.clone(),
        rate_limit: OnceLock::new(),
    }));
    req.extensions_mut().insert(scope.clone());

    let mut response = next.run(req).instrument(span.clone()).await;
    if let Some(decision) = scope.0.rate_limit.get() {
        crate::limits::headers::apply(decision, response.headers_mut());
    }

    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(&method, &route, status.as_u16(), elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

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
    redis_healthy: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
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
        Self {
            registry,
            requests,
            latency,
            directory_lookups,
            auth_failures,
            rate_limit_decisions,
            rate_limit_fallbacks,
            redis_healthy,
            pool_size,
            pool_available,
        }
    }
}

impl Metrics {
    fn observe_request(&self, method: &Method, route: &str, status: u16, seconds: f64) {
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

    pub fn auth_failure(&self, err: &TokenError) {
        let kind = match err {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Invalid(_) => "invalid",
        };
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

    pub fn set_redis_healthy(&self, healthy: bool) {
        self.redis_healthy.set(i64::from(healthy));
    }

    pub fn render(&self, pool: deadpool_postgres::Status) -> String {
        self.pool_size.set(pool.size as i64);
        self.pool_available.set(pool.available as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
