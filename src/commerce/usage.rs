//! The tenant's usage and quotas (SPEC §5), also read by the admin module.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::TenantDb;
use crate::error::AppResult;
use crate::limits::quotas::{self, Quotas};
use crate::limits::usage::{self, History};
use crate::limits::{Decision, WindowState};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::model::Tenant;
use crate::trust::level::product_limit;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant_usage))
        .routes(routes!(tenant_quotas))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WindowUsage {
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
    pub reset_seconds: u64,
}

impl From<&WindowState> for WindowUsage {
    fn from(s: &WindowState) -> Self {
        Self {
            used: s.used,
            limit: s.limit,
            remaining: s.remaining(),
            reset_seconds: s.reset_seconds,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub minute: WindowUsage,
    pub hour: WindowUsage,
    pub day: WindowUsage,
    /// Recent buckets as written to the database (at most a few seconds behind).
    pub history: History,
}

/// A tenant's usage: the limiter's live windows and the flushed history.
pub async fn usage_of(state: &AppState, tenant: &Tenant, db: &TenantDb) -> AppResult<Usage> {
    let now = state.clock.now().timestamp();
    let live = match &state.limiter {
        Some(limiter) => limiter.peek(tenant.id, &tenant.limits, now).await,
        None => Decision::from_counts(&tenant.limits, now, [0; 3], true),
    };
    let [minute, hour, day] = &live.windows;
    Ok(Usage {
        minute: minute.into(),
        hour: hour.into(),
        day: day.into(),
        history: usage::history(db, now).await?,
    })
}

/// The tenant's live request counters for every window, and its recent history.
#[utoipa::path(get, path = "/api/v1/tenant/usage", tag = "limits",
    responses((status = 200, description = "Usage", body = Usage)))]
pub async fn tenant_usage(State(state): State<AppState>, ctx: TenantCtx) -> AppResult<Json<Usage>> {
    Ok(Json(usage_of(&state, &ctx.tenant, ctx.db()).await?))
}

/// The tenant's quotas: products, users and storage bytes, each used and limit (for
/// products the effective limit: the quota, or the trust level's cap when lower).
#[utoipa::path(get, path = "/api/v1/tenant/quotas", tag = "limits",
    responses((status = 200, description = "Quotas", body = Quotas)))]
pub async fn tenant_quotas(ctx: TenantCtx) -> AppResult<Json<Quotas>> {
    Ok(Json(quotas_of(&ctx.tenant, ctx.db()).await?))
}

/// A tenant's quotas with its effective product limit (also read by the admin module).
pub async fn quotas_of(tenant: &Tenant, db: &TenantDb) -> AppResult<Quotas> {
    let products = product_limit(tenant.trust_level, tenant.limits.max_products);
    Ok(quotas::current(db, &tenant.limits, products).await?)
}
