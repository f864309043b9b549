//! `GET /api/v1/tenant`: the caller's tenant, answered for suspended tenants too.

use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use crate::tenancy::AllowSuspended;
use crate::tenancy::model::Tenant;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current_tenant))
}

/// The caller's tenant, with its status and limits. Answers for suspended tenants too, so a
/// seller can see why everything else is refused.
#[utoipa::path(get, path = "/api/v1/tenant", tag = "tenant",
    responses((status = 200, description = "The current tenant", body = Tenant)))]
pub async fn current_tenant(AllowSuspended(ctx): AllowSuspended) -> Json<Tenant> {
    Json(ctx.tenant.as_ref().clone())
}
