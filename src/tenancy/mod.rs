//! The tenant context: who is calling, for which tenant, in which role — and the only handle
//! to that tenant's data.

pub mod directory;
pub mod listener;
pub mod model;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::auth::{Principal, api_key};
use crate::db::TenantDb;
use crate::error::{AppError, AppResult};
use crate::monitoring::activity::Recorder;
use crate::monitoring::activity::model::ActorType;
use crate::scope::RequestScope;
use crate::state::AppState;
use crate::trust::level::Feature;
use model::{Role, Tenant, TenantStatus};

pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant-id");

/// An authenticated, active member (or API key) of an active tenant (SPEC §2). Handlers
/// reach tenant data only through [`TenantCtx::db`], whose transactions set `my.tenant_id`.
#[derive(Clone)]
pub struct TenantCtx {
    pub tenant: Arc<Tenant>,
    /// The member's id; for a request made with an API key, the key's id.
    pub user_id: Uuid,
    pub role: Role,
    /// The token's subject; `api_key:<id>` for an API key.
    pub subject: String,
    /// Set when the request authenticated with an API key (its id).
    pub api_key: Option<Uuid>,
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

/// Who a tenant-scoped request acts as, once authenticated for the tenant.
struct Caller {
    tenant: Arc<Tenant>,
    actor: Uuid,
    role: Role,
    subject: String,
    api_key: Option<Uuid>,
}

/// The checks of SPEC §2 in their order: token (401), header (400), tenant and membership
/// (403 `tenant_access_denied`, one answer for both), the rate limit (429 `rate_limited`),
/// suspension (403 `tenant_suspended`). An API key (`Bearer cck_...`) names its tenant, so
/// its header is optional, and needs trust level 3 (403 `feature_not_available`).
async fn resolve(
    parts: &mut Parts,
    state: &AppState,
    allow_suspended: bool,
) -> AppResult<TenantCtx> {
    let key = bearer(parts)
        .filter(|t| api_key::looks_like_key(t))
        .map(str::to_string);
    let caller = match key {
        Some(key) => match key_caller(parts, state, &key).await {
            Err(AppError::Unauthorized) => {
                note_auth_failure(parts, state, api_key::tenant_of(&key)).await;
                return Err(AppError::Unauthorized);
            }
            other => other?,
        },
        None => member_caller(parts, state).await?,
    };
    let tenant_id = caller.tenant.id;
    let scope = parts.extensions.get::<RequestScope>();
    if let Some(scope) = scope {
        scope.record_tenant(tenant_id);
        match caller.api_key {
            Some(key) => scope.record_api_key(key),
            None => scope.record_member(caller.actor),
        }
    }
    // Only members and keys count against a tenant's limits: strangers naming a tenant must
    // not be able to spend its requests.
    let now = state.clock.now().timestamp();
    if let Some(limiter) = &state.limiter {
        let decision = limiter.acquire(tenant_id, &caller.tenant.limits, now).await;
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
    if caller.tenant.status == TenantStatus::Suspended && !allow_suspended {
        return Err(AppError::TenantSuspended);
    }
    if caller.api_key.is_some() {
        Feature::ApiKeys.check(caller.tenant.trust_level)?;
    }
    let actor_type = match caller.api_key {
        Some(_) => ActorType::ApiKey,
        None => ActorType::User,
    };
    Ok(TenantCtx {
        db: state.db.for_tenant(tenant_id),
        activity: Recorder::actor(
            scope.cloned(),
            tenant_id,
            caller.actor,
            actor_type,
            state.activity_sink.clone(),
        ),
        tenant: caller.tenant,
        user_id: caller.actor,
        role: caller.role,
        subject: caller.subject,
        api_key: caller.api_key,
    })
}

/// The bearer token of the request, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// `X-Tenant-ID` as a UUID: `None` when absent, 400 when not a UUID.
fn tenant_header(parts: &Parts) -> AppResult<Option<Uuid>> {
    let Some(raw) = parts.headers.get(&TENANT_HEADER) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .map(Some)
        .ok_or(AppError::TenantHeaderInvalid)
}

/// A member with a JWT: token, header, tenant, membership.
async fn member_caller(parts: &mut Parts, state: &AppState) -> AppResult<Caller> {
    let principal = match Principal::from_request_parts(parts, state).await {
        Ok(principal) => principal,
        Err(e) => {
            note_auth_failure(parts, state, None).await;
            return Err(e);
        }
    };
    let tenant_id = tenant_header(parts)?.ok_or(AppError::TenantHeaderMissing)?;
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
    Ok(Caller {
        tenant,
        actor: membership.user_id,
        role: membership.role,
        subject: principal.subject,
        api_key: None,
    })
}

/// An API key: the tenant it names, the key by its hash (unknown, revoked or expired: 401),
/// then `X-Tenant-ID` if sent (another tenant's: 403). Lookups that miss spend the client
/// address's budget.
async fn key_caller(parts: &Parts, state: &AppState, key: &str) -> AppResult<Caller> {
    let tenant_id = api_key::tenant_of(key).ok_or(AppError::Unauthorized)?;
    let caller = address_caller(parts);
    let tenant = state
        .directory
        .tenant(tenant_id, &caller)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let record = state
        .directory
        .api_key(tenant_id, api_key::hash(key), &caller)
        .await?
        .filter(|k| k.expires_at.is_none_or(|at| at > state.clock.now()))
        .ok_or_else(|| {
            state.metrics.auth_failure("api_key");
            AppError::Unauthorized
        })?;
    // Authenticated; now the header, which a key makes optional.
    if let Some(named) = tenant_header(parts)?
        && named != tenant_id
    {
        return Err(AppError::TenantAccessDenied);
    }
    let subject = format!("api_key:{}", record.id);
    if let Some(scope) = parts.extensions.get::<RequestScope>() {
        scope.record_actor(&subject);
    }
    Ok(Caller {
        tenant,
        actor: record.id,
        role: record.role,
        subject,
        api_key: Some(record.id),
    })
}

/// The lookup-budget caller of a request with no verified subject: its client address.
fn address_caller(parts: &Parts) -> String {
    let ip = parts
        .extensions
        .get::<RequestScope>()
        .and_then(|s| s.facts().ip.clone());
    format!("addr:{}", ip.as_deref().unwrap_or("unknown"))
}

/// A 401 whose `X-Tenant-ID` (or API key) names an existing tenant goes into that tenant's
/// activity log (SPEC §7): the tenant is put in the request's scope for `observe`. The lookup
/// has no token subject to charge, so a miss spends the client address's budget: random ids
/// cost the database at most the directory's budget per address, and a real tenant gives it
/// back.
async fn note_auth_failure(parts: &Parts, state: &AppState, named: Option<Uuid>) {
    let Some(scope) = parts.extensions.get::<RequestScope>() else {
        return;
    };
    let Some(tenant_id) = named.or_else(|| tenant_header(parts).ok().flatten()) else {
        return;
    };
    if let Ok(Some(_)) = state
        .directory
        .tenant(tenant_id, &address_caller(parts))
        .await
    {
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
