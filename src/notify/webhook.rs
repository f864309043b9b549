//! `POST /api/v1/webhooks/twilio/status`: Twilio's status callbacks for SMS deliveries.
//!
//! Public (no token, no tenant header): it is authenticated by `X-Twilio-Signature`, the
//! base64 HMAC-SHA1, keyed with `TWILIO_AUTH_TOKEN`, of the full URL Twilio called followed
//! by each POST parameter's name and value, sorted by name; compared in constant time. A
//! missing or bad signature is 403 and changes nothing.
//!
//! The URL is the same for every message (SPEC §8), so the callback's `MessageSid` says which
//! delivery it is about: [`route_across_tenants`] reads the platform table `sms_routes` (the
//! outbox writes a route as it records `sent`), the one read here that is not in a tenant's
//! transaction. Then the callback works in that one tenant's transaction like any request: it
//! is applied once (`notification_sms_events`) and only moves a delivery forward.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha1::Sha1;
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::db::{Db, DbError, TenantDb};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub const PATH: &str = "/api/v1/webhooks/twilio/status";
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// How long a signed callback waits for its sid to be routed: Twilio can call back before the
/// outbox has committed `sent` and the route (its answer and the commit race the callback).
const ROUTE_WAIT: Duration = Duration::from_secs(2);
const ROUTE_POLL: Duration = Duration::from_millis(100);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(twilio_status))
}

/// `X-Twilio-Signature` for a request to `url` with the POST `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Whether `header` is the signature of the request (constant-time comparison).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    match STANDARD.decode(header.trim()) {
        Ok(raw) => mac(auth_token, url, params).verify_slice(&raw).is_ok(),
        Err(_) => false,
    }
}

/// The callback's form fields this service reads (Twilio sends more; all are signed).
#[derive(Debug, Default, ToSchema)]
pub struct TwilioCallback {
    /// The message's sid (`SmsSid` in older callbacks).
    #[schema(rename = "MessageSid")]
    pub message_sid: Option<String>,
    /// `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`, ... (`SmsStatus`).
    #[schema(rename = "MessageStatus")]
    pub message_status: Option<String>,
    /// Twilio's error code, with `undelivered` and `failed`.
    #[schema(rename = "ErrorCode")]
    pub error_code: Option<String>,
}

impl TwilioCallback {
    fn from_params(params: &[(String, String)]) -> Self {
        let field = |names: &[&str]| {
            params
                .iter()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| v.clone())
        };
        Self {
            message_sid: field(&["MessageSid", "SmsSid"]),
            message_status: field(&["MessageStatus", "SmsStatus"]),
            error_code: field(&["ErrorCode"]),
        }
    }
}

/// The status a callback moves a delivery to, and from which statuses (forward only); `None`
/// for a status that says nothing new (`queued`, `accepted`, `sending`, ...).
fn transition(message_status: &str) -> Option<(&'static str, &'static [&'static str])> {
    match message_status {
        "sent" => Some(("sent", &["queued", "sending"])),
        "delivered" | "read" => Some(("delivered", &["queued", "sending", "sent"])),
        "undelivered" => Some(("undelivered", &["queued", "sending", "sent"])),
        "failed" | "canceled" => Some(("failed", &["queued", "sending", "sent"])),
        _ => None,
    }
}

/// Records Twilio's report on an SMS delivery.
#[utoipa::path(post, path = "/api/v1/webhooks/twilio/status", tag = "notifications",
    params(("X-Twilio-Signature" = String, Header, description = "Twilio's request signature")),
    request_body(content = TwilioCallback, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 204, description = "Recorded; also a repeated callback, or one for a delivery that is final, gone or unknown (nothing changes)"),
        (status = 403, description = "`forbidden`: the signature is missing or does not verify (nothing changes)"),
        (status = 500, description = "`internal_error`"),
        (status = 503, description = "`service_unavailable`"),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = tracing::field::Empty))]
pub async fn twilio_status(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<StatusCode> {
    let refused = || {
        state.metrics.sms_callback("refused");
        AppError::Forbidden("The request's X-Twilio-Signature is missing or does not verify.")
    };
    let (Some(twilio), Some(base)) = (&state.config.notify.twilio, &state.config.public_base_url)
    else {
        return Err(refused());
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let url = format!(
        "{}{}",
        base.as_str().trim_end_matches('/'),
        uri.path_and_query().map_or(PATH, |p| p.as_str())
    );
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| verify(twilio.auth_token.expose_secret(), &url, &params, sig));
    if !signed {
        return Err(refused());
    }
    let callback = TwilioCallback::from_params(&params);
    let (Some(sid), Some(status)) = (&callback.message_sid, &callback.message_status) else {
        state.metrics.sms_callback("ignored");
        return Ok(StatusCode::NO_CONTENT);
    };
    let Some(route) = wait_for_route(&state.db, sid).await? else {
        tracing::warn!(sid = %sid, status = %status,
            "a signed Twilio callback names no SMS delivery; nothing changed");
        state.metrics.sms_callback("unknown");
        return Ok(StatusCode::NO_CONTENT);
    };
    tracing::Span::current().record("tenant_id", tracing::field::display(route.tenant));
    let applied = apply(
        &state.db.for_tenant(route.tenant),
        route.delivery,
        status,
        sid,
        callback.error_code.as_deref(),
    )
    .await?;
    state
        .metrics
        .sms_callback(if applied { "applied" } else { "unchanged" });
    Ok(StatusCode::NO_CONTENT)
}

/// Where a Twilio sid leads: the tenant and the SMS delivery it was sent for.
#[derive(Debug, Clone, Copy)]
struct SmsRoute {
    tenant: Uuid,
    delivery: Uuid,
}

/// The route of `sid`, looked up in the platform table `sms_routes` with no tenant set: the
/// only cross-tenant read of the webhook (it learns the tenant here), and it returns nothing
/// but the route.
async fn route_across_tenants(db: &Db, sid: &str) -> Result<Option<SmsRoute>, DbError> {
    let row = db
        .platform()
        .await?
        .query_opt(
            "SELECT tenant, delivery_id FROM sms_routes WHERE sid = $1",
            &[&sid],
        )
        .await?;
    Ok(row.map(|r| SmsRoute {
        tenant: r.get(0),
        delivery: r.get(1),
    }))
}

/// The route of `sid`, looked up again for up to [`ROUTE_WAIT`] while there is none: a
/// callback can overtake the outbox's commit of `sent`.
async fn wait_for_route(db: &Db, sid: &str) -> Result<Option<SmsRoute>, DbError> {
    let give_up = Instant::now() + ROUTE_WAIT;
    loop {
        if let Some(route) = route_across_tenants(db, sid).await? {
            return Ok(Some(route));
        }
        if Instant::now() + ROUTE_POLL > give_up {
            return Ok(None);
        }
        tokio::time::sleep(ROUTE_POLL).await;
    }
}

/// Applies one callback in the tenant's transaction; false when it changed nothing (a
/// repeat, a status that says nothing new, a final or unknown delivery). For a final
/// delivery it writes nothing at all: no event, and the row is not touched.
async fn apply(
    db: &TenantDb,
    delivery: Uuid,
    status: &str,
    sid: &str,
    error_code: Option<&str>,
) -> Result<bool, DbError> {
    let status: String = status.chars().take(32).collect();
    let tx = db.begin().await?;
    let fresh = tx
        .query_opt(
            "INSERT INTO notification_sms_events (tenant_id, delivery_id, message_status,
                 message_sid, error_code)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (
                 SELECT 1 FROM notification_deliveries
                 WHERE tenant_id = $1 AND id = $2 AND channel = 'sms'
                   AND status NOT IN ('delivered', 'undelivered', 'failed', 'skipped'))
             ON CONFLICT DO NOTHING RETURNING 1",
            &[&tx.tenant_id(), &delivery, &status, &sid, &error_code],
        )
        .await?
        .is_some();
    let mut moved = false;
    if fresh && let Some((to, from)) = transition(&status) {
        let from: Vec<&str> = from.to_vec();
        let error = error_code.map(|c| format!("Twilio reported error {c} ({status})"));
        moved = tx
            .execute(
                "UPDATE notification_deliveries
                 SET status = $3, provider_id = coalesce(provider_id, $4),
                     last_error = coalesce($5, last_error), claim = NULL, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND status = ANY($6)",
                &[&tx.tenant_id(), &delivery, &to, &sid, &error, &from],
            )
            .await?
            > 0;
    }
    tx.commit().await?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's own example (TwilioDevEd/api-snippets, security/signature_validation).
    #[test]
    fn the_signature_matches_twilios_example() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = signature("12345", url, &params);
        assert_eq!(sig, "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(verify("12345", url, &params, &sig));
        assert!(!verify(
            "12345",
            "https://mycompany.com/other",
            &params,
            &sig
        ));
        assert!(!verify("54321", url, &params, &sig));
        assert!(!verify("12345", url, &params, "not base64!"));
    }

    #[test]
    fn callbacks_move_forward_only() {
        assert_eq!(transition("queued"), None);
        assert_eq!(transition("sending"), None);
        let (to, from) = transition("delivered").unwrap();
        assert_eq!(to, "delivered");
        assert!(!from.contains(&"failed") && !from.contains(&"undelivered"));
        let (to, from) = transition("sent").unwrap();
        assert_eq!(to, "sent");
        assert!(!from.contains(&"sent") && !from.contains(&"delivered"));
    }
}
