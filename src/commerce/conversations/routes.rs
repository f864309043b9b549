//! Conversation endpoints: post a message, list threads, a thread's messages.

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Message, PostMessage, Thread};
use super::store::{self, ConversationError};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(list_threads))
        .routes(routes!(list_messages))
}

/// Records a message; the thread of its customer and channel is made on first contact.
/// A merchant or bot message resets the thread's unread count.
#[utoipa::path(post, path = "/api/v1/conversations/messages", tag = "conversations",
    request_body = PostMessage,
    responses(
        (status = 201, description = "Stored", body = Message),
        (status = 404, description = "`not_found`: `order_id` is not an order of this tenant"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn post_message(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<PostMessage>,
) -> AppResult<(StatusCode, Json<Message>)> {
    let new = body.validate()?;
    Ok((
        StatusCode::CREATED,
        Json(store::post(ctx.db(), ctx.activity(), &new).await?),
    ))
}

/// Conversation threads, the most recently active first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of threads", body = Page<Thread>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_threads(
    ctx: TenantCtx,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<Thread>> {
    let page = query.parse()?;
    let threads = store::threads(ctx.db(), page).await?;
    Ok(Page::from_rows(threads, page, |t: &Thread| {
        t.last_message.id
    }))
}

/// The messages of one thread, newest first.
#[utoipa::path(get, path = "/api/v1/conversations/{thread_id}/messages", tag = "conversations",
    params(("thread_id" = uuid::Uuid, Path, description = "Thread id"), PageQuery),
    responses(
        (status = 200, description = "A page of messages", body = Page<Message>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 404, description = "`not_found` (also for another tenant's thread)"),
    ))]
pub async fn list_messages(
    ctx: TenantCtx,
    IdPath(thread_id): IdPath,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<Message>> {
    let page = query.parse()?;
    let messages = store::messages(ctx.db(), thread_id, page).await?;
    Ok(Page::from_rows(messages, page, |m: &Message| m.id))
}

impl From<ConversationError> for AppError {
    #[track_caller]
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::ThreadNotFound => Self::NotFound("thread"),
            ConversationError::OrderMissing => Self::MissingReference {
                field: "order_id".into(),
                what: "order",
            },
            ConversationError::Db(e) => e.into(),
        }
    }
}
