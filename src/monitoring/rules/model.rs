//! Rules and alerts: request and response bodies, validation, and the compiled rule the
//! engine evaluates.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::condition::{Condition, EventFields, Field, FieldValue};
use super::schedule::{Schedule, ScheduleBody};
use super::window::Evaluator;
use crate::db::DbError;
use crate::error::{AppError, Fields};
use crate::tenancy::model::Role;
use crate::types;

pub const MAX_GROUP_BY: usize = 5;
pub const MAX_COUNT: i64 = 10_000;
/// Seven days.
pub const MAX_WINDOW_SECONDS: i64 = 604_800;
/// Thirty days.
pub const MAX_COOLDOWN_SECONDS: i64 = 2_592_000;
pub const MAX_RECIPIENTS: usize = 100;
/// Custom rules per tenant (built-ins not counted).
pub const MAX_CUSTOM_RULES: i64 = 100;

/// The built-in whose threshold is the tenant's own baseline.
pub const VOLUME_ANOMALY: &str = "request_volume_anomaly";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    fn parse(raw: &str) -> Result<Self, DbError> {
        Ok(match raw {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "critical" => Self::Critical,
            other => return Err(DbError::Decode(format!("severity {other}"))),
        })
    }

    /// SPEC §7: low 24 h, medium 12 h, high 6 h, critical 1 h.
    pub fn default_cooldown_seconds(self) -> i64 {
        match self {
            Self::Low => 86_400,
            Self::Medium => 43_200,
            Self::High => 21_600,
            Self::Critical => 3_600,
        }
    }
}

crate::commerce::text_enum! {
    /// A channel a notification is delivered on (SPEC §8); also the channels an alert's
    /// notification may use.
    NotifyChannel {
        InApp => "in_app",
        Email => "email",
        Sms => "sms",
    }
}

/// Who an alert notifies; `null` on the rule: the tenant's owners and admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// Users of this tenant.
    #[schema(max_items = 100)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
}

/// A sliding window: fires when `count` matching events fall within the last
/// `window_seconds`, counted per distinct value of the `group_by` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdBody {
    #[schema(minimum = 1, maximum = 10000)]
    pub count: i64,
    #[schema(minimum = 1, maximum = 604800)]
    pub window_seconds: i64,
    /// Activity fields or `details.<key>`, at most 5.
    #[serde(default)]
    #[schema(max_items = 5)]
    pub group_by: Vec<String>,
}

/// A rule as sent by POST and PUT. PUT also accepts the read-only fields a GET returns
/// (`id`, `key`, `builtin`, `created_at`, `updated_at`) and ignores them, so a GET body can be
/// sent back.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Repeated failed logins",
    "severity": "high",
    "condition": {"all": [
        {"field": "action", "op": "eq", "value": "auth.failed"},
        {"field": "ip", "op": "exists", "value": true}
    ]},
    "threshold": {"count": 5, "window_seconds": 300, "group_by": ["ip"]}
}))]
pub struct RuleBody {
    #[schema(schema_with = types::schema::name::<100>)]
    pub name: String,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    pub severity: Severity,
    /// `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or a leaf
    /// `{"field", "op", "value"}`; ops eq, ne, gt, gte, lt, lte, in, not_in, contains,
    /// starts_with, ends_with, regex, exists. At most 8 levels and 64 nodes.
    #[schema(value_type = Object)]
    pub condition: Value,
    #[serde(default, deserialize_with = "object_only")]
    pub threshold: Option<ThresholdBody>,
    #[serde(default, deserialize_with = "object_only")]
    pub schedule: Option<ScheduleBody>,
    /// Default: the severity's (low 86400, medium 43200, high 21600, critical 3600).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2592000)]
    pub cooldown_seconds: Option<i64>,
    #[serde(default)]
    #[schema(max_items = 3)]
    pub channels: Option<Vec<NotifyChannel>>,
    #[serde(default, deserialize_with = "object_only")]
    pub recipients: Option<Recipients>,
    #[serde(default)]
    #[schema(read_only)]
    pub id: Option<Uuid>,
    #[serde(default)]
    #[schema(read_only)]
    pub key: Option<String>,
    #[serde(default)]
    #[schema(read_only)]
    pub builtin: Option<bool>,
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: Option<String>,
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: Option<String>,
}

/// A validated rule, ready to store.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub name: String,
    pub enabled: bool,
    pub severity: Severity,
    pub condition: Value,
    pub threshold: Option<ThresholdBody>,
    pub schedule: Option<ScheduleBody>,
    pub cooldown_seconds: Option<i64>,
    pub channels: Option<Vec<NotifyChannel>>,
    pub recipients: Option<Recipients>,
}

impl RuleBody {
    /// Validates every field, naming faults by their path under `prefix` (`""` or `"rule."`).
    pub fn validate(self, prefix: &str) -> Result<(NewRule, CompiledParts), AppError> {
        let mut f = Fields::default();
        let name = f.check(format!("{prefix}name"), types::name(&self.name, 100));
        let parts = CompiledParts::parse(
            &self.condition,
            self.threshold.as_ref(),
            self.schedule.as_ref(),
            prefix,
            &mut f,
        );
        if let Some(c) = self.cooldown_seconds
            && !(1..=MAX_COOLDOWN_SECONDS).contains(&c)
        {
            f.fail(
                format!("{prefix}cooldown_seconds"),
                format!("must be 1-{MAX_COOLDOWN_SECONDS}"),
            );
        }
        if let Some(channels) = &self.channels {
            for (i, c) in channels.iter().enumerate() {
                if channels[..i].contains(c) {
                    f.fail(format!("{prefix}channels[{i}]"), "is listed twice");
                }
            }
        }
        if let Some(r) = &self.recipients {
            if r.user_ids
                .as_ref()
                .is_some_and(|u| u.len() > MAX_RECIPIENTS)
            {
                f.fail(
                    format!("{prefix}recipients.user_ids"),
                    format!("lists at most {MAX_RECIPIENTS} users"),
                );
            }
            if let Some(roles) = &r.roles {
                for (i, role) in roles.iter().enumerate() {
                    if roles[..i].contains(role) {
                        f.fail(format!("{prefix}recipients.roles[{i}]"), "is listed twice");
                    }
                }
            }
        }
        f.finish(|| {
            Some((
                NewRule {
                    name: name?,
                    enabled: self.enabled.unwrap_or(true),
                    severity: self.severity,
                    condition: self.condition,
                    threshold: self.threshold,
                    schedule: self.schedule,
                    cooldown_seconds: self.cooldown_seconds,
                    channels: self.channels,
                    recipients: self.recipients,
                },
                parts?,
            ))
        })
    }
}

/// The parsed condition, threshold and schedule.
#[derive(Debug, Clone)]
pub struct CompiledParts {
    pub condition: Condition,
    pub schedule: Option<Schedule>,
    pub group_by: Vec<Field>,
    pub count: usize,
    pub window: Duration,
}

impl CompiledParts {
    pub fn parse(
        condition: &Value,
        threshold: Option<&ThresholdBody>,
        schedule: Option<&ScheduleBody>,
        prefix: &str,
        f: &mut Fields,
    ) -> Option<Self> {
        let condition = Condition::parse(condition, &format!("{prefix}condition"), f);
        let schedule = schedule.map(|s| Schedule::parse(s, &format!("{prefix}schedule"), f));
        let mut group_by = Vec::new();
        let (mut count, mut window) = (1, Duration::seconds(1));
        if let Some(t) = threshold {
            let at = format!("{prefix}threshold");
            if !(1..=MAX_COUNT).contains(&t.count) {
                f.fail(format!("{at}.count"), format!("must be 1-{MAX_COUNT}"));
            }
            if !(1..=MAX_WINDOW_SECONDS).contains(&t.window_seconds) {
                f.fail(
                    format!("{at}.window_seconds"),
                    format!("must be 1-{MAX_WINDOW_SECONDS} (7 days)"),
                );
            }
            if t.group_by.len() > MAX_GROUP_BY {
                f.fail(
                    format!("{at}.group_by"),
                    format!("lists at most {MAX_GROUP_BY} fields"),
                );
            }
            for (i, name) in t.group_by.iter().enumerate() {
                let field = format!("{at}.group_by[{i}]");
                if let Some(parsed) = f.check(field.clone(), Field::parse(name)) {
                    if group_by.contains(&parsed) {
                        f.fail(field, "is listed twice");
                    } else {
                        group_by.push(parsed);
                    }
                }
            }
            count = t.count.clamp(1, MAX_COUNT) as usize;
            window = Duration::seconds(t.window_seconds.clamp(1, MAX_WINDOW_SECONDS));
        }
        Some(Self {
            condition: condition?,
            schedule: match schedule {
                Some(parsed) => Some(parsed?),
                None => None,
            },
            group_by,
            count,
            window,
        })
    }

    /// Whether `event` matches: inside the schedule (at the event's own time) and the
    /// condition holds.
    pub fn matches(&self, event: &dyn EventFields, at: DateTime<Utc>) -> bool {
        self.schedule.as_ref().is_none_or(|s| s.contains(at)) && self.condition.matches(event)
    }

    /// The group an event counts in: the `group_by` values as a JSON object (`""` when the
    /// rule has no groups).
    pub fn group_key(&self, event: &dyn EventFields) -> String {
        if self.group_by.is_empty() {
            return String::new();
        }
        let mut key = serde_json::Map::new();
        for field in &self.group_by {
            let value = match event.field(field) {
                None => Value::Null,
                Some(FieldValue::Text(s)) => Value::String(s.into_owned()),
                Some(FieldValue::Number(n)) => serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Some(FieldValue::Bool(b)) => Value::Bool(b),
                Some(FieldValue::Time(t)) => Value::String(t.to_rfc3339()),
                Some(FieldValue::Json(v)) => v.clone(),
            };
            key.insert(field.name().into_owned(), value);
        }
        Value::Object(key).to_string()
    }
}

/// A stored rule as the engine runs it.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: Uuid,
    pub key: Option<String>,
    pub name: String,
    pub severity: Severity,
    pub parts: CompiledParts,
    pub evaluator: Evaluator,
    /// Who its alerts notify and on which channels (`None`: the defaults, SPEC §8).
    pub channels: Option<Vec<NotifyChannel>>,
    pub recipients: Option<Recipients>,
}

impl CompiledRule {
    /// Compiles a stored rule; `None` (logged) when it no longer parses, which only a schema
    /// change could cause.
    pub fn from_rule(rule: &Rule) -> Option<Self> {
        let mut f = Fields::default();
        let parts = CompiledParts::parse(
            &rule.condition,
            rule.threshold.as_ref(),
            rule.schedule.as_ref(),
            "",
            &mut f,
        );
        let parts = match f.finish(|| parts) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(rule_id = %rule.id, error = %e, "a stored rule does not compile");
                return None;
            }
        };
        let cooldown = Duration::seconds(rule.cooldown_seconds);
        let evaluator = if rule.key.as_deref() == Some(VOLUME_ANOMALY) {
            Evaluator::Baseline {
                bucket: parts.window,
                min_count: parts.count as i64,
                cooldown,
            }
        } else {
            Evaluator::Threshold {
                count: parts.count,
                window: parts.window,
                cooldown,
            }
        };
        Some(Self {
            id: rule.id,
            key: rule.key.clone(),
            name: rule.name.clone(),
            severity: rule.severity,
            parts,
            evaluator,
            channels: rule.channels.clone(),
            recipients: rule.recipients.clone(),
        })
    }
}

/// A rule as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rule {
    pub id: Uuid,
    /// Built-ins only: `auth_failure_burst`, `server_error_burst`, `destructive_delete`,
    /// `rate_limit_hammering`, `request_volume_anomaly`.
    #[schema(required = true)]
    pub key: Option<String>,
    pub builtin: bool,
    pub name: String,
    pub enabled: bool,
    pub severity: Severity,
    #[schema(value_type = Object)]
    pub condition: Value,
    #[schema(required = true)]
    pub threshold: Option<ThresholdBody>,
    #[schema(required = true)]
    pub schedule: Option<ScheduleBody>,
    /// The effective cooldown: as written, else the severity's default.
    pub cooldown_seconds: i64,
    #[schema(required = true)]
    pub channels: Option<Vec<NotifyChannel>>,
    #[schema(required = true)]
    pub recipients: Option<Recipients>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

fn json_opt<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> Result<Option<T>, DbError> {
    let value: Option<Value> = row.get(name);
    value
        .map(|v| serde_json::from_value(v).map_err(|e| DbError::Decode(format!("{name}: {e}"))))
        .transpose()
}

impl Rule {
    pub const COLUMNS: &'static str = "id, key, name, enabled, severity, condition, threshold, schedule, cooldown_seconds, channels, recipients, created_at, updated_at";

    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        let severity = Severity::parse(row.get("severity"))?;
        let cooldown: Option<i32> = row.get("cooldown_seconds");
        let key: Option<String> = row.get("key");
        Ok(Self {
            id: row.get("id"),
            builtin: key.is_some(),
            key,
            name: row.get("name"),
            enabled: row.get("enabled"),
            severity,
            condition: row.get("condition"),
            threshold: json_opt(row, "threshold")?,
            schedule: json_opt(row, "schedule")?,
            cooldown_seconds: cooldown.map_or(severity.default_cooldown_seconds(), i64::from),
            channels: json_opt(row, "channels")?,
            recipients: json_opt(row, "recipients")?,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        })
    }

    /// The fields a PUT may set that differ between `self` and `after`, in the body's order
    /// (`cooldown_seconds` as effective).
    pub fn changes(&self, after: &Rule) -> Vec<&'static str> {
        let (before, after) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(after).unwrap_or_default(),
        );
        [
            "name",
            "enabled",
            "severity",
            "condition",
            "threshold",
            "schedule",
            "cooldown_seconds",
            "channels",
            "recipients",
        ]
        .into_iter()
        .filter(|field| before.get(field) != after.get(field))
        .collect()
    }

    /// On a built-in, PUT may change only enabled, severity, cooldown_seconds, channels and
    /// recipients: the first other field that differs.
    pub fn fixed_field_changed(&self, new: &NewRule) -> Option<&'static str> {
        if new.name != self.name {
            Some("name")
        } else if new.condition != self.condition {
            Some("condition")
        } else if new.threshold != self.threshold {
            Some("threshold")
        } else if new.schedule != self.schedule {
            Some("schedule")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    fn parse(raw: &str) -> Result<Self, DbError> {
        Ok(match raw {
            "firing" => Self::Firing,
            "acknowledged" => Self::Acknowledged,
            "resolved" => Self::Resolved,
            other => return Err(DbError::Decode(format!("alert status {other}"))),
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    pub id: Uuid,
    /// `null` once the rule was deleted (its alerts stay).
    #[schema(required = true)]
    pub rule_id: Option<Uuid>,
    pub severity: Severity,
    pub status: AlertStatus,
    /// The `group_by` values as a JSON object text; empty for a rule without groups.
    pub group_key: String,
    pub event_count: i64,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub first_event_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub last_event_at: DateTime<Utc>,
    /// Up to 10 of the activities that made it fire, newest first.
    pub sample_activity_ids: Vec<Uuid>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp_opt")]
    #[schema(required = true)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::types::timestamp_opt")]
    #[schema(required = true)]
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    pub const COLUMNS: &'static str = "id, rule_id, severity, status, group_key, event_count, first_event_at, last_event_at, sample_activity_ids, created_at, acknowledged_at, resolved_at";

    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id"),
            rule_id: row.get("rule_id"),
            severity: Severity::parse(row.get("severity"))?,
            status: AlertStatus::parse(row.get("status"))?,
            group_key: row.get("group_key"),
            event_count: row.get("event_count"),
            first_event_at: row.get("first_event_at"),
            last_event_at: row.get("last_event_at"),
            sample_activity_ids: row.get("sample_activity_ids"),
            created_at: row.get("created_at"),
            acknowledged_at: row.get("acknowledged_at"),
            resolved_at: row.get("resolved_at"),
        })
    }
}

/// `POST .../rules/test`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRule {
    pub rule: RuleBody,
    /// Any subset of an activity's fields (`created_at` RFC 3339; `details` an object).
    #[schema(value_type = Object)]
    pub event: serde_json::Map<String, Value>,
}

/// An optional JSON object: serde would also read a struct from an array of its fields, which
/// the document does not allow. The object is read in place (not through a `Value`), so a
/// fault inside it is named by its whole path (`schedule.windows[0].days`).
pub(crate) fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_option(ObjectOnly(std::marker::PhantomData))
}

struct ObjectOnly<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(serde::de::Error::custom(NOT_AN_OBJECT))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
}

const NOT_AN_OBJECT: &str = "must be an object";

/// The longest range a backtest replays, and the most activities it reads of it.
pub const MAX_BACKTEST_DAYS: i64 = 31;
pub const MAX_BACKTEST_EVENTS: usize = 20_000;

/// `POST .../rules/{id}/backtest`: the past range to replay, at most 31 days.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRange {
    pub since: DateTime<Utc>,
    /// After `since`, at most 31 days after it.
    pub until: DateTime<Utc>,
}

/// One alert a backtest found.
#[derive(Debug, Serialize, ToSchema)]
pub struct BacktestAlert {
    pub group_key: String,
    pub event_count: i64,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub sample_activity_ids: Vec<Uuid>,
}

/// What a rule would have raised over a past range of the activity log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backtest {
    /// How many alerts it would have raised (each cooldown honoured).
    pub alerts: u64,
    /// The activities of the range that were read, oldest first (at most 20,000).
    pub scanned: u64,
    /// The range held more activities than were read: the figures cover the oldest ones.
    pub truncated: bool,
    /// The first 20 of those alerts.
    pub samples: Vec<BacktestAlert>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestOutcome {
    pub matched: bool,
    /// One line per condition node and for the schedule; a threshold is not applied to a
    /// single event and says so.
    pub reasons: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub severity: Option<Severity>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fault(body: Value) -> (String, String) {
        let err = serde_path_to_error::deserialize::<_, RuleBody>(body).unwrap_err();
        (err.path().to_string(), err.inner().to_string())
    }

    #[test]
    fn an_optional_object_is_an_object_and_its_faults_keep_their_path() {
        let rule = json!({"name": "r", "severity": "low", "condition": {}});
        let mut array = rule.clone();
        array["threshold"] = json!([5, 300]);
        assert_eq!(
            fault(array),
            ("threshold".to_string(), NOT_AN_OBJECT.to_string())
        );
        let mut window = rule.clone();
        window["schedule"] =
            json!({"timezone": "UTC", "windows": [{"days": ["mon"], "start": "09:00"}]});
        assert_eq!(
            fault(window),
            (
                "schedule.windows[0]".to_string(),
                "missing field `end`".to_string()
            )
        );
        let mut null = rule;
        null["threshold"] = Value::Null;
        let read: RuleBody = serde_json::from_value(null).unwrap();
        assert!(read.threshold.is_none());
    }
}
