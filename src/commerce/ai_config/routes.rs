//! `GET|PUT /api/v1/ai-config`.

use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{AiConfig, PutAiConfig};
use super::store;
use crate::error::AppResult;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::tenancy::TenantCtx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_ai_config, put_ai_config))
}

/// The bot's configuration (any member); the defaults until one is saved.
#[utoipa::path(get, path = "/api/v1/ai-config", tag = "ai-config",
    responses((status = 200, description = "The AI configuration", body = AiConfig)))]
pub async fn get_ai_config(ctx: TenantCtx) -> AppResult<Json<AiConfig>> {
    Ok(Json(store::get(ctx.db()).await?))
}

/// Creates or replaces the bot's configuration (owner or admin).
#[utoipa::path(put, path = "/api/v1/ai-config", tag = "ai-config",
    request_body = PutAiConfig,
    responses(
        (status = 200, description = "The saved configuration", body = AiConfig),
        (status = 422, description = "`validation_failed` (time zone, HH:MM times, language tags, lengths)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn put_ai_config(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<PutAiConfig>,
) -> AppResult<Json<AiConfig>> {
    ctx.require_manager()?;
    let input = body.validate()?;
    Ok(Json(store::put(ctx.db(), ctx.activity(), &input).await?))
}
