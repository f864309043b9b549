//! The seller's trust endpoints: the trust document, the verifications, one-time codes for
//! email and phone, business documents.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{
    CodeSent, ConfirmCode, SendEmailCode, SendPhoneCode, SubmitDocument, TrustDocument,
    Verification, VerificationKind, VerificationStatus,
};
use super::store::{self, TrustError};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, Page};
use crate::monitoring::activity::Change;
use crate::monitoring::activity::model::Category;
use crate::monitoring::rules::model::NotifyChannel;
use crate::notify;
use crate::state::AppState;
use crate::tenancy::{AllowSuspended, TenantCtx};
use crate::types::{Email, Phone};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_trust))
        .routes(routes!(list_verifications))
        .routes(routes!(send_email_code))
        .routes(routes!(send_phone_code))
        .routes(routes!(confirm_email))
        .routes(routes!(confirm_phone))
        .routes(routes!(submit_document))
}

/// Where the tenant stands: level, score and each factor, verifications, features, and what
/// the next level needs (any member; answered for suspended tenants too).
#[utoipa::path(get, path = "/api/v1/trust", tag = "trust",
    responses((status = 200, description = "The trust document", body = TrustDocument)))]
pub async fn get_trust(
    State(state): State<AppState>,
    AllowSuspended(ctx): AllowSuspended,
) -> AppResult<Json<TrustDocument>> {
    Ok(Json(state.trust.explain(ctx.tenant_id()).await?))
}

/// Every kind of verification, in a fixed order (any member).
#[utoipa::path(get, path = "/api/v1/trust/verifications", tag = "trust",
    responses((status = 200, description = "One entry per kind", body = Page<Verification>)))]
pub async fn list_verifications(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> AppResult<Page<Verification>> {
    let items = state.trust.verifications(ctx.tenant_id()).await?;
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// Six random digits.
fn six_digits() -> String {
    // The largest multiple of a million below 2^32: rejecting above it keeps every code
    // equally likely.
    const BOUND: u32 = 4_294_000_000;
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        let n = u32::from_le_bytes(bytes);
        if n < BOUND {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// Stores a code for `kind` to `address` and sends it.
async fn send_code(
    state: &AppState,
    ctx: &TenantCtx,
    kind: VerificationKind,
    address: &str,
) -> AppResult<Json<CodeSent>> {
    ctx.require_manager()?;
    let code = six_digits();
    let locale = notify::store::preferences(ctx.db(), ctx.user_id)
        .await?
        .locale;
    let channel = match kind {
        VerificationKind::Phone => NotifyChannel::Sms,
        _ => NotifyChannel::Email,
    };
    let tx = ctx.db().begin().await?;
    let (verification, expires_at) =
        store::new_code(&tx, kind, address, &code, state.clock.now()).await?;
    let sent = state
        .notifier
        .enqueue_code(&tx, channel, address, &code, &locale)
        .await?;
    ctx.activity()
        .commit(
            tx,
            Change::new("verification.code_sent", "verification", verification)
                .category(Category::Trust)
                .details(json!({"kind": kind})),
        )
        .await?;
    state.notifier.published(sent);
    Ok(Json(CodeSent {
        kind,
        status: VerificationStatus::Pending,
        expires_at,
    }))
}

/// Sends a six-digit code to an e-mail address (owner or admin); it expires in 10 minutes.
#[utoipa::path(post, path = "/api/v1/trust/verifications/email/send", tag = "trust",
    request_body = SendEmailCode,
    responses(
        (status = 200, description = "Sent; the verification is pending", body = CodeSent),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (email)"),
        (status = 429, description = "`rate_limited`: a code went out less than a minute ago, or five in the last hour (`Retry-After`)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn send_email_code(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<SendEmailCode>,
) -> AppResult<Json<CodeSent>> {
    let email = Email::parse(&body.email).map_err(|m| AppError::validation("email", m))?;
    send_code(&state, &ctx, VerificationKind::Email, email.as_str()).await
}

/// Sends a six-digit code by SMS to a phone number (owner or admin); it expires in 10 minutes.
#[utoipa::path(post, path = "/api/v1/trust/verifications/phone/send", tag = "trust",
    request_body = SendPhoneCode,
    responses(
        (status = 200, description = "Sent; the verification is pending", body = CodeSent),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (phone, E.164)"),
        (status = 429, description = "`rate_limited`: a code went out less than a minute ago, or five in the last hour (`Retry-After`)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn send_phone_code(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<SendPhoneCode>,
) -> AppResult<Json<CodeSent>> {
    let phone = Phone::parse(&body.phone).map_err(|m| AppError::validation("phone", m))?;
    send_code(&state, &ctx, VerificationKind::Phone, phone.as_str()).await
}

/// Checks a code; right, the verification is verified (and the level recomputed).
async fn confirm(
    state: &AppState,
    ctx: &TenantCtx,
    kind: VerificationKind,
    body: ConfirmCode,
) -> AppResult<Json<Verification>> {
    ctx.require_manager()?;
    let tx = ctx.db().begin().await?;
    match store::confirm_code(&tx, kind, body.code(), state.clock.now()).await? {
        Ok(id) => {
            ctx.activity()
                .commit(
                    tx,
                    Change::new("verification.verified", "verification", id)
                        .category(Category::Trust)
                        .details(json!({"kind": kind})),
                )
                .await?;
            state.trust.verifications_changed(ctx.tenant_id()).await;
            let tx = ctx.db().begin().await?;
            let verification = store::verification(&tx, ctx.tenant_id(), id).await?;
            tx.commit().await?;
            Ok(Json(verification))
        }
        Err(refused) => {
            // A wrong try is spent even though the answer is an error.
            tx.commit().await?;
            Err(refused.into())
        }
    }
}

/// Confirms the e-mail code (owner or admin). Five wrong tries void the code.
#[utoipa::path(post, path = "/api/v1/trust/verifications/email/confirm", tag = "trust",
    request_body = ConfirmCode,
    responses(
        (status = 200, description = "Verified", body = Verification),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 409, description = "`code_expired`: no live code (used, expired or voided)"),
        (status = 422, description = "`code_invalid`: a wrong code, six digits or not (a try spent; the detail says how many are left); `validation_failed` (`code` not a string)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn confirm_email(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<ConfirmCode>,
) -> AppResult<Json<Verification>> {
    confirm(&state, &ctx, VerificationKind::Email, body).await
}

/// Confirms the SMS code (owner or admin). Five wrong tries void the code.
#[utoipa::path(post, path = "/api/v1/trust/verifications/phone/confirm", tag = "trust",
    request_body = ConfirmCode,
    responses(
        (status = 200, description = "Verified", body = Verification),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 409, description = "`code_expired`: no live code (used, expired or voided)"),
        (status = 422, description = "`code_invalid`: a wrong code, six digits or not (a try spent; the detail says how many are left); `validation_failed` (`code` not a string)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn confirm_phone(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<ConfirmCode>,
) -> AppResult<Json<Verification>> {
    confirm(&state, &ctx, VerificationKind::Phone, body).await
}

/// Submits a business document for review by platform admins (owner or admin): its files
/// (media of this tenant, kept while a verification names them) and free-form fields.
#[utoipa::path(post, path = "/api/v1/trust/verifications/documents", tag = "trust",
    request_body = SubmitDocument,
    responses(
        (status = 201, description = "Submitted: pending review", body = Verification),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found`: a `media_ids[i]` that is not a media of this tenant"),
        (status = 409, description = "`invalid_state`: this kind is already pending review or verified"),
        (status = 422, description = "`validation_failed` (kind, media_ids, fields)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn submit_document(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<SubmitDocument>,
) -> AppResult<(StatusCode, Json<Verification>)> {
    ctx.require_manager()?;
    let doc = body.validate()?;
    let tx = ctx.db().begin().await?;
    let id = store::submit_document(&tx, &doc, state.clock.now()).await?;
    ctx.activity()
        .commit(
            tx,
            Change::new("verification.submitted", "verification", id)
                .category(Category::Trust)
                .details(json!({"kind": doc.kind})),
        )
        .await?;
    let tx = ctx.db().begin().await?;
    let verification = store::verification(&tx, ctx.tenant_id(), id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(verification)))
}

impl From<TrustError> for AppError {
    #[track_caller]
    fn from(err: TrustError) -> Self {
        match err {
            TrustError::NotFound => Self::NotFound("verification"),
            TrustError::InvalidState(status) => Self::Conflict {
                code: "invalid_state",
                detail: format!("The verification is {}.", status.as_str()),
            },
            TrustError::MediaMissing(i) => Self::MissingReference {
                field: format!("media_ids[{i}]"),
                what: "media",
            },
            TrustError::ResendTooSoon(retry_after) => Self::Throttled {
                detail: format!(
                    "A code was sent moments ago (one a minute, five an hour); retry in \
                     {retry_after} s."
                ),
                retry_after,
            },
            TrustError::CodeExpired => Self::Conflict {
                code: "code_expired",
                detail: "No live code: it was used, it expired or wrong tries voided it; \
                         send a new one."
                    .into(),
            },
            TrustError::CodeInvalid(0) => Self::Unprocessable {
                code: "code_invalid",
                detail: "The code is wrong, and that was the last try: send a new code.".into(),
            },
            TrustError::CodeInvalid(left) => Self::Unprocessable {
                code: "code_invalid",
                detail: format!("The code is wrong; {left} tries left."),
            },
            TrustError::Db(e) => e.into(),
        }
    }
}
