//! The tenant context: who is calling, for which tenant, in which role — and the only handle
//! to that tenant's data.

pub mod directory;
pub mod listener;
pub mod model;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{AppError, AppResult};
use crate::monitoring::activity::Recorder;
use crate::scope::RequestScope;
use crate::state::AppState;
use model::{Role, Tenant, TenantStatus};

pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant-id");

/// An authenticated, active member of an active tenant (SPEC §2). Handlers reach tenant data
/// only through [`TenantCtx::db`], whose transactions set `my.tenant_id`.
#[derive(Clone)]
pub struct TenantCtx {
    pub tenant: Arc<Tenant>,
    pub user_id: Uuid,
    pub role: Role,
    pub subject: String,
    db: TenantDb,
    activity: Recorder,
}

impl TenantCtx {
    pub fn tenant_id(&self) -> Uuid {
        self.tenant.id
    }

    pub fn db(&self) -> &TenantDb {
        &self.db
    }

    /// Writes a data change's activity in the change's transaction (SPEC §7).
    pub fn activity(&self) -> &Recorder {
        &self.activity
    }

    /// Owner or admin, else 403 `forbidden`.
    pub fn require_manager(&self) -> AppResult<()> {
        if self.role.can_manage() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "This action needs the owner or admin role.",
            ))
        }
    }
}

/// Like [`TenantCtx`], but also admits members of a suspended tenant, for the few endpoints
/// that must show a seller why they are suspended.
pub struct AllowSuspended(pub TenantCtx);

/// The checks of SPEC §2 in their order: token (401), header (400), tenant and membership
/// (403 `tenant_access_denied`, one answer for both), the rate limit (429 `rate_limited`),
/// suspension (403 `tenant_suspended`).
async fn resolve(
    parts: &mut Parts,
    state: &AppState,
    allow_suspended: bool,
) -> AppResult<TenantCtx> {
    let principal = match Principal::from_request_parts(parts, state).await {
        Ok(principal) => principal,
        Err(e) => {
            note_auth_failure(parts, state).await;
            return Err(e);
        }
    };
    let raw = parts
        .headers
        .get(&TENANT_HEADER)
        .ok_or(AppError::TenantHeaderMissing)?;
    let tenant_id = raw
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or(AppError::TenantHeaderInvalid)?;

    let tenant = state
        .directory
        .tenant(tenant_id, &principal.subject)
        .await?
        .ok_or(AppError::TenantAccessDenied)?;
    let membership = state
        .directory
        .membership(tenant_id, &principal.subject)
        .await?
        .ok_or(AppError::TenantAccessDenied)?;
    let scope = parts.extensions.get::<RequestScope>();
    if let Some(scope) = scope {
        scope.record_tenant(tenant_id);
        scope.record_member(membership.user_id);
    }
    // Only members count against a tenant's limits: strangers naming a tenant must not be
    // able to spend its requests.
    let now = state.clock.now().timestamp();
    if let Some(limiter) = &state.limiter {
        let decision = limiter.acquire(tenant_id, &tenant.limits, now).await;
        let refused = decision.refused;
        state.metrics.rate_limit_decision(refused.is_none());
        if let Some(scope) = scope {
            scope.add_headers(|headers| crate::limits::headers::apply(&decision, headers));
        }
        if let Some(window) = refused {
            return Err(AppError::RateLimited {
                window: window.window.name(),
                limit: window.limit,
                retry_after: window.reset_seconds.max(1),
            });
        }
    }
    state.usage.record(tenant_id, now);
    if tenant.status == TenantStatus::Suspended && !allow_suspended {
        return Err(AppError::TenantSuspended);
    }
    Ok(TenantCtx {
        db: state.db.for_tenant(tenant_id),
        activity: Recorder::member(
            scope.cloned(),
            tenant_id,
            membership.user_id,
            state.activity_sink.clone(),
        ),
        tenant,
        user_id: membership.user_id,
        role: membership.role,
        subject: principal.subject,
    })
}

/// A 401 whose `X-Tenant-ID` names an existing tenant goes into that tenant's activity log
/// (SPEC §7): the tenant is put in the request's scope for `observe`. The lookup has no token
/// subject to charge, so a miss spends the client address's budget: random ids cost the
/// database at most the directory's budget per address, and a real tenant gives it back.
async fn note_auth_failure(parts: &Parts, state: &AppState) {
    let Some(scope) = parts.extensions.get::<RequestScope>() else {
        return;
    };
    let Some(tenant_id) = parts
        .headers
        .get(&TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
    else {
        return;
    };
    let caller = format!("addr:{}", scope.facts().ip.as_deref().unwrap_or("unknown"));
    if let Ok(Some(_)) = state.directory.tenant(tenant_id, &caller).await {
        scope.record_tenant(tenant_id);
    }
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        resolve(parts, state, false).await
    }
}

impl FromRequestParts<AppState> for AllowSuspended {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        resolve(parts, state, true).await.map(Self)
    }
}
