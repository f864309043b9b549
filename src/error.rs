//! One error type for the HTTP layer, rendered as RFC 9457 `application/problem+json`.
//!
//! Internal causes are logged with the request's span and never sent to the client.

use std::panic::Location;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// `Retry-After` of a 503: the database is usually back within seconds.
const UNAVAILABLE_RETRY_AFTER: u64 = 2;

/// One field that failed validation.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the request, e.g. `owner.email`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:convcommerce:problem:tenant_access_denied",
    "title": "Forbidden",
    "status": 403,
    "detail": "You have no access to this tenant.",
    "code": "tenant_access_denied"
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case code, e.g. `tenant_header_missing`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// Extension members of some problems, e.g. `quota`, `used` and `limit`.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthorized,
    #[error("X-Tenant-ID header missing")]
    TenantHeaderMissing,
    #[error("X-Tenant-ID header is not a UUID")]
    TenantHeaderInvalid,
    #[error("tenant access denied")]
    TenantAccessDenied,
    #[error("tenant suspended")]
    TenantSuspended,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A request field names a resource that does not exist (in this tenant).
    #[error("{field} refers to a missing {what}")]
    MissingReference { field: String, what: &'static str },
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("bad request: {code}")]
    BadRequest { code: &'static str, detail: String },
    #[error("rate limited")]
    RateLimited {
        window: &'static str,
        limit: u64,
        retry_after: u64,
    },
    /// The caller's lookups of unknown tenants or memberships are spent for this minute.
    #[error("lookup budget spent")]
    LookupBudget { retry_after: u64 },
    /// A create would pass a quota; `reason` says what set the limit: `quota`, or
    /// `trust_level` when the trust level's product cap is the lower bound (SPEC §6).
    #[error("quota exceeded: {quota}")]
    QuotaExceeded {
        quota: String,
        used: i64,
        limit: i64,
        reason: String,
    },
    /// A trust-gated feature below its level (SPEC §6).
    #[error("feature {feature} needs trust level {required_level}")]
    FeatureNotAvailable {
        feature: &'static str,
        required_level: i16,
    },
    /// A well-formed request the server cannot act on (422 with its own `code`, such as a
    /// wrong verification code).
    #[error("unprocessable: {code}")]
    Unprocessable { code: &'static str, detail: String },
    /// Too many attempts at one action (a code resend), apart from the tenant's rate limit.
    #[error("throttled")]
    Throttled { detail: String, retry_after: u64 },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("service unavailable")]
    Unavailable(&'static str),
    /// The database stopped answering during a COMMIT and did not come back in time to tell
    /// whether it took: the resource `id` may exist (503, with the id to look it up).
    #[error("outcome unknown: {resource} {id}")]
    OutcomeUnknown {
        resource: &'static str,
        id: uuid::Uuid,
    },
    /// A fault of ours, with where it was turned into an error (the `?` that converted it).
    #[error("{cause:#} (at {at})")]
    Internal {
        cause: anyhow::Error,
        at: &'static Location<'static>,
    },
}

impl From<anyhow::Error> for AppError {
    #[track_caller]
    fn from(cause: anyhow::Error) -> Self {
        Self::Internal {
            cause,
            at: Location::caller(),
        }
    }
}

impl AppError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn invalid_cursor() -> Self {
        Self::BadRequest {
            code: "invalid_cursor",
            detail: "The cursor is not one this API issued.".into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TenantHeaderMissing | Self::TenantHeaderInvalid | Self::BadRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::TenantAccessDenied
            | Self::TenantSuspended
            | Self::Forbidden(_)
            | Self::FeatureNotAvailable { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::LookupBudget { .. } | Self::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::MissingReference { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Validation(_) | Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::OutcomeUnknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::TenantHeaderMissing => "tenant_header_missing",
            Self::TenantHeaderInvalid => "tenant_header_invalid",
            Self::TenantAccessDenied => "tenant_access_denied",
            Self::TenantSuspended => "tenant_suspended",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } | Self::LookupBudget { .. } | Self::Throttled { .. } => {
                "rate_limited"
            }
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::FeatureNotAvailable { .. } => "feature_not_available",
            Self::NotFound(_) | Self::MissingReference { .. } => "not_found",
            Self::Conflict { code, .. }
            | Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::Validation(_) => "validation_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable(_) | Self::OutcomeUnknown { .. } => "service_unavailable",
            Self::Internal { .. } => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Unauthorized => "A valid bearer token is required.".into(),
            Self::TenantHeaderMissing => "The X-Tenant-ID header is required.".into(),
            Self::TenantHeaderInvalid => "The X-Tenant-ID header must be a UUID.".into(),
            Self::TenantAccessDenied => "You have no access to this tenant.".into(),
            Self::TenantSuspended => {
                "This tenant is suspended; GET /api/v1/tenant shows its status.".into()
            }
            Self::Forbidden(why) => (*why).into(),
            Self::NotFound(what) => format!("The {what} does not exist."),
            Self::RateLimited {
                window,
                limit,
                retry_after,
            } => format!(
                "The tenant's limit of {limit} requests per {window} is reached; retry in {retry_after} s."
            ),
            Self::LookupBudget { retry_after } => format!(
                "Too many lookups of tenants or memberships that are not cached; retry in \
                 {retry_after} s."
            ),
            Self::QuotaExceeded {
                quota,
                used,
                limit,
                reason,
            } => match reason.as_str() {
                "trust_level" => format!(
                    "The trust level's {quota} cap is reached ({used} of {limit}); GET /api/v1/trust \
                     says what the next level needs."
                ),
                _ => format!("The {quota} quota is used up ({used} of {limit})."),
            },
            Self::FeatureNotAvailable {
                feature,
                required_level,
            } => format!(
                "{feature} needs trust level {required_level}; GET /api/v1/trust says what the \
                 next level needs."
            ),
            Self::Throttled { detail, .. } => detail.clone(),
            Self::MissingReference { field, what } => {
                format!("{field}: the {what} does not exist.")
            }
            Self::Conflict { detail, .. }
            | Self::BadRequest { detail, .. }
            | Self::Unprocessable { detail, .. } => detail.clone(),
            Self::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid.", errors.len()),
            },
            Self::PayloadTooLarge => "The request body is too large.".into(),
            Self::UnsupportedMediaType(detail) => detail.clone(),
            Self::Unavailable(what) => format!("{what} is unavailable; retry shortly."),
            Self::OutcomeUnknown { resource, id } => format!(
                "The database stopped answering while the {resource} was saved, so it may or \
                 may not exist: look it up by its id ({id}) before retrying."
            ),
            Self::Internal { .. } => "An internal error occurred.".into(),
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: problem_type(self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_string(),
            errors: match self {
                Self::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
            extensions: match self {
                Self::QuotaExceeded {
                    quota,
                    used,
                    limit,
                    reason,
                } => serde_json::Map::from_iter([
                    ("quota".to_string(), quota.clone().into()),
                    ("used".to_string(), (*used).into()),
                    ("limit".to_string(), (*limit).into()),
                    ("reason".to_string(), reason.clone().into()),
                ]),
                Self::FeatureNotAvailable {
                    feature,
                    required_level,
                } => serde_json::Map::from_iter([
                    ("feature".to_string(), (*feature).into()),
                    ("required_level".to_string(), (*required_level).into()),
                ]),
                Self::RateLimited { window, .. } => {
                    serde_json::Map::from_iter([("window".to_string(), (*window).into())])
                }
                Self::OutcomeUnknown { id, .. } => serde_json::Map::from_iter([
                    ("outcome".to_string(), "unknown".into()),
                    ("resource_id".to_string(), id.to_string().into()),
                ]),
                _ => serde_json::Map::new(),
            },
        }
    }
}

pub fn problem_type(code: &str) -> String {
    format!("urn:convcommerce:problem:{code}")
}

/// Renders a problem document with the right content type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).expect("a problem always serialises");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal { cause, at } => {
                tracing::error!(error = %format!("{cause:#}"), at = %at, "request failed")
            }
            Self::Unavailable(what) => tracing::warn!(dependency = what, "dependency unavailable"),
            _ => {}
        }
        let mut response = problem_response(&self.to_problem());
        match &self {
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited { retry_after, .. }
            | Self::LookupBudget { retry_after }
            | Self::Throttled { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Unavailable(_) | Self::OutcomeUnknown { .. } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for AppError {
    #[track_caller]
    fn from(err: DbError) -> Self {
        let at = Location::caller();
        match err {
            DbError::Unavailable(cause) => {
                tracing::warn!(error = %cause, at = %at, "database unavailable");
                Self::Unavailable("The database")
            }
            DbError::Query(cause) => match quota_violation(&cause) {
                Some(quota) => quota,
                None => Self::Internal {
                    cause: cause.into(),
                    at,
                },
            },
            DbError::Decode(what) => Self::Internal {
                cause: anyhow::anyhow!("decoding a column: {what}"),
                at,
            },
        }
    }
}

/// The database's quota triggers raise a check violation on a `quota_*` constraint whose
/// detail is `{"quota", "used", "limit", "reason"}` (migrations/0003_limits.sql, 0010_trust.sql).
fn quota_violation(err: &tokio_postgres::Error) -> Option<AppError> {
    let db = err.as_db_error()?;
    if db.code() != &tokio_postgres::error::SqlState::CHECK_VIOLATION
        || !db.constraint().is_some_and(|c| c.starts_with("quota_"))
    {
        return None;
    }
    let detail: serde_json::Value = serde_json::from_str(db.detail()?).ok()?;
    Some(AppError::QuotaExceeded {
        quota: detail["quota"].as_str()?.to_string(),
        used: detail["used"].as_i64()?,
        limit: detail["limit"].as_i64()?,
        reason: detail["reason"].as_str().unwrap_or("quota").to_string(),
    })
}

pub type AppResult<T> = Result<T, AppError>;

/// For an optional field parsed only when sent: `Some(None)` when it was not sent,
/// `Some(Some(v))` when it parsed, `None` when it failed (its error is recorded).
pub fn sent<T>(parsed: Option<Option<T>>) -> Option<Option<T>> {
    match parsed {
        None => Some(None),
        Some(value) => value.map(Some),
    }
}

/// Collects field errors while a request is parsed, so that one 422 names every bad field.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// The parsed value, or `None` with the error recorded against `field`.
    pub fn check<T, E: Into<String>>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        result
            .map_err(|message| self.errors.push(FieldError::new(field, message)))
            .ok()
    }

    /// Records an error that is not the result of a parse.
    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// 422 with every recorded error, else what `build` makes from the parsed values (which
    /// are all present when nothing was recorded).
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> AppResult<T> {
        if !self.errors.is_empty() {
            return Err(AppError::Validation(self.errors));
        }
        build().ok_or_else(|| anyhow::anyhow!("a parsed field went missing").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_problem_lists_fields() {
        let problem = AppError::Validation(vec![
            FieldError::new("name", "too long"),
            FieldError::new("slug", "invalid"),
        ])
        .to_problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "validation_failed");
        assert_eq!(problem.errors.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn quota_details_read_as_one_sentence() {
        for reason in ["trust_level", "quota"] {
            let detail = AppError::QuotaExceeded {
                quota: "products".into(),
                used: 5,
                limit: 5,
                reason: reason.into(),
            }
            .to_problem()
            .detail;
            assert!(!detail.contains("  "), "{reason}: {detail:?}");
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let problem = AppError::from(anyhow::anyhow!("relation users does not exist")).to_problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("relation"));
    }
}
