//! Notification endpoints (SPEC §8): send (owners and admins), the recipient's own list,
//! count, reads and deletes, the tenant's channel settings, the member's preferences, and
//! the tenant's templates with their preview.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::model::{
    Locale, Notification, NotificationDetail, NotificationQuery, Preferences, ReadAll,
    SendNotification, Sent, Settings, Source, SourceType, UnreadCount,
};
use super::store::{self, NewTemplate, NotifyError, Template};
use super::templates::{self, Rendered, TemplateChannel, TemplateKey};
use super::{NewNotification, Recipients};
use crate::error::{AppError, AppResult, FieldError, Fields};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::monitoring::activity::Change;
use crate::state::AppState;
use crate::tenancy::TenantCtx;

/// A member acting on what is theirs (their notifications, their preferences). A request made
/// with an API key has no user, so it is 403 `forbidden` here, before any body is read.
pub struct Own {
    pub ctx: TenantCtx,
    /// The member.
    pub user: Uuid,
}

impl FromRequestParts<AppState> for Own {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let ctx = TenantCtx::from_request_parts(parts, state).await?;
        if ctx.api_key.is_some() {
            return Err(AppError::Forbidden(
                "These endpoints belong to a user (their own notifications and preferences); an API key has none. Use a member's token.",
            ));
        }
        Ok(Self {
            user: ctx.user_id,
            ctx,
        })
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications, send_notification))
        .routes(routes!(unread_count))
        .routes(routes!(read_all))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(list_templates, create_template))
        .routes(routes!(preview_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(get_notification, delete_notification))
        .routes(routes!(read_notification))
        .routes(routes!(unread_notification))
}

/// Sends a notification to members (owner or admin): one stored per recipient, delivered on
/// the channels the priority, the tenant's settings and each member's preferences choose.
#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications",
    request_body = SendNotification,
    responses(
        (status = 201, description = "Stored, one per recipient", body = Sent),
        (status = 422, description = "`validation_failed` (`recipients.user_ids[i]` not a user of the tenant; more than 1000 recipients)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn send_notification(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<SendNotification>,
) -> AppResult<(StatusCode, Json<Sent>)> {
    ctx.require_manager()?;
    let send = body.validate()?;
    let roles: Vec<String> = send.roles.iter().map(|r| r.as_str().to_string()).collect();
    let (priority, category) = (send.priority, send.category);
    let tx = ctx.db().begin().await?;
    store::check_recipients(&tx, &send.user_ids, &roles).await?;
    let sent = state
        .notifier
        .enqueue(
            &tx,
            NewNotification {
                title: send.title,
                body: send.body,
                priority,
                category: category.clone(),
                metadata: send.metadata,
                source: Source {
                    kind: SourceType::Manual,
                    id: Some(ctx.user_id),
                },
                template: TemplateKey::ManualMessage,
                variables: Value::Object(Map::new()),
                channels: None,
            },
            Recipients::UsersAndRoles(send.user_ids, send.roles),
        )
        .await?;
    let notification_ids = sent.notification_ids.clone();
    // The data activity names the first notification stored; a send that reached no active
    // member stored nothing, and is a request like any other.
    match notification_ids.first() {
        Some(first) => {
            let mut change = Change::new("notification.sent", "notification", *first).details(
                json!({"notification_ids": notification_ids, "priority": priority,
                       "category": category}),
            );
            change.status = StatusCode::CREATED.as_u16();
            ctx.activity().commit(tx, change).await?;
        }
        None => tx.commit().await?,
    }
    state.notifier.published(sent);
    Ok((StatusCode::CREATED, Json(Sent { notification_ids })))
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    params(NotificationQuery),
    responses(
        (status = 200, description = "A page of the caller's notifications", body = Page<Notification>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 422, description = "`validation_failed` (limit, q, category)"),
    ))]
pub async fn list_notifications(
    Own { ctx, user }: Own,
    Query(query): Query<NotificationQuery>,
) -> AppResult<Page<Notification>> {
    let filter = query.parse()?;
    let items = store::list(ctx.db(), user, &filter).await?;
    Ok(Page::from_rows(items, filter.page, |n: &Notification| n.id))
}

/// How many of the caller's notifications are unread, in all and by priority.
#[utoipa::path(get, path = "/api/v1/notifications/unread-count", tag = "notifications",
    responses(
        (status = 200, description = "The counts", body = UnreadCount),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
    ))]
pub async fn unread_count(Own { ctx, user }: Own) -> AppResult<Json<UnreadCount>> {
    Ok(Json(store::unread_count(ctx.db(), user).await?))
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications",
    responses(
        (status = 200, description = "How many were unread", body = ReadAll),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
    ))]
pub async fn read_all(Own { ctx, user }: Own) -> AppResult<Json<ReadAll>> {
    Ok(Json(ReadAll {
        updated: store::read_all(ctx.db(), user).await?,
    }))
}

/// One of the caller's notifications, with its deliveries.
#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The notification", body = NotificationDetail),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 404, description = "`not_found` (also another user's notification)"),
    ))]
pub async fn get_notification(
    Own { ctx, user }: Own,
    IdPath(id): IdPath,
) -> AppResult<Json<NotificationDetail>> {
    Ok(Json(store::get(ctx.db(), user, id).await?))
}

/// Marks one of the caller's notifications read.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn read_notification(
    Own { ctx, user }: Own,
    IdPath(id): IdPath,
) -> AppResult<Json<Notification>> {
    Ok(Json(store::mark(ctx.db(), user, id, true).await?))
}

/// Marks one of the caller's notifications unread.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/unread", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn unread_notification(
    Own { ctx, user }: Own,
    IdPath(id): IdPath,
) -> AppResult<Json<Notification>> {
    Ok(Json(store::mark(ctx.db(), user, id, false).await?))
}

/// Deletes one of the caller's notifications (its email and SMS still go out).
#[utoipa::path(delete, path = "/api/v1/notifications/{id}", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Notification id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn delete_notification(
    Own { ctx, user }: Own,
    IdPath(id): IdPath,
) -> AppResult<StatusCode> {
    store::delete(ctx.db(), user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's channels by priority (the defaults until saved).
#[utoipa::path(get, path = "/api/v1/notifications/settings", tag = "notifications",
    responses((status = 200, description = "The settings", body = Settings)))]
pub async fn get_settings(ctx: TenantCtx) -> AppResult<Json<Settings>> {
    Ok(Json(store::settings(ctx.db()).await?))
}

/// Replaces the tenant's channels by priority (owner or admin).
#[utoipa::path(put, path = "/api/v1/notifications/settings", tag = "notifications",
    request_body = Settings,
    responses(
        (status = 200, description = "The saved settings", body = Settings),
        (status = 422, description = "`validation_failed` (a channel listed twice)"),
    ))]
pub async fn put_settings(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<Settings>,
) -> AppResult<Json<Settings>> {
    ctx.require_manager()?;
    let settings = body.validate()?;
    Ok(Json(
        store::put_settings(ctx.db(), ctx.activity(), &settings).await?,
    ))
}

/// The caller's own preferences (the defaults until saved).
#[utoipa::path(get, path = "/api/v1/notifications/preferences", tag = "notifications",
    responses(
        (status = 200, description = "The preferences", body = Preferences),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
    ))]
pub async fn get_preferences(Own { ctx, user }: Own) -> AppResult<Json<Preferences>> {
    Ok(Json(store::preferences(ctx.db(), user).await?))
}

/// Replaces the caller's own preferences.
#[utoipa::path(put, path = "/api/v1/notifications/preferences", tag = "notifications",
    request_body = Preferences,
    responses(
        (status = 200, description = "The saved preferences", body = Preferences),
        (status = 403, description = "`forbidden`: an API key (these endpoints belong to a user)"),
        (status = 422, description = "`validation_failed` (time zone, times, locale, categories, duplicates)"),
    ))]
pub async fn put_preferences(
    Own { ctx, user }: Own,
    ApiJson(body): ApiJson<Preferences>,
) -> AppResult<Json<Preferences>> {
    let preferences = body.validate()?;
    Ok(Json(
        store::put_preferences(ctx.db(), ctx.activity(), user, &preferences).await?,
    ))
}

/// A template as sent by POST (PUT: [`TemplateUpdate`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "order.created", "channel": "sms", "locale": "pt-BR",
    "body": "{{ tenant.name }}: pedido de {{ order.customer.name }}"}))]
pub struct TemplateBody {
    pub key: TemplateKey,
    pub channel: TemplateChannel,
    /// A language tag: `pt-BR`, `pt`, `en`, ... (`pt_br` is read as, and stored as, `pt-BR`).
    #[schema(pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length = 35)]
    pub locale: String,
    /// Email only (default `{{ title }}`); the priority prefix is added when sent.
    #[serde(default)]
    #[schema(max_length = 500, nullable)]
    pub subject: Option<String>,
    /// minijinja: HTML for email (variables are escaped), text for SMS.
    #[schema(min_length = 1, max_length = 20000)]
    pub body: String,
}

impl TemplateBody {
    fn validate(self) -> AppResult<NewTemplate> {
        let mut f = Fields::default();
        let locale = f.check("locale", Locale::parse(&self.locale));
        if self.body.trim().is_empty() || self.body.chars().count() > 20_000 {
            f.fail("body", "must be 1-20000 characters");
        }
        if self.body.contains('\0') || self.subject.as_deref().is_some_and(|s| s.contains('\0')) {
            f.fail("body", "must not contain NUL characters");
        }
        match (&self.subject, self.channel) {
            (Some(_), TemplateChannel::Sms) => f.fail("subject", "SMS have no subject"),
            (Some(s), _) if s.chars().count() > 500 => {
                f.fail("subject", "must be at most 500 characters")
            }
            _ => {}
        }
        let source = templates::Source {
            subject: self.subject,
            body: self.body,
        };
        let mut errors: Vec<FieldError> = Vec::new();
        f.finish(|| Some(()))?;
        if let Err(faults) = templates::validate(self.key, self.channel, &source) {
            errors.extend(
                faults
                    .into_iter()
                    .map(|e| FieldError::new(e.part, e.message)),
            );
            return Err(AppError::Validation(errors));
        }
        Ok(NewTemplate {
            key: self.key,
            channel: self.channel,
            locale: locale.expect("checked above").as_str().to_string(),
            source,
        })
    }
}

/// The tenant's templates, newest first (owner or admin).
#[utoipa::path(get, path = "/api/v1/notifications/templates", tag = "notifications",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of templates", body = Page<Template>),
        (status = 400, description = "`invalid_cursor`"),
    ))]
pub async fn list_templates(
    ctx: TenantCtx,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<Template>> {
    ctx.require_manager()?;
    let page = query.parse()?;
    let items = store::templates(ctx.db(), page).await?;
    Ok(Page::from_rows(items, page, |t: &Template| t.id))
}

/// Adds a template (owner or admin): checked on save (syntax, the key's variables).
#[utoipa::path(post, path = "/api/v1/notifications/templates", tag = "notifications",
    request_body = TemplateBody,
    responses(
        (status = 201, description = "Created", body = Template),
        (status = 409, description = "`template_exists` (this key, channel and locale) or `template_limit` (200 per tenant)"),
        (status = 422, description = "`validation_failed`: `body` or `subject` does not parse, or names variables the key does not have (named in the message)"),
    ))]
pub async fn create_template(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<TemplateBody>,
) -> AppResult<(StatusCode, Json<Template>)> {
    ctx.require_manager()?;
    let new = body.validate()?;
    Ok((
        StatusCode::CREATED,
        Json(store::create_template(ctx.db(), ctx.activity(), &new).await?),
    ))
}

/// One template (owner or admin).
#[utoipa::path(get, path = "/api/v1/notifications/templates/{id}", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Template id")),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn get_template(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<Template>> {
    ctx.require_manager()?;
    Ok(Json(store::template(ctx.db(), id).await?))
}

/// A template as PUT takes it: what POST takes, and the read-only fields GET shows (`id`,
/// `created_at`, `updated_at`), so a client can send back the document it read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "01930000-0000-7000-8000-000000000000", "key": "order.created",
    "channel": "sms", "locale": "pt-BR", "subject": null,
    "body": "{{ tenant.name }}: pedido de {{ order.customer.name }}",
    "created_at": "2026-03-10T15:00:00Z", "updated_at": "2026-03-10T15:00:00Z"}))]
pub struct TemplateUpdate {
    /// Read-only: when sent, the path's id (else 422 naming `id`).
    pub id: Option<Uuid>,
    pub key: TemplateKey,
    pub channel: TemplateChannel,
    /// A language tag: `pt-BR`, `pt`, `en`, ... (`pt_br` is read as, and stored as, `pt-BR`).
    #[schema(pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length = 35)]
    pub locale: String,
    /// Email only (default `{{ title }}`); the priority prefix is added when sent.
    #[serde(default)]
    #[schema(max_length = 500, nullable)]
    pub subject: Option<String>,
    /// minijinja: HTML for email (variables are escaped), text for SMS.
    #[schema(min_length = 1, max_length = 20000)]
    pub body: String,
    /// Read-only: accepted as GET shows it, and ignored.
    #[schema(format = DateTime)]
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only: accepted as GET shows it, and ignored (the server sets it when the
    /// template changes).
    #[schema(format = DateTime)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Replaces a template (owner or admin), checked as on create. Takes the document GET
/// returns; a PUT that changes nothing leaves it as it was, `updated_at` included.
#[utoipa::path(put, path = "/api/v1/notifications/templates/{id}", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Template id")),
    request_body = TemplateUpdate,
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`template_exists`"),
        (status = 422, description = "`validation_failed` (also `id` when it is not the path's)"),
    ))]
pub async fn update_template(
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<TemplateUpdate>,
) -> AppResult<Json<Template>> {
    ctx.require_manager()?;
    if body.id.is_some_and(|sent| sent != id) {
        return Err(AppError::validation(
            "id",
            "is read-only: it must be the id in the path",
        ));
    }
    let new = TemplateBody {
        key: body.key,
        channel: body.channel,
        locale: body.locale,
        subject: body.subject,
        body: body.body,
    }
    .validate()?;
    Ok(Json(
        store::update_template(ctx.db(), ctx.activity(), id, &new).await?,
    ))
}

/// Deletes a template (owner or admin): the next in the fallback order applies again.
#[utoipa::path(delete, path = "/api/v1/notifications/templates/{id}", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Template id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn delete_template(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<StatusCode> {
    ctx.require_manager()?;
    store::delete_template(ctx.db(), ctx.activity(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../templates/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "verification.code", "channel": "email", "locale": "pt-BR",
    "variables": {"code": "482913"}}))]
pub struct PreviewBody {
    pub key: TemplateKey,
    pub channel: TemplateChannel,
    /// Read as on a template (`pt_br` is `pt-BR`); the fallback is pt-BR -> pt -> en.
    #[schema(pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length = 35)]
    pub locale: String,
    /// Over the key's sample variables (e.g. `{"code": "482913"}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

/// Renders the template a message of `key` on `channel` in `locale` would use (the tenant's,
/// else the built-in, by the fallback order) with `variables` over the key's samples.
#[utoipa::path(post, path = "/api/v1/notifications/templates/preview", tag = "notifications",
    request_body = PreviewBody,
    responses(
        (status = 200, description = "The rendered message", body = Rendered),
        (status = 422, description = "`validation_failed` (locale; a template that fails to render)"),
    ))]
pub async fn preview_template(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<PreviewBody>,
) -> AppResult<Json<Rendered>> {
    ctx.require_manager()?;
    let chain = Locale::parse(&body.locale)
        .map_err(|m| AppError::validation("locale", m))?
        .fallbacks();
    let source = match store::tenant_template(ctx.db(), body.key, body.channel, &chain).await? {
        Some(source) => source,
        None => templates::builtin(body.key, body.channel, &chain),
    };
    let mut vars = body.key.sample();
    vars["tenant"] = serde_json::json!({"name": ctx.tenant.name});
    if let Some(v) = vars.as_object_mut() {
        v.extend(body.variables);
    }
    templates::render(body.channel, &source, &vars)
        .map(Json)
        .map_err(|e| AppError::validation(format!("variables ({})", e.part), e.message))
}

impl From<NotifyError> for AppError {
    #[track_caller]
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::NotFound => Self::NotFound("notification"),
            NotifyError::TemplateNotFound => Self::NotFound("template"),
            NotifyError::TemplateTaken => Self::Conflict {
                code: "template_exists",
                detail: "The tenant has a template for this key, channel and locale.".into(),
            },
            NotifyError::TooManyTemplates => Self::Conflict {
                code: "template_limit",
                detail: format!("A tenant has at most {} templates.", store::MAX_TEMPLATES),
            },
            NotifyError::UnknownRecipient(i) => Self::validation(
                format!("recipients.user_ids[{i}]"),
                "is not a user of this tenant",
            ),
            NotifyError::TooManyRecipients(n) => {
                Self::validation("recipients", format!("name more than {n} active users"))
            }
            NotifyError::Db(e) => e.into(),
        }
    }
}
