//! SQL for notifications, their deliveries, settings, preferences and templates. Every
//! statement also filters `tenant_id` explicitly; a recipient's statements also filter
//! `user_id`, so another user's notification is not found (404).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::NewNotification;
use super::choice::Start;
use super::model::{
    ByPriority, Delivery, DeliveryStatus, Notification, NotificationDetail, NotificationFilter,
    Preferences, Priority, Settings, UnreadCount,
};
use super::templates::{self, TemplateChannel, TemplateKey};
use crate::commerce::{json_column, to_json};
use crate::db::{DbError, OnConstraint, TenantDb, TenantTx, Violation};
use crate::extract::PageRequest;
use crate::monitoring::activity::{Change, Recorder};
use crate::monitoring::rules::model::NotifyChannel;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no such notification")]
    NotFound,
    #[error("no such template")]
    TemplateNotFound,
    #[error("a template for this key, channel and locale exists")]
    TemplateTaken,
    #[error("the tenant has its maximum of templates")]
    TooManyTemplates,
    #[error("recipients.user_ids[{0}] is not a user of the tenant")]
    UnknownRecipient(usize),
    #[error("the recipients are more than {0} users")]
    TooManyRecipients(i64),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Violation for NotifyError {
    fn violated(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.violated(),
            _ => None,
        }
    }
}

type Result<T, E = NotifyError> = std::result::Result<T, E>;

/// Templates a tenant may hold: every key, channel and a few locales each.
pub const MAX_TEMPLATES: i64 = 200;

/// The tenant's settings in `tx` (the defaults until saved).
pub async fn settings_in(tx: &TenantTx) -> Result<Settings, DbError> {
    match tx
        .query_opt(
            "SELECT channels FROM notification_settings WHERE tenant_id = $1",
            &[&tx.tenant_id()],
        )
        .await?
    {
        Some(row) => Ok(Settings {
            channels: json_column(&row, "channels")?,
        }),
        None => Ok(Settings::default()),
    }
}

/// A member's preferences from a row with `opt_outs`, `quiet_hours` and `locale` (all NULL:
/// never saved, the defaults).
pub fn preferences_of(row: &Row) -> Result<Preferences, DbError> {
    let locale: Option<String> = row.get("locale");
    Ok(match locale {
        None => Preferences::default(),
        Some(locale) => Preferences {
            opt_outs: json_column(row, "opt_outs")?,
            quiet_hours: json_column(row, "quiet_hours")?,
            locale,
        },
    })
}

/// The rows one enqueue writes, as columns.
#[derive(Default)]
pub struct NewRows {
    ids: Vec<Uuid>,
    users: Vec<Uuid>,
    d_ids: Vec<Uuid>,
    d_notifications: Vec<Uuid>,
    d_channels: Vec<&'static str>,
    d_addresses: Vec<Option<String>>,
    d_locales: Vec<String>,
    d_statuses: Vec<&'static str>,
    d_attempts: Vec<i32>,
    d_due: Vec<DateTime<Utc>>,
    d_errors: Vec<Option<String>>,
    d_bypassed: Vec<String>,
}

impl NewRows {
    pub fn notification(&mut self, id: Uuid, user: Uuid) {
        self.ids.push(id);
        self.users.push(user);
    }

    pub fn delivery(&mut self, notification: Uuid, channel: NotifyChannel, locale: &str, s: Start) {
        self.d_ids.push(Uuid::now_v7());
        self.d_notifications.push(notification);
        self.d_channels.push(channel.as_str());
        self.d_addresses.push(s.address);
        self.d_locales.push(locale.to_string());
        self.d_statuses.push(s.status.as_str());
        self.d_attempts
            .push(i32::from(s.status == DeliveryStatus::Delivered));
        self.d_due.push(s.due_at);
        self.d_errors.push(s.reason);
        self.d_bypassed.push(
            s.bypassed
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
}

/// Writes the notifications and their deliveries in one statement (the deliveries' foreign
/// key is checked at its end, when both are in).
pub async fn insert(
    tx: &TenantTx,
    n: &NewNotification,
    rows: &NewRows,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.execute(
        "WITH stored AS (
             INSERT INTO notifications (tenant_id, id, user_id, title, body, priority, category,
                 metadata, source_type, source_id, template_key, variables, created_at)
             SELECT $1, x.id, x.user_id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
             FROM unnest($2::uuid[], $3::uuid[]) AS x(id, user_id))
         INSERT INTO notification_deliveries (tenant_id, id, notification_id, channel, address,
             locale, template_key, priority, status, attempts, due_at, last_error, bypassed,
             created_at, updated_at)
         SELECT $1, x.id, x.notification_id, x.channel, x.address, x.locale, $11, $6, x.status,
                x.attempts, x.due_at, x.last_error, string_to_array(x.bypassed, ','), $13, $13
         FROM unnest($14::uuid[], $15::uuid[], $16::text[], $17::text[], $18::text[],
                     $19::text[], $20::int[], $21::timestamptz[], $22::text[], $23::text[])
              AS x(id, notification_id, channel, address, locale, status, attempts, due_at,
                   last_error, bypassed)",
        &[
            &tx.tenant_id(),
            &rows.ids,
            &rows.users,
            &n.title,
            &n.body,
            &n.priority,
            &n.category,
            &n.metadata,
            &n.source.kind,
            &n.source.id,
            &n.template,
            &n.variables,
            &now,
            &rows.d_ids,
            &rows.d_notifications,
            &rows.d_channels,
            &rows.d_addresses,
            &rows.d_locales,
            &rows.d_statuses,
            &rows.d_attempts,
            &rows.d_due,
            &rows.d_errors,
            &rows.d_bypassed,
        ],
    )
    .await?;
    Ok(())
}

/// A one-time code's delivery (no notification).
#[allow(clippy::too_many_arguments)]
pub async fn insert_code(
    tx: &TenantTx,
    channel: NotifyChannel,
    address: &str,
    locale: &str,
    variables: &Value,
    status: DeliveryStatus,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO notification_deliveries (tenant_id, id, notification_id, channel, address,
             locale, template_key, priority, variables, status, due_at, last_error, created_at,
             updated_at)
         VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $10)",
        &[
            &tx.tenant_id(),
            &Uuid::now_v7(),
            &channel,
            &address,
            &locale,
            &TemplateKey::VerificationCode,
            &Priority::High,
            variables,
            &status,
            &now,
            &reason,
        ],
    )
    .await?;
    Ok(())
}

/// A page of `user`'s notifications, newest first. A plain page walks the recipient's index
/// on a read lane; filters (the text search above all) go to the pool.
pub async fn list(
    db: &TenantDb,
    user: Uuid,
    filter: &NotificationFilter,
) -> Result<Vec<Notification>> {
    let tenant = db.tenant_id();
    let priority = filter.priority;
    let pattern = filter.q.as_ref().map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let limit = filter.page.limit + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &user];
    let mut sql = format!(
        "SELECT {} FROM notifications
         WHERE tenant_id = $1 AND user_id = $2 AND deleted_at IS NULL",
        Notification::COLUMNS
    );
    let mut plain = true;
    if let Some(p) = &priority {
        params.push(p);
        sql += &format!(" AND priority = ${}", params.len());
        plain = false;
    }
    match filter.unread {
        Some(true) => sql += " AND read_at IS NULL",
        Some(false) => sql += " AND read_at IS NOT NULL",
        None => {}
    }
    plain &= filter.unread.is_none();
    if let Some(c) = &filter.category {
        params.push(c);
        sql += &format!(" AND category = ${}", params.len());
        plain = false;
    }
    if let Some(p) = &pattern {
        params.push(p);
        let n = params.len();
        sql += &format!(" AND (title ILIKE ${n} OR body ILIKE ${n})");
        plain = false;
    }
    if let Some(after) = &filter.page.after {
        params.push(after);
        sql += &format!(" AND id < ${}", params.len());
    }
    params.push(&limit);
    sql += &format!(" ORDER BY id DESC LIMIT ${}", params.len());
    let rows = if plain {
        db.read(&sql, &params).await?
    } else {
        db.query(&sql, &params).await?
    };
    rows.iter()
        .map(|r| Notification::from_row(r).map_err(NotifyError::from))
        .collect()
}

/// One of `user`'s notifications with its deliveries.
pub async fn get(db: &TenantDb, user: Uuid, id: Uuid) -> Result<NotificationDetail> {
    let tx = db.begin().await?;
    let tenant = tx.tenant_id();
    let sql = format!(
        "SELECT {} FROM notifications
         WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL",
        Notification::COLUMNS
    );
    let deliveries_sql = format!(
        "SELECT {} FROM notification_deliveries WHERE tenant_id = $1 AND notification_id = $2
         ORDER BY channel",
        Delivery::COLUMNS
    );
    let (one, of): ([&(dyn ToSql + Sync); 3], [&(dyn ToSql + Sync); 2]) =
        ([&tenant, &user, &id], [&tenant, &id]);
    let (row, deliveries) = tokio::join!(tx.query_opt(&sql, &one), tx.query(&deliveries_sql, &of));
    let row = row?.ok_or(NotifyError::NotFound)?;
    let deliveries = deliveries?;
    tx.commit().await?;
    Ok(NotificationDetail {
        notification: Notification::from_row(&row)?,
        deliveries: deliveries.iter().map(Delivery::from_row).collect(),
    })
}

pub async fn unread_count(db: &TenantDb, user: Uuid) -> Result<UnreadCount> {
    let rows = db
        .read(
            "SELECT priority, count(*) FROM notifications
             WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL AND deleted_at IS NULL
             GROUP BY priority",
            &[&db.tenant_id(), &user],
        )
        .await?;
    let mut by = ByPriority::default();
    for row in &rows {
        let n: i64 = row.get(1);
        match Priority::parse(row.get(0))? {
            Priority::Urgent => by.urgent = n,
            Priority::High => by.high = n,
            Priority::Medium => by.medium = n,
            Priority::Low => by.low = n,
        }
    }
    Ok(UnreadCount {
        total: by.urgent + by.high + by.medium + by.low,
        by_priority: by,
    })
}

/// Marks one of `user`'s notifications read (`true`) or unread; returns it.
pub async fn mark(db: &TenantDb, user: Uuid, id: Uuid, read: bool) -> Result<Notification> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE notifications SET read_at = CASE WHEN $4 THEN coalesce(read_at, now()) END
                 WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL
                 RETURNING {}",
                Notification::COLUMNS
            ),
            &[&db.tenant_id(), &user, &id, &read],
        )
        .await?
        .ok_or(NotifyError::NotFound)?;
    Ok(Notification::from_row(&row)?)
}

pub async fn read_all(db: &TenantDb, user: Uuid) -> Result<i64> {
    let row = db
        .query_opt(
            "WITH done AS (
                 UPDATE notifications SET read_at = now()
                 WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL AND deleted_at IS NULL
                 RETURNING 1)
             SELECT count(*) FROM done",
            &[&db.tenant_id(), &user],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Deletes one of `user`'s notifications from the API; its deliveries still finish.
pub async fn delete(db: &TenantDb, user: Uuid, id: Uuid) -> Result<()> {
    let row = db
        .query_opt(
            "UPDATE notifications SET deleted_at = now()
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL
             RETURNING id",
            &[&db.tenant_id(), &user, &id],
        )
        .await?;
    row.map(drop).ok_or(NotifyError::NotFound)
}

/// The recipients of a manual send: every listed user must be a member of this tenant; the
/// listed users and the roles' active members are at most [`super::MAX_FANOUT`].
pub async fn check_recipients(tx: &TenantTx, user_ids: &[Uuid], roles: &[String]) -> Result<()> {
    let tenant = tx.tenant_id();
    let (listed, all): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 3]) =
        ([&tenant, &user_ids], [&tenant, &user_ids, &roles]);
    let found = tx.query(
        "SELECT id FROM users WHERE tenant_id = $1 AND id = ANY($2)",
        &listed,
    );
    let count = tx.query_one(
        "SELECT count(*) FROM users
         WHERE tenant_id = $1 AND is_active AND (id = ANY($2) OR role = ANY($3))",
        &all,
    );
    let (found, count) = tokio::join!(found, count);
    let found: Vec<Uuid> = found?.iter().map(|r| r.get(0)).collect();
    if let Some(i) = user_ids.iter().position(|id| !found.contains(id)) {
        return Err(NotifyError::UnknownRecipient(i));
    }
    if count?.get::<_, i64>(0) > super::MAX_FANOUT {
        return Err(NotifyError::TooManyRecipients(super::MAX_FANOUT));
    }
    Ok(())
}

pub async fn settings(db: &TenantDb) -> Result<Settings> {
    let row = db
        .read_opt(
            "SELECT channels FROM notification_settings WHERE tenant_id = $1",
            &[&db.tenant_id()],
        )
        .await?;
    Ok(match row {
        Some(row) => Settings {
            channels: json_column(&row, "channels")?,
        },
        None => Settings::default(),
    })
}

/// Saves the tenant's settings with their activity (the resource is the tenant).
pub async fn put_settings(
    db: &TenantDb,
    activity: &Recorder,
    settings: &Settings,
) -> Result<Settings> {
    let tx = db.begin().await?;
    let channels = to_json(&settings.channels)?;
    tx.execute(
        "INSERT INTO notification_settings (tenant_id, channels) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET channels = $2, updated_at = now()",
        &[&tx.tenant_id(), &channels],
    )
    .await?;
    let change = Change::new(
        "notification_settings.updated",
        "notification_settings",
        tx.tenant_id(),
    )
    .details(serde_json::json!({ "channels": channels }));
    activity.commit(tx, change).await?;
    Ok(settings.clone())
}

pub async fn preferences(db: &TenantDb, user: Uuid) -> Result<Preferences> {
    let row = db
        .read_opt(
            "SELECT opt_outs, quiet_hours, locale FROM notification_preferences
             WHERE tenant_id = $1 AND user_id = $2",
            &[&db.tenant_id(), &user],
        )
        .await?;
    match row {
        Some(row) => Ok(preferences_of(&row)?),
        None => Ok(Preferences::default()),
    }
}

/// Saves `user`'s preferences with their activity (the resource is the member).
pub async fn put_preferences(
    db: &TenantDb,
    activity: &Recorder,
    user: Uuid,
    p: &Preferences,
) -> Result<Preferences> {
    let tx = db.begin().await?;
    let (opt_outs, quiet_hours) = (
        to_json(&p.opt_outs)?,
        p.quiet_hours.as_ref().map(to_json).transpose()?,
    );
    tx.execute(
        "INSERT INTO notification_preferences (tenant_id, user_id, opt_outs, quiet_hours, locale)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, user_id) DO UPDATE
         SET opt_outs = $3, quiet_hours = $4, locale = $5, updated_at = now()",
        &[&tx.tenant_id(), &user, &opt_outs, &quiet_hours, &p.locale],
    )
    .await?;
    let change = Change::new(
        "notification_preferences.updated",
        "notification_preferences",
        user,
    )
    .details(serde_json::json!({
        "opt_outs": opt_outs, "quiet_hours": quiet_hours, "locale": p.locale
    }));
    activity.commit(tx, change).await?;
    Ok(p.clone())
}

/// A tenant's template, as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Template {
    pub id: Uuid,
    pub key: TemplateKey,
    pub channel: TemplateChannel,
    pub locale: String,
    #[schema(required = true)]
    pub subject: Option<String>,
    pub body: String,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Template {
    const COLUMNS: &'static str = "id, key, channel, locale, subject, body, created_at, updated_at";

    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            key: row.get("key"),
            channel: row.get("channel"),
            locale: row.get("locale"),
            subject: row.get("subject"),
            body: row.get("body"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

/// A validated template to store.
pub struct NewTemplate {
    pub key: TemplateKey,
    pub channel: TemplateChannel,
    pub locale: String,
    pub source: templates::Source,
}

pub async fn templates(db: &TenantDb, page: PageRequest) -> Result<Vec<Template>> {
    let rows = db
        .read(
            &format!(
                "SELECT {} FROM notification_templates
                 WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
                Template::COLUMNS
            ),
            &[&db.tenant_id(), &page.after, &(page.limit + 1)],
        )
        .await?;
    Ok(rows.iter().map(Template::from_row).collect())
}

pub async fn template(db: &TenantDb, id: Uuid) -> Result<Template> {
    db.read_opt(
        &format!(
            "SELECT {} FROM notification_templates WHERE tenant_id = $1 AND id = $2",
            Template::COLUMNS
        ),
        &[&db.tenant_id(), &id],
    )
    .await?
    .map(|r| Template::from_row(&r))
    .ok_or(NotifyError::TemplateNotFound)
}

/// What a template's activity says of it.
fn template_change(action: &'static str, t: &Template) -> Change {
    Change::new(action, "notification_template", t.id).details(serde_json::json!({
        "key": t.key, "channel": t.channel, "locale": t.locale
    }))
}

pub async fn create_template(
    db: &TenantDb,
    activity: &Recorder,
    new: &NewTemplate,
) -> Result<Template> {
    let tx = db.begin().await?;
    // Serialises creates: the cap holds under a race.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 9))",
        &[&tx.tenant_id()],
    )
    .await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM notification_templates WHERE tenant_id = $1",
            &[&tx.tenant_id()],
        )
        .await?
        .get(0);
    if count >= MAX_TEMPLATES {
        return Err(NotifyError::TooManyTemplates);
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO notification_templates (tenant_id, id, key, channel, locale, subject, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
                Template::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &Uuid::now_v7(),
                &new.key,
                &new.channel,
                &new.locale,
                &new.source.subject,
                &new.source.body,
            ],
        )
        .await
        .on_constraint("notification_templates_key_key", || {
            NotifyError::TemplateTaken
        })?;
    let template = Template::from_row(&row);
    activity
        .commit(
            tx,
            template_change("notification_template.created", &template),
        )
        .await?;
    Ok(template)
}

pub async fn update_template(
    db: &TenantDb,
    activity: &Recorder,
    id: Uuid,
    new: &NewTemplate,
) -> Result<Template> {
    let tx = db.begin().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE notification_templates SET key = $3, channel = $4, locale = $5,
                     subject = $6, body = $7,
                     updated_at = CASE WHEN (key, channel, locale, subject, body)
                                            IS DISTINCT FROM ($3, $4, $5, $6, $7)
                                       THEN now() ELSE updated_at END
                 WHERE tenant_id = $1 AND id = $2 RETURNING {}",
                Template::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &id,
                &new.key,
                &new.channel,
                &new.locale,
                &new.source.subject,
                &new.source.body,
            ],
        )
        .await
        .on_constraint("notification_templates_key_key", || {
            NotifyError::TemplateTaken
        })?
        .ok_or(NotifyError::TemplateNotFound)?;
    let template = Template::from_row(&row);
    activity
        .commit(
            tx,
            template_change("notification_template.updated", &template),
        )
        .await?;
    Ok(template)
}

pub async fn delete_template(db: &TenantDb, activity: &Recorder, id: Uuid) -> Result<()> {
    let tx = db.begin().await?;
    let row = tx
        .query_opt(
            &format!(
                "DELETE FROM notification_templates WHERE tenant_id = $1 AND id = $2
                 RETURNING {}",
                Template::COLUMNS
            ),
            &[&tx.tenant_id(), &id],
        )
        .await?
        .ok_or(NotifyError::TemplateNotFound)?;
    activity
        .commit(
            tx,
            template_change("notification_template.deleted", &Template::from_row(&row)),
        )
        .await?;
    Ok(())
}

/// The tenant's own template of `key` on `channel` for the first locale of `chain` that has
/// one (the built-ins come after every tenant template, SPEC §8).
pub async fn tenant_template(
    db: &TenantDb,
    key: TemplateKey,
    channel: TemplateChannel,
    chain: &[String],
) -> Result<Option<templates::Source>, DbError> {
    let row = db
        .read_opt(
            "SELECT subject, body FROM notification_templates
             WHERE tenant_id = $1 AND key = $2 AND channel = $3 AND locale = ANY($4)
             ORDER BY array_position($4, locale) LIMIT 1",
            &[&db.tenant_id(), &key, &channel, &chain],
        )
        .await?;
    Ok(row.map(|r| templates::Source {
        subject: r.get("subject"),
        body: r.get("body"),
    }))
}
