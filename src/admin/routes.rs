//! The platform-admin endpoints: tenants, and a chosen tenant's usage and quotas (audited).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use serde_json::json;

use super::audit;
use super::model::{CreateTenant, UpdateTenant};
use super::store::{self, TenantError};
use crate::auth::PlatformAdmin;
use crate::commerce::usage::{Usage, quotas_of, usage_of};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::limits::quotas::Quotas;
use crate::state::AppState;
use crate::tenancy::directory::Invalidation;
use crate::tenancy::model::Tenant;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(admin_usage))
        .routes(routes!(admin_quotas))
}

/// Creates a tenant and its owner user.
#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 409, description = "`slug_taken`"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_tenant(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    ApiJson(body): ApiJson<CreateTenant>,
) -> AppResult<(StatusCode, Json<Tenant>)> {
    let new = body.validate()?;
    let tenant = store::create(&state.db, &new).await?;
    // The new owner may have been cached as "not a member" a moment ago.
    state
        .directory
        .invalidate(&Invalidation::member(
            tenant.id,
            new.owner_external_id.clone(),
        ))
        .await;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(tenant.id),
        "tenant.created",
        json!({"slug": tenant.slug}),
    );
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// Lists tenants, newest first.
#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tenants", body = Page<Tenant>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_tenants(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<Tenant>> {
    let page = query.parse()?;
    audit::record(
        &state.metrics,
        &admin.subject,
        None,
        "tenants.listed",
        json!({}),
    );
    let rows = store::list(&state.db, page).await?;
    Ok(Page::from_rows(rows, page, |t: &Tenant| t.id))
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn get_tenant(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    IdPath(id): IdPath,
) -> AppResult<Json<Tenant>> {
    let tenant = store::get(&state.db, id).await?;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(id),
        "tenant.read",
        json!({}),
    );
    Ok(Json(tenant))
}

/// Suspends or reactivates a tenant and changes its limits (`null` restores a default). A
/// reactivation sticks: an automatic suspension then needs risk evidence newer than it.
#[utoipa::path(patch, path = "/api/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, description = "The updated tenant", body = Tenant),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %id))]
pub async fn update_tenant(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> AppResult<Json<Tenant>> {
    let limits = body.limits.unwrap_or_default().validate()?;
    let tenant = store::update(&state.db, id, body.status, &limits, state.clock.now()).await?;
    state.directory.invalidate(&Invalidation::tenant(id)).await;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(id),
        "tenant.updated",
        json!({"status": tenant.status.as_str(), "limits_set": limits.set, "limits_reset": limits.reset}),
    );
    Ok(Json(tenant))
}

async fn tenant_record(
    state: &AppState,
    admin: &PlatformAdmin,
    id: Uuid,
) -> AppResult<std::sync::Arc<Tenant>> {
    state
        .directory
        .tenant(id, &admin.0.subject)
        .await?
        .ok_or(AppError::NotFound("tenant"))
}

/// Any tenant's usage (platform admins).
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/usage", tag = "admin",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "Usage", body = Usage),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn admin_usage(
    State(state): State<AppState>,
    admin: PlatformAdmin,
    IdPath(id): IdPath,
) -> AppResult<Json<Usage>> {
    let tenant = tenant_record(&state, &admin, id).await?;
    let usage = usage_of(&state, &tenant, &state.db.for_tenant(id)).await?;
    audit::record(
        &state.metrics,
        &admin.0.subject,
        Some(id),
        "tenant.usage_read",
        json!({}),
    );
    Ok(Json(usage))
}

/// Any tenant's quotas (platform admins).
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/quotas", tag = "admin",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "Quotas", body = Quotas),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn admin_quotas(
    State(state): State<AppState>,
    admin: PlatformAdmin,
    IdPath(id): IdPath,
) -> AppResult<Json<Quotas>> {
    let tenant = tenant_record(&state, &admin, id).await?;
    let quotas = quotas_of(&tenant, &state.db.for_tenant(id)).await?;
    audit::record(
        &state.metrics,
        &admin.0.subject,
        Some(id),
        "tenant.quotas_read",
        json!({}),
    );
    Ok(Json(quotas))
}

impl From<TenantError> for AppError {
    #[track_caller]
    fn from(err: TenantError) -> Self {
        match err {
            TenantError::NotFound => Self::NotFound("tenant"),
            TenantError::SlugTaken => Self::Conflict {
                code: "slug_taken",
                detail: "The slug is taken.".into(),
            },
            TenantError::Db(e) => e.into(),
        }
    }
}
