//! `GET /api/v1/ws` (SPEC §7): the WebSocket protocol in front of the [`Hub`]. A connection
//! authenticates (first message, or the query), is given the channels its role carries, gets
//! what it missed when it resumes, then live events; the server pings, bounds the queue, and
//! closes with 1001 on shutdown. Close codes: docs/MONITORING.md.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::hub::{Admission, Channel, Hub, Replay, Resume, Subscription};
use crate::error::AppError;
use crate::state::AppState;
use crate::tenancy::{TENANT_HEADER, TenantCtx};

pub const PATH: &str = "/api/v1/ws";

/// The close codes of SPEC §7 and the hub's own.
pub mod close {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// An internal failure (the database unreachable during authentication).
    pub const INTERNAL: u16 = 1011;
    /// The connection fell behind its send queue.
    pub const SLOW_CONSUMER: u16 = 1013;
    /// No valid token, or a first message that is not an `auth`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// A tenant the caller may not see (unknown, not a member, suspended).
    pub const FORBIDDEN: u16 = 4403;
    /// No `auth` message in time.
    pub const AUTH_TIMEOUT: u16 = 4408;
    /// The tenant's WebSocket cap is reached, or the caller's rate limit or lookup budget.
    pub const TOO_MANY: u16 = 4429;
}

/// Incoming frames are small (`auth`): larger ones are refused.
const MAX_MESSAGE: usize = 16 * 1024;
/// tungstenite's buffers default to 128 KiB each; an idle connection needs little.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 0;
/// A connection falling this far behind in its socket is dropped (beyond the send queue).
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct WsQuery {
    /// The bearer token, for clients that authenticate in the URL instead of the first message.
    token: Option<String>,
    /// The tenant, with `token`.
    tenant_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Auth {
        token: String,
        tenant_id: String,
        resume: Option<Resume>,
    },
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(connect))
}

/// Opens the live event stream. Authenticate with the first message
/// `{"type": "auth", "token", "tenant_id", "resume"?}` or with `?token=&tenant_id=`; the
/// protocol and its close codes are in docs/MONITORING.md.
#[utoipa::path(get, path = "/api/v1/ws", tag = "monitoring", params(WsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "`bad_request`: not a WebSocket upgrade request"),
        (status = 503, description = "`service_unavailable`: the instance's WebSocket cap is reached"),
    ))]
pub async fn connect(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(admission) = state.hub.admit() else {
        state.metrics.ws.refused("total_cap");
        return AppError::Unavailable("The server's WebSocket connections are all in use.")
            .into_response();
    };
    let tasks = state.hub.tasks.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| tasks.track_future(session(socket, state, query, admission)))
}

async fn session(mut socket: WebSocket, state: AppState, query: WsQuery, _admission: Admission) {
    let hub = state.hub.clone();
    let hello = match (query.token, query.tenant_id) {
        (Some(token), Some(tenant_id)) => Ok((token, tenant_id, None)),
        _ => tokio::select! {
            _ = hub.shutdown.cancelled() => Err(close::GOING_AWAY),
            first = tokio::time::timeout(hub.limits.auth_timeout, first_message(&mut socket)) => {
                first.unwrap_or(Err(close::AUTH_TIMEOUT))
            }
        },
    };
    let (token, tenant_id, resume) = match hello {
        Ok(hello) => hello,
        Err(code) => return bye(socket, code).await,
    };
    let ctx = match authenticate(&state, &token, &tenant_id).await {
        Ok(ctx) => ctx,
        Err(code) => return bye(socket, code).await,
    };
    let channels = Channel::for_role(ctx.role.can_manage());
    let subscription = match hub.subscribe(ctx.tenant_id(), ctx.user_id, channels, resume.as_ref())
    {
        Ok(subscription) => subscription,
        Err(_) => {
            state.metrics.ws.refused("tenant_cap");
            return bye(socket, close::TOO_MANY).await;
        }
    };
    state.metrics.ws.opened();
    let code = stream(&mut socket, &hub, &state, subscription).await;
    state.metrics.ws.gone();
    if let Some(code) = code {
        bye(socket, code).await;
    }
}

/// The first message's credentials, or the close code for a first message that is not an
/// `auth`.
async fn first_message(socket: &mut WebSocket) -> Result<(String, String, Option<Resume>), u16> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<Incoming>(&text) {
                    Ok(Incoming::Auth {
                        token,
                        tenant_id,
                        resume,
                    }) => Ok((token, tenant_id, resume)),
                    Err(_) => Err(close::UNAUTHORIZED),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(close::UNAUTHORIZED),
        }
    }
}

/// The HTTP extractor's checks, in its order, on the message's credentials: the token, the
/// tenant and membership (with the caller's miss budget), the rate limit and suspension.
async fn authenticate(state: &AppState, token: &str, tenant_id: &str) -> Result<TenantCtx, u16> {
    let bearer =
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| close::UNAUTHORIZED)?;
    let tenant = HeaderValue::try_from(tenant_id).map_err(|_| close::FORBIDDEN)?;
    let (mut parts, ()) = Request::builder()
        .uri(PATH)
        .body(())
        .expect("a bare request builds")
        .into_parts();
    parts.headers.insert(AUTHORIZATION, bearer);
    parts.headers.insert(TENANT_HEADER, tenant);
    TenantCtx::from_request_parts(&mut parts, state)
        .await
        .map_err(|e| match e {
            AppError::Unauthorized => close::UNAUTHORIZED,
            AppError::TenantHeaderMissing
            | AppError::TenantHeaderInvalid
            | AppError::TenantAccessDenied
            | AppError::TenantSuspended
            | AppError::Forbidden(_) => close::FORBIDDEN,
            AppError::RateLimited { .. } | AppError::LookupBudget { .. } => close::TOO_MANY,
            other => {
                tracing::warn!(error = %other, "a WebSocket could not be authenticated");
                close::INTERNAL
            }
        })
}

#[derive(serde::Serialize)]
struct Ready<'a> {
    r#type: &'static str,
    channels: &'a [Channel],
    epoch: &'a str,
    offset: u64,
}

/// Serves a subscribed connection until it ends; the close code the server sends, if any.
async fn stream(
    socket: &mut WebSocket,
    hub: &Hub,
    state: &AppState,
    mut subscription: Subscription,
) -> Option<u16> {
    let ready = serde_json::to_string(&Ready {
        r#type: "ready",
        channels: &subscription.channels,
        epoch: &subscription.epoch,
        offset: subscription.offset,
    })
    .expect("the ready frame serializes");
    let period = hub.limits.ping_interval;
    socket.send(Message::text(ready)).await.ok()?;
    match std::mem::replace(&mut subscription.replay, Replay::None) {
        Replay::None => {}
        Replay::Reset => {
            let reset = Utf8Bytes::from_static(r#"{"type":"reset"}"#);
            socket.send(Message::Text(reset)).await.ok()?;
        }
        Replay::Frames(frames) => {
            state.metrics.ws.delivered(frames.len() as u64);
            for frame in frames {
                send(socket, frame, period).await?;
            }
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut unanswered = 0u8;
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => {
                state.metrics.ws.closed("shutdown");
                return Some(close::GOING_AWAY);
            }
            frame = subscription.frames.recv() => match frame {
                Some(frame) => send(socket, frame, period).await?,
                None if subscription.slow.load(Ordering::Relaxed) => {
                    return Some(close::SLOW_CONSUMER);
                }
                None => return Some(close::INTERNAL),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => unanswered = 0,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if unanswered >= 2 {
                    state.metrics.ws.closed("missed_pongs");
                    return None;
                }
                unanswered += 1;
                socket.send(Message::Ping(Default::default())).await.ok()?;
            }
        }
    }
}

/// Sends a frame; `None` when the connection is gone, or took none of it for two ping periods
/// (a client that stopped reading must not hold its task forever).
async fn send(socket: &mut WebSocket, frame: Utf8Bytes, period: Duration) -> Option<()> {
    tokio::time::timeout(2 * period, socket.send(Message::Text(frame)))
        .await
        .ok()?
        .ok()
}

async fn bye(mut socket: WebSocket, code: u16) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
