//! `GET /api/v1/activities`: the tenant's activity log, newest first (owner/admin).

use axum::extract::Query;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Activity, ActivityQuery};
use super::store;
use crate::error::AppResult;
use crate::extract::Page;
use crate::state::AppState;
use crate::tenancy::TenantCtx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_activities))
}

/// Lists the tenant's activities, newest first, by category, action, actor, status,
/// resource and time.
#[utoipa::path(get, path = "/api/v1/activities", tag = "monitoring",
    params(ActivityQuery),
    responses(
        (status = 200, description = "A page of activities", body = Page<Activity>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (category, action, actor, status, resource_type, resource_id, since/until, limit)"),
    ))]
pub async fn list_activities(
    ctx: TenantCtx,
    Query(query): Query<ActivityQuery>,
) -> AppResult<Page<Activity>> {
    ctx.require_manager()?;
    let filter = query.parse()?;
    let activities = store::list(ctx.db(), &filter).await?;
    Ok(Page::from_rows(activities, filter.page, |a: &Activity| {
        a.id
    }))
}
