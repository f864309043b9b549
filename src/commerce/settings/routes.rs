//! `GET|PUT /api/v1/tenant/settings`.

use axum::Json;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{PutTenantSettings, TenantSettings};
use super::store::{self, SettingsError};
use crate::error::{AppError, AppResult};
use crate::extract::{self, ApiJson};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::trust::level::Feature;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_tenant_settings, put_tenant_settings))
}

/// The tenant's settings (any member); the defaults until saved.
#[utoipa::path(get, path = "/api/v1/tenant/settings", tag = "tenant",
    responses((status = 200, description = "The settings", body = TenantSettings)))]
pub async fn get_tenant_settings(ctx: TenantCtx) -> AppResult<Json<TenantSettings>> {
    Ok(Json(store::get(ctx.db()).await?))
}

/// Replaces the tenant's settings (owner or admin): a field left out takes its default.
/// Turning `auto_confirm_orders` on needs trust level 1.
#[utoipa::path(put, path = "/api/v1/tenant/settings", tag = "tenant",
    request_body = PutTenantSettings,
    responses(
        (status = 200, description = "The saved settings", body = TenantSettings),
        (status = 403, description = "`forbidden` (staff), `feature_not_available` (`auto_confirm_orders: true` below level 1, with `feature` and `required_level`, whatever the rest of the body)"),
        (status = 422, description = "`validation_failed` (timezone)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn put_tenant_settings(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Json<TenantSettings>> {
    ctx.require_manager()?;
    // The gate depends on what is asked, so it reads that one field of the JSON document,
    // before the body is validated as settings (SPEC §6).
    if body.get("auto_confirm_orders") == Some(&Value::Bool(true)) {
        Feature::AutoConfirmOrders.check(ctx.tenant.trust_level)?;
    }
    let body: PutTenantSettings = extract::from_value(body)?;
    let input = body.validate()?;
    Ok(Json(store::put(ctx.db(), ctx.activity(), &input).await?))
}

impl From<SettingsError> for AppError {
    #[track_caller]
    fn from(err: SettingsError) -> Self {
        match err {
            SettingsError::UnknownZone => {
                Self::validation("timezone", "is not known to the database's time zones")
            }
            SettingsError::Db(e) => e.into(),
        }
    }
}
