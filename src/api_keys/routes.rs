//! `GET|POST /api/v1/api-keys`, `DELETE /api/v1/api-keys/{id}`: owners and admins, members
//! or keys of that role, at trust level 3.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{ApiKey, CreateApiKey, CreatedApiKey, CreatorType};
use super::store::{self, KeyError};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::state::AppState;
use crate::tenancy::model::Role;
use crate::trust::gate::{ApiKeys, Unlocked};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// The tenant's API keys, newest first (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = Page<ApiKey>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 403, description = "`feature_not_available` (below trust level 3), `forbidden` (a staff member or key)"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_keys(
    ctx: Unlocked<ApiKeys>,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<ApiKey>> {
    ctx.require_manager()?;
    let page = query.parse()?;
    let keys = store::list(ctx.db(), page).await?;
    Ok(Page::from_rows(keys, page, |k: &ApiKey| k.id))
}

/// Makes an API key with a role (not above the creator's, a member's or a key's) and an
/// optional expiry. The key is in this answer only; a tenant has at most 50.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created: `key` is shown this once", body = CreatedApiKey),
        (status = 403, description = "`feature_not_available` (below trust level 3), `forbidden` (a staff member or key, or a role above the creator's)"),
        (status = 409, description = "`api_key_limit`: the tenant has 50 keys"),
        (status = 422, description = "`validation_failed` (name, role, expires_at in the future)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_key(
    State(state): State<AppState>,
    ctx: Unlocked<ApiKeys>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> AppResult<(StatusCode, Json<CreatedApiKey>)> {
    ctx.require_manager()?;
    let now = state.clock.now();
    let new = body.validate(now)?;
    if new.role == Role::Owner && ctx.role != Role::Owner {
        return Err(AppError::Forbidden("Only an owner may make an owner key."));
    }
    // The actor: a member, or the key a request made with a key acts as (its id).
    let creator_type = match ctx.api_key {
        Some(_) => CreatorType::ApiKey,
        None => CreatorType::User,
    };
    let creator = (ctx.user_id, creator_type);
    let (api_key, key) = store::create(ctx.db(), ctx.activity(), creator, &new, now).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { api_key, key })))
}

/// Revokes a key: refused (401) on every instance within a second.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "`feature_not_available` (below trust level 3), `forbidden` (a staff member or key)"),
        (status = 404, description = "`not_found` (also another tenant's key)"),
    ))]
#[tracing::instrument(skip_all, fields(api_key_id = %id))]
pub async fn revoke_key(
    State(state): State<AppState>,
    ctx: Unlocked<ApiKeys>,
    IdPath(id): IdPath,
) -> AppResult<StatusCode> {
    ctx.require_manager()?;
    store::revoke(ctx.db(), ctx.activity(), &state.directory, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<KeyError> for AppError {
    #[track_caller]
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NotFound => Self::NotFound("API key"),
            KeyError::Limit => Self::Conflict {
                code: "api_key_limit",
                detail: "The tenant has 50 API keys; revoke one first.".into(),
            },
            KeyError::Db(e) => e.into(),
        }
    }
}
