//! Liveness, readiness and metrics: public, no tenant.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers, and Redis when configured.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "`service_unavailable`: the database or Redis does not answer"),
    ))]
pub async fn ready(State(state): State<AppState>) -> AppResult<Json<Health>> {
    // One probe at a time, its result reused for a second: a flood of probes costs the
    // database one pooled connection a second, not one each.
    let mut last = state.readiness.0.lock().await;
    let down = match *last {
        Some((at, down)) if at.elapsed() < PROBE_REUSE => down,
        _ => {
            let down = probe(&state).await;
            *last = Some((Instant::now(), down));
            down
        }
    };
    drop(last);
    match down {
        Some(dependency) => Err(AppError::Unavailable(dependency)),
        None => Ok(Json(Health { status: "ready" })),
    }
}

/// How long a readiness probe's result is reused.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// The last readiness probe: when, and the dependency that was down (if one was).
#[derive(Default)]
pub struct Readiness(tokio::sync::Mutex<Option<(Instant, Option<&'static str>)>>);

/// The dependency that does not answer, if any.
async fn probe(state: &AppState) -> Option<&'static str> {
    let check = async {
        let conn = state.db.platform().await?;
        conn.query_one("SELECT 1", &[]).await
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(_))
    ) {
        return Some("The database");
    }
    let redis_down = match &state.redis {
        Some(redis) => !matches!(
            tokio::time::timeout(Duration::from_secs(2), redis.ping()).await,
            Ok(Ok(()))
        ),
        None => false,
    };
    redis_down.then_some("Redis")
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        {
            let pool = state.db.status();
            state.metrics.render(pool.size, pool.available)
        },
    )
}
