//! Member endpoints: list, add, get, change, remove (owners and admins manage).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{CreateUser, UpdateUser, User};
use super::store::{self, Actor, UserError};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::tenancy::directory::Invalidation;
use crate::tenancy::model::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
}

/// The member or API key making the request.
fn actor(ctx: &TenantCtx) -> Actor {
    ctx.api_key.map_or(Actor::Member(ctx.user_id), Actor::Key)
}

async fn forget(state: &AppState, ctx: &TenantCtx, subject: String) {
    state
        .directory
        .invalidate(&Invalidation::member(ctx.tenant_id(), subject))
        .await;
}

/// Lists the tenant's users, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = Page<User>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_users(ctx: TenantCtx, Query(query): Query<PageQuery>) -> AppResult<Page<User>> {
    let page = query.parse()?;
    let users = store::list(ctx.db(), page).await?;
    Ok(Page::from_rows(users, page, |u: &User| u.id))
}

/// Adds a user to the tenant (owner or admin; only an owner adds an owner).
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 409, description = "`user_exists` or `email_taken`"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_user(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<CreateUser>,
) -> AppResult<(StatusCode, Json<User>)> {
    ctx.require_manager()?;
    let new = body.validate()?;
    if new.role == Role::Owner && ctx.role != Role::Owner {
        return Err(AppError::Forbidden("Only an owner can add an owner."));
    }
    let user = store::create(ctx.db(), ctx.activity(), &new).await?;
    forget(&state, &ctx, user.external_id.clone()).await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user of the tenant.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "`not_found` (also for another tenant's user)"),
    ))]
pub async fn get_user(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<User>> {
    Ok(Json(store::get(ctx.db(), id).await?))
}

/// Changes a user's email, role or active flag (owner or admin; owners only by an owner).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (last owner) or `email_taken`"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all, fields(user_id = %id))]
pub async fn update_user(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UpdateUser>,
) -> AppResult<Json<User>> {
    ctx.require_manager()?;
    let change = body.validate()?;
    let user = store::update(ctx.db(), ctx.activity(), actor(&ctx), id, &change).await?;
    forget(&state, &ctx, user.external_id.clone()).await;
    Ok(Json(user))
}

/// Removes a user from the tenant (owner or admin; owners only by an owner).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (last owner)"),
    ))]
#[tracing::instrument(skip_all, fields(user_id = %id))]
pub async fn delete_user(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<StatusCode> {
    ctx.require_manager()?;
    let subject = store::delete(ctx.db(), ctx.activity(), actor(&ctx), id).await?;
    forget(&state, &ctx, subject).await;
    Ok(StatusCode::NO_CONTENT)
}

impl From<UserError> for AppError {
    #[track_caller]
    fn from(err: UserError) -> Self {
        match err {
            UserError::NotFound => Self::NotFound("user"),
            UserError::ExternalIdTaken => Self::Conflict {
                code: "user_exists",
                detail: "A user with this external_id already exists in the tenant.".into(),
            },
            UserError::EmailTaken => Self::Conflict {
                code: "email_taken",
                detail: "A user with this email already exists in the tenant.".into(),
            },
            UserError::ActorNotManager => {
                Self::Forbidden("This action needs the owner or admin role.")
            }
            UserError::OwnerOnly => Self::Forbidden("Only an owner can change or remove an owner."),
            UserError::LastOwner => Self::Conflict {
                code: "invalid_state",
                detail: "The tenant's last active owner cannot be removed, demoted or deactivated."
                    .into(),
            },
            UserError::Db(e) => e.into(),
        }
    }
}
