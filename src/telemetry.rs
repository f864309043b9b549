//! Logs, request ids and the per-request middleware (`observe`).
//!
//! Every request runs inside a `request` span carrying its request id, route, tenant and
//! actor (the last two recorded once known), so every log line of the request names them.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{Instrument, field};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;
use crate::monitoring::activity;
use crate::scope::{RequestFacts, RequestScope};
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

/// A client-sent id is echoed only when it is short, visible ASCII; otherwise a new one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

/// The method as a metric label: the standard methods, else `other` (a closed set, so a
/// client cannot mint label values).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// What the activity log keeps of a user agent.
const USER_AGENT_CHARS: usize = 512;

/// The outermost request middleware: request id, the `request` span, the [`RequestScope`],
/// and on the way out the scope's headers, metrics, the access log line and the request's
/// activity (into the batch writer, for tenant-scoped requests a data change did not record).
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        tenant_id = field::Empty,
        actor = field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let facts = RequestFacts {
        method,
        route: route.clone(),
        ip: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
        user_agent: req
            .headers()
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(USER_AGENT_CHARS).collect()),
        request_id: id.clone(),
    };
    let scope = RequestScope::new(span.clone(), facts, started);
    req.extensions_mut().insert(scope.clone());

    let mut response = next.run(req).instrument(span.clone()).await;
    scope.apply_headers(response.headers_mut());

    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(method, &route, status.as_u16(), elapsed.as_secs_f64());
    if let Some(new) = activity::for_response(&scope, status.as_u16()) {
        state.activity.record(new);
    }
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
