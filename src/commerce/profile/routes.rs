//! `GET|PUT /api/v1/seller-profile`.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{PutSellerProfile, SellerProfile};
use super::store;
use crate::error::{AppError, AppResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::tenancy::TenantCtx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_profile, put_profile))
}

/// The seller profile (any member). 404 until an owner or admin first saves one.
#[utoipa::path(get, path = "/api/v1/seller-profile", tag = "seller-profile",
    responses(
        (status = 200, description = "The seller profile", body = SellerProfile),
        (status = 404, description = "`not_found`: no profile saved yet"),
    ))]
pub async fn get_profile(ctx: TenantCtx) -> AppResult<Json<SellerProfile>> {
    store::get(ctx.db())
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("seller profile"))
}

/// Creates or replaces the seller profile (owner or admin). Business information and store
/// setup are verified from it (SPEC §6), so the tenant's trust level is recomputed.
#[utoipa::path(put, path = "/api/v1/seller-profile", tag = "seller-profile",
    request_body = PutSellerProfile,
    responses(
        (status = 200, description = "The saved profile", body = SellerProfile),
        (status = 422, description = "`validation_failed` (E.164 phone, e-mail, URLs, slug, address)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn put_profile(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<PutSellerProfile>,
) -> AppResult<Json<SellerProfile>> {
    ctx.require_manager()?;
    let input = body.validate()?;
    let saved = store::put(ctx.db(), ctx.activity(), &input).await?;
    state.trust.verifications_changed(ctx.tenant_id()).await;
    Ok(Json(saved))
}
