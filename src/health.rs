//! Liveness, readiness and metrics: public, no tenant.

use std::time::Duration;

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
    let check = async {
        let conn = state.db.platform().await?;
        conn.query_one("SELECT 1", &[]).await
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(_))
    ) {
        return Err(AppError::Unavailable("The database"));
    }
    let redis_down = match &state.redis {
        Some(redis) => !matches!(
            tokio::time::timeout(Duration::from_secs(2), redis.ping()).await,
            Ok(Ok(()))
        ),
        None => false,
    };
    if redis_down {
        return Err(AppError::Unavailable("Redis"));
    }
    Ok(Json(Health { status: "ready" }))
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
