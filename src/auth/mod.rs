//! Who is calling: the bearer token's subject, and whether it is a platform admin.

pub mod api_key;
pub mod jwt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::AppError;
use crate::scope::RequestScope;
use crate::state::AppState;

/// An authenticated caller. Extracting it answers 401 `unauthorized` when the request has no
/// valid bearer token; that check comes before every other.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub is_platform_admin: bool,
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AppError::Unauthorized)?;
        // API keys act only for their tenant (`TenantCtx`), never as a subject, so never on
        // `/api/v1/admin/*`.
        if api_key::looks_like_key(token) {
            state.metrics.auth_failure("api_key_not_accepted");
            return Err(AppError::Unauthorized);
        }
        let subject = state.verifier.verify(token).await.map_err(|e| {
            tracing::info!(reason = %e, "rejected bearer token");
            state.metrics.auth_failure(e.kind());
            AppError::Unauthorized
        })?;
        let principal = Principal {
            is_platform_admin: state.config.platform_admin_subjects.contains(&subject),
            subject,
        };
        if let Some(trace) = parts.extensions.get::<RequestScope>() {
            trace.record_actor(&principal.subject);
        }
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A platform admin (a subject in `PLATFORM_ADMIN_SUBJECTS`); anyone else gets 403.
#[derive(Debug, Clone)]
pub struct PlatformAdmin(pub Principal);

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.is_platform_admin {
            return Err(AppError::Forbidden("This endpoint is for platform admins."));
        }
        Ok(Self(principal))
    }
}
