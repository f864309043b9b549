//! Notifications, deliveries, settings and preferences: the API's bodies and their validation.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::commerce::text_enum;
use crate::db::DbError;
use crate::error::{AppError, Fields};
use crate::extract::{PageQuery, PageRequest};
use crate::monitoring::rules::model::{NotifyChannel, Recipients, Severity, object_only};
use crate::types::{self, LanguageTag, TimeOfDay, TimeZone};

text_enum! {
    /// How urgent a notification is: it chooses the channels (settings) and the colour.
    Priority {
        Urgent => "urgent",
        High => "high",
        Medium => "medium",
        Low => "low",
    }
}

text_enum! {
    /// A notification's colour, given by its priority.
    Colour {
        Red => "red",
        Orange => "orange",
        Blue => "blue",
        Green => "green",
    }
}

text_enum! {
    /// What a notification is about.
    SourceType {
        Alert => "alert",
        Rule => "rule",
        Order => "order",
        Trust => "trust",
        System => "system",
        Manual => "manual",
    }
}

text_enum! {
    /// Where a delivery stands. `delivered`, `undelivered`, `failed` and `skipped` are final.
    DeliveryStatus {
        Queued => "queued",
        Sending => "sending",
        Sent => "sent",
        Delivered => "delivered",
        Failed => "failed",
        Undelivered => "undelivered",
        Skipped => "skipped",
    }
}

text_enum! {
    /// What an urgent notification went past for a delivery.
    Bypass {
        OptOut => "opt_out",
        QuietHours => "quiet_hours",
    }
}

impl Priority {
    /// SPEC §8: urgent red, high orange, medium blue, low green.
    pub fn colour(self) -> Colour {
        match self {
            Self::Urgent => Colour::Red,
            Self::High => Colour::Orange,
            Self::Medium => Colour::Blue,
            Self::Low => Colour::Green,
        }
    }

    /// An email's subject prefix (not localised).
    pub fn subject_prefix(self) -> &'static str {
        match self {
            Self::Urgent => "[URGENT] ",
            Self::High => "[HIGH] ",
            Self::Medium => "[MEDIUM] ",
            Self::Low => "[LOW] ",
        }
    }

    /// An alert's severity as a priority: critical is urgent, the others keep their name.
    pub fn of_severity(severity: Severity) -> Self {
        match severity {
            Severity::Critical => Self::Urgent,
            Severity::High => Self::High,
            Severity::Medium => Self::Medium,
            Severity::Low => Self::Low,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DbError> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| DbError::Decode(format!("priority {raw}")))
    }
}

/// What a notification is about: `{type, id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Source {
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// The alert, order, ... it is about; for `manual`, the member who sent it.
    #[schema(required = true)]
    pub id: Option<Uuid>,
}

/// A stored notification, as its recipient sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub priority: Priority,
    pub colour: Colour,
    pub category: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub source: Source,
    #[serde(serialize_with = "crate::types::timestamp_opt")]
    #[schema(required = true)]
    pub read_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Notification {
    pub const COLUMNS: &'static str = "id, title, body, priority, category, metadata, source_type, source_id, read_at, created_at";

    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        let priority = Priority::parse(row.get("priority"))?;
        Ok(Self {
            id: row.get("id"),
            title: row.get("title"),
            body: row.get("body"),
            priority,
            colour: priority.colour(),
            category: row.get("category"),
            metadata: row.get("metadata"),
            source: Source {
                kind: row.get("source_type"),
                id: row.get("source_id"),
            },
            read_at: row.get("read_at"),
            created_at: row.get("created_at"),
        })
    }
}

/// One channel's delivery of a notification.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub channel: NotifyChannel,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// Why it failed, was skipped or is being retried.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// The email's Message-ID or Twilio's message sid, once the provider accepted it.
    #[schema(required = true)]
    pub provider_id: Option<String>,
    /// What an urgent notification went past for this delivery (the user's opt-out, quiet
    /// hours); empty otherwise.
    pub bypassed: Vec<Bypass>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    pub const COLUMNS: &'static str =
        "channel, status, attempts, last_error, provider_id, bypassed, updated_at";

    pub fn from_row(row: &Row) -> Self {
        let bypassed: Vec<String> = row.get("bypassed");
        Self {
            channel: row.get("channel"),
            status: row.get("status"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
            provider_id: row.get("provider_id"),
            bypassed: bypassed
                .iter()
                .filter_map(|b| Bypass::ALL.iter().copied().find(|x| x.as_str() == b))
                .collect(),
            updated_at: row.get("updated_at"),
        }
    }
}

/// A notification with its deliveries (`GET /api/v1/notifications/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationDetail {
    #[serde(flatten)]
    pub notification: Notification,
    pub deliveries: Vec<Delivery>,
}

pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 2000;

/// `text` cut to at most `max` characters (on a character boundary), ending in ASCII `...`
/// when cut: for the titles and bodies the service builds from data of its own bounds (a
/// customer's name, a rule's name), which can add up to more than a notification holds.
pub fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(3)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push_str("...");
    cut
}
pub const MAX_CATEGORY: usize = 64;
/// A notification's metadata, as JSON text.
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_RECIPIENTS: usize = 100;

/// A locale as every notification field takes it (templates, preview, preferences): a BCP
/// 47 language tag of at most 35 characters, `_` read as `-`, kept in its canonical
/// spelling, so `PT_br`, `pt-br` and `pt-BR` are one locale: the language in lower case, a
/// region in upper case (`BR`, `419`), a script in title case (`Hant`), anything else in
/// lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub const MAX_LEN: usize = 35;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().replace('_', "-");
        if s.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        let tag = LanguageTag::parse(&s).map_err(|_| {
            "must be a language tag such as en, pt or pt-BR (pt_BR is read as pt-BR)".to_string()
        })?;
        let canonical = tag
            .as_str()
            .split('-')
            .enumerate()
            .map(|(i, part)| match (i, part.len()) {
                (0, _) => part.to_ascii_lowercase(),
                (_, 2) => part.to_ascii_uppercase(),
                (_, 4) if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    let mut p = part.to_ascii_lowercase();
                    p[..1].make_ascii_uppercase();
                    p
                }
                _ => part.to_ascii_lowercase(),
            })
            .collect::<Vec<_>>()
            .join("-");
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The locales a template is looked for in, in order: this one, each shorter prefix,
    /// then English (`pt-BR`: `pt-BR`, `pt`, `en`).
    pub fn fallbacks(&self) -> Vec<String> {
        let mut chain = vec![self.0.clone()];
        let mut rest = self.0.as_str();
        while let Some((shorter, _)) = rest.rsplit_once('-') {
            chain.push(shorter.to_string());
            rest = shorter;
        }
        if rest != "en" {
            chain.push("en".into());
        }
        chain
    }
}

/// `POST /api/v1/notifications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Stock check", "body": "Count the shelves before 6 pm.",
    "priority": "medium", "category": "operations", "recipients": {"roles": ["staff"]}}))]
pub struct SendNotification {
    /// Default: the tenant's owners and admins. Users must be of this tenant (422 naming
    /// `recipients.user_ids[i]` otherwise).
    #[serde(default, deserialize_with = "object_only")]
    pub recipients: Option<Recipients>,
    #[schema(schema_with = types::schema::name::<200>)]
    pub title: String,
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    pub body: String,
    pub priority: Priority,
    /// Default (also `null`): `general`.
    #[serde(default)]
    #[schema(schema_with = category_or_null_schema)]
    pub category: Option<String>,
    /// A JSON object of at most 4096 bytes; default (also `null`): `{}`.
    #[serde(default)]
    #[schema(value_type = Object, nullable)]
    pub metadata: Option<Map<String, Value>>,
}

/// What [`category`] accepts, or `null`.
fn category_or_null_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(CATEGORY_PATTERN))
        .description(Some(
            "A category (as `category` of a notification); `null`: every category.",
        ))
        .build()
}

const CATEGORY_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

/// A category: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn category(raw: &str) -> Result<String, String> {
    let ok = (1..=MAX_CATEGORY).contains(&raw.len())
        && raw.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || (i > 0 && matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(raw.to_string())
    } else {
        Err("must be 1-64 lower-case letters, digits, '.', '_' or '-'".into())
    }
}

/// A validated manual send.
pub struct ManualSend {
    pub user_ids: Vec<Uuid>,
    pub roles: Vec<crate::tenancy::model::Role>,
    pub title: String,
    pub body: String,
    pub priority: Priority,
    pub category: String,
    pub metadata: Value,
}

impl SendNotification {
    pub fn validate(self) -> Result<ManualSend, AppError> {
        let mut f = Fields::default();
        let title = f.check("title", types::name(&self.title, MAX_TITLE));
        let body = f.check("body", body_text(&self.body));
        let category = f.check(
            "category",
            category(self.category.as_deref().unwrap_or("general")),
        );
        let metadata = f.check("metadata", metadata(self.metadata));
        let (user_ids, roles) = match self.recipients {
            None => (Vec::new(), Vec::new()),
            Some(r) => (r.user_ids.unwrap_or_default(), r.roles.unwrap_or_default()),
        };
        if roles.len() > 3 {
            f.fail("recipients.roles", "lists at most 3 roles");
        }
        for (i, role) in roles.iter().enumerate() {
            if roles[..i].contains(role) {
                f.fail(format!("recipients.roles[{i}]"), "is listed twice");
            }
        }
        if user_ids.len() > MAX_RECIPIENTS {
            f.fail(
                "recipients.user_ids",
                format!("lists at most {MAX_RECIPIENTS} users"),
            );
        }
        let defaulted = user_ids.is_empty() && roles.is_empty();
        f.finish(|| {
            Some(ManualSend {
                user_ids,
                roles: if defaulted {
                    vec![
                        crate::tenancy::model::Role::Owner,
                        crate::tenancy::model::Role::Admin,
                    ]
                } else {
                    roles
                },
                title: title?,
                body: body?,
                priority: self.priority,
                category: category?,
                metadata: metadata?,
            })
        })
    }
}

/// A body: at most [`MAX_BODY`] characters, no NUL (may be empty).
pub fn body_text(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.chars().count() > MAX_BODY {
        return Err(format!("must be at most {MAX_BODY} characters"));
    }
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(s.to_string())
}

fn metadata(raw: Option<Map<String, Value>>) -> Result<Value, String> {
    let value = Value::Object(raw.unwrap_or_default());
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(format!(
            "must be at most {MAX_METADATA_BYTES} bytes of JSON"
        ));
    }
    if value.to_string().contains("\\u0000") {
        return Err("must not contain NUL characters".into());
    }
    Ok(value)
}

/// `201` of a send: the notifications stored, one per recipient.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    pub notification_ids: Vec<Uuid>,
}

/// `GET /api/v1/notifications` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    pub priority: Option<Priority>,
    /// true: only unread; false: only read.
    pub unread: Option<bool>,
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub category: Option<String>,
    /// Matches the title or body, case-insensitively (1-100 characters).
    #[param(min_length = 1, max_length = 100, pattern = r"^[^\x00]*$")]
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// What a list asks for, parsed.
pub struct NotificationFilter {
    pub priority: Option<Priority>,
    pub unread: Option<bool>,
    pub category: Option<String>,
    pub q: Option<String>,
    pub page: PageRequest,
}

impl NotificationQuery {
    pub fn parse(self) -> Result<NotificationFilter, AppError> {
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .parse()?;
        let mut f = Fields::default();
        let category = self.category.map(|c| f.check("category", category(&c)));
        let q = match self.q {
            Some(q) if q.is_empty() || q.chars().count() > 100 || q.contains('\0') => {
                f.fail("q", "must be 1-100 characters without NUL");
                None
            }
            other => other,
        };
        f.finish(|| {
            Some(NotificationFilter {
                priority: self.priority,
                unread: self.unread,
                category: match category {
                    Some(c) => Some(c?),
                    None => None,
                },
                q,
                page,
            })
        })
    }
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ByPriority {
    pub urgent: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadCount {
    pub total: i64,
    pub by_priority: ByPriority,
}

/// `POST .../read-all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadAll {
    /// How many notifications were unread and are read now.
    pub updated: i64,
}

/// The channels of each priority (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsByPriority {
    #[schema(max_items = 3)]
    pub urgent: Vec<NotifyChannel>,
    #[schema(max_items = 3)]
    pub high: Vec<NotifyChannel>,
    #[schema(max_items = 3)]
    pub medium: Vec<NotifyChannel>,
    #[schema(max_items = 3)]
    pub low: Vec<NotifyChannel>,
}

impl ChannelsByPriority {
    pub fn of(&self, priority: Priority) -> &[NotifyChannel] {
        match priority {
            Priority::Urgent => &self.urgent,
            Priority::High => &self.high,
            Priority::Medium => &self.medium,
            Priority::Low => &self.low,
        }
    }
}

/// `GET|PUT /api/v1/notifications/settings`: the tenant's channels by priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channels": {"urgent": ["in_app", "email", "sms"],
    "high": ["in_app", "email"], "medium": ["in_app"], "low": ["in_app"]}}))]
pub struct Settings {
    pub channels: ChannelsByPriority,
}

impl Default for Settings {
    /// Urgent: in-app, email and SMS; high: in-app and email; else in-app.
    fn default() -> Self {
        use NotifyChannel::*;
        Self {
            channels: ChannelsByPriority {
                urgent: vec![InApp, Email, Sms],
                high: vec![InApp, Email],
                medium: vec![InApp],
                low: vec![InApp],
            },
        }
    }
}

impl Settings {
    pub fn validate(self) -> Result<Self, AppError> {
        let mut f = Fields::default();
        for priority in Priority::ALL {
            let list = self.channels.of(*priority);
            for (i, c) in list.iter().enumerate() {
                if list[..i].contains(c) {
                    f.fail(
                        format!("channels.{}[{i}]", priority.as_str()),
                        "is listed twice",
                    );
                }
            }
        }
        f.finish(|| Some(self))
    }
}

/// One opt-out: a channel, for one category or (no category) for everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptOut {
    pub channel: NotifyChannel,
    /// None: the whole channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = category_or_null_schema, required = false)]
    pub category: Option<String>,
}

/// Non-urgent email and SMS wait while these hours last, in `timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// An IANA time zone, e.g. `America/Sao_Paulo`.
    pub timezone: String,
    /// `HH:MM`; an `end` before `start` crosses midnight.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: String,
}

pub const MAX_OPT_OUTS: usize = 50;

/// A field that must be sent, `null` included (serde takes a missing `Option` as `None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(deserializer)
}

/// `GET|PUT /api/v1/notifications/preferences`: the caller's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"opt_outs": [{"channel": "sms", "category": null},
    {"channel": "email", "category": "orders"}],
    "quiet_hours": {"timezone": "America/Sao_Paulo", "start": "22:00", "end": "07:00"},
    "locale": "pt-BR"}))]
pub struct Preferences {
    #[schema(max_items = 50)]
    pub opt_outs: Vec<OptOut>,
    /// Sent every time (PUT replaces the document): `null` for none.
    #[serde(deserialize_with = "present")]
    #[schema(required = true)]
    pub quiet_hours: Option<QuietHours>,
    /// The language of email and SMS (templates fall back pt-BR -> pt -> en); stored and
    /// shown in its canonical spelling (`pt_br` is `pt-BR`).
    #[schema(pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$", max_length = 35)]
    pub locale: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            opt_outs: Vec::new(),
            quiet_hours: None,
            locale: "en".into(),
        }
    }
}

impl Preferences {
    pub fn validate(self) -> Result<Self, AppError> {
        let mut f = Fields::default();
        if self.opt_outs.len() > MAX_OPT_OUTS {
            f.fail("opt_outs", format!("lists at most {MAX_OPT_OUTS}"));
        }
        let mut seen = BTreeSet::new();
        for (i, o) in self.opt_outs.iter().enumerate() {
            if let Some(c) = &o.category {
                f.check(format!("opt_outs[{i}].category"), category(c));
            }
            if !seen.insert((o.channel.as_str(), o.category.clone())) {
                f.fail(format!("opt_outs[{i}]"), "is listed twice");
            }
        }
        if let Some(q) = &self.quiet_hours {
            f.check("quiet_hours.timezone", TimeZone::parse(&q.timezone));
            let start = f.check("quiet_hours.start", TimeOfDay::parse(&q.start));
            let end = f.check("quiet_hours.end", TimeOfDay::parse(&q.end));
            if start.is_some() && start == end {
                f.fail("quiet_hours.end", "must differ from start");
            }
        }
        let locale = f.check("locale", Locale::parse(&self.locale));
        f.finish(|| {
            Some(Self {
                locale: locale?.0,
                ..self
            })
        })
    }

    /// Whether the user opted out of `channel` for `category`.
    pub fn opted_out(&self, channel: NotifyChannel, category: &str) -> bool {
        self.opt_outs
            .iter()
            .any(|o| o.channel == channel && o.category.as_deref().is_none_or(|c| c == category))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_on_a_char_boundary_with_ascii_dots() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit(&"a".repeat(10), 10), "a".repeat(10));
        let cut = fit(&"ã".repeat(300), MAX_TITLE);
        assert_eq!(cut.chars().count(), MAX_TITLE);
        assert!(cut.ends_with("ã..."));
        assert_eq!(fit("word word word", 10), "word wo...");
        assert_eq!(fit("word word word", 8), "word...");
    }

    #[test]
    fn locales_are_read_in_one_canonical_spelling() {
        for raw in ["pt-BR", "pt-br", "PT-br", "pt_br", "PT_BR", " pt-BR "] {
            assert_eq!(Locale::parse(raw).unwrap().as_str(), "pt-BR", "{raw}");
        }
        assert_eq!(Locale::parse("ZH_hant_tw").unwrap().as_str(), "zh-Hant-TW");
        assert_eq!(Locale::parse("es-419").unwrap().as_str(), "es-419");
        assert_eq!(Locale::parse("EN").unwrap().as_str(), "en");
        for bad in [
            "",
            "p",
            "english",
            "pt-",
            "pt--BR",
            "pt BR",
            "pt-BRAZILIAN1",
            "ç",
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
        assert!(Locale::parse(&format!("en-{}", "-abcdefgh".repeat(4))).is_err());
        assert_eq!(
            Locale::parse("pt_br").unwrap().fallbacks(),
            ["pt-BR", "pt", "en"]
        );
        assert_eq!(
            Locale::parse("zh-Hant-TW").unwrap().fallbacks(),
            ["zh-Hant-TW", "zh-Hant", "zh", "en"]
        );
        assert_eq!(Locale::parse("en-GB").unwrap().fallbacks(), ["en-GB", "en"]);
        assert_eq!(Locale::parse("en").unwrap().fallbacks(), ["en"]);
    }
}
