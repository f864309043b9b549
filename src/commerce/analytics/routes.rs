//! `GET /api/v1/analytics/summary` (trust level 1) and `GET /api/v1/analytics/timeseries`
//! (trust level 2).

use axum::Json;
use axum::extract::{Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{SeriesQuery, Summary, SummaryQuery, Timeseries};
use super::store;
use crate::commerce::settings::store::timezone;
use crate::error::AppResult;
use crate::state::AppState;
use crate::trust::gate::{AnalyticsSummary, AnalyticsTimeseries, Unlocked};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_summary))
        .routes(routes!(get_timeseries))
}

/// Revenue, orders, average order value, top products and conversations turned into orders
/// over a range (default the last 30 days of the tenant's time zone). Trust level 1.
#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics",
    params(SummaryQuery),
    responses(
        (status = 200, description = "The summary", body = Summary),
        (status = 403, description = "`feature_not_available` (below trust level 1, with `feature` and `required_level`)"),
        (status = 422, description = "`validation_failed` (since, until: until after since, at most 366 days)"),
    ))]
pub async fn get_summary(
    State(state): State<AppState>,
    ctx: Unlocked<AnalyticsSummary>,
    Query(query): Query<SummaryQuery>,
) -> AppResult<Json<Summary>> {
    let tx = ctx.db().begin().await?;
    let tz = timezone(&tx, ctx.tenant_id()).await?;
    let range = query.parse(tz, state.clock.now())?;
    let summary = store::summary(&tx, ctx.tenant_id(), tz, range).await?;
    tx.commit().await?;
    Ok(Json(summary))
}

/// Orders and revenue per day, week or month of the tenant's time zone, every bucket of the
/// range listed (default the last 30 days). Trust level 2.
#[utoipa::path(get, path = "/api/v1/analytics/timeseries", tag = "analytics",
    params(SeriesQuery),
    responses(
        (status = 200, description = "The time series", body = Timeseries),
        (status = 403, description = "`feature_not_available` (below trust level 2, with `feature` and `required_level`)"),
        (status = 422, description = "`validation_failed` (since, until, interval)"),
    ))]
pub async fn get_timeseries(
    State(state): State<AppState>,
    ctx: Unlocked<AnalyticsTimeseries>,
    Query(query): Query<SeriesQuery>,
) -> AppResult<Json<Timeseries>> {
    let tx = ctx.db().begin().await?;
    let tz = timezone(&tx, ctx.tenant_id()).await?;
    let (range, interval) = query.parse(tz, state.clock.now())?;
    let series = store::timeseries(&tx, ctx.tenant_id(), tz, range, interval).await?;
    tx.commit().await?;
    Ok(Json(series))
}
