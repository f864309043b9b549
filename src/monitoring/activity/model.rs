//! Activity records: what the log stores and what a recorder fills in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{AppError, FieldError};
use crate::extract::{PageQuery, PageRequest};
use crate::scope::RequestFacts;

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    User,
    ApiKey,
    System,
}

impl ActorType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::System => "system",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "api_key" => Self::ApiKey,
            "system" => Self::System,
            _ => Self::User,
        }
    }
}

/// What kind of activity it is (a filter of the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Auth,
    Data,
    Request,
    Security,
    Trust,
    System,
}

impl Category {
    pub const ALL: [Self; 6] = [
        Self::Auth,
        Self::Data,
        Self::Request,
        Self::Security,
        Self::Trust,
        Self::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Data => "data",
            Self::Request => "request",
            Self::Security => "security",
            Self::Trust => "trust",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One activity, as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Activity {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The user's id (for `api_key` the key's id; null for `system`).
    pub actor: Option<Uuid>,
    pub actor_type: ActorType,
    /// `request`, `auth.failed`, `rate_limited` or `<resource>.<verb>` (docs/MONITORING.md).
    #[schema(example = "product.created")]
    pub action: String,
    pub category: Category,
    pub method: Option<String>,
    /// The route template, e.g. `/api/v1/products/{id}`.
    pub route: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub status: Option<i16>,
    pub latency_ms: Option<i32>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request's `X-Request-ID`.
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Activity {
    pub const COLUMNS: &'static str = "id, tenant_id, actor, actor_type, action, category, \
        method, route, resource_type, resource_id, status, latency_ms, ip, user_agent, \
        request_id, details, created_at";

    pub fn from_row(r: &Row) -> Self {
        Self {
            id: r.get(0),
            tenant_id: r.get(1),
            actor: r.get(2),
            actor_type: ActorType::parse(r.get(3)),
            action: r.get(4),
            category: Category::parse(r.get(5)).unwrap_or(Category::System),
            method: r.get(6),
            route: r.get(7),
            resource_type: r.get(8),
            resource_id: r.get(9),
            status: r.get(10),
            latency_ms: r.get(11),
            ip: r.get(12),
            user_agent: r.get(13),
            request_id: r.get(14),
            details: r.get(15),
            created_at: r.get(16),
        }
    }
}

/// What a recorder fills in; the id and time are given when it is written.
#[derive(Debug, Clone)]
pub struct NewActivity {
    pub tenant_id: Uuid,
    pub actor: Option<Uuid>,
    pub actor_type: ActorType,
    pub action: String,
    pub category: Category,
    pub request: RequestFacts,
    pub resource_type: Option<&'static str>,
    pub resource_id: Option<Uuid>,
    pub status: u16,
    pub latency_ms: i32,
    pub details: serde_json::Value,
}

impl NewActivity {
    /// The stored activity, with its UUID v7 and time.
    pub fn into_activity(self, id: Uuid, created_at: DateTime<Utc>) -> Activity {
        Activity {
            id,
            tenant_id: self.tenant_id,
            actor: self.actor,
            actor_type: self.actor_type,
            action: self.action,
            category: self.category,
            method: Some(self.request.method.to_string()),
            route: Some(self.request.route),
            resource_type: self.resource_type.map(str::to_string),
            resource_id: self.resource_id,
            status: Some(self.status as i16),
            latency_ms: Some(self.latency_ms),
            ip: self.request.ip,
            user_agent: self.request.user_agent,
            request_id: Some(self.request.request_id),
            details: self.details,
            created_at,
        }
    }
}

/// The query of `GET /api/v1/activities`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// One of `auth`, `data`, `request`, `security`, `trust`, `system`.
    #[param(value_type = Option<Category>)]
    pub category: Option<String>,
    /// An exact action, e.g. `product.created` (1-100 characters).
    #[param(min_length = 1, max_length = 100)]
    pub action: Option<String>,
    /// The actor's id (a user, or an API key).
    #[param(value_type = Option<uuid::Uuid>)]
    pub actor: Option<String>,
    /// The HTTP status recorded, 100-599.
    #[param(value_type = Option<i64>, minimum = 100, maximum = 599)]
    pub status: Option<String>,
    /// e.g. `product`, `order` (1-100 characters).
    #[param(min_length = 1, max_length = 100)]
    pub resource_type: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    pub resource_id: Option<String>,
    /// Activities at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// Activities before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated activity query.
#[derive(Debug)]
pub struct ActivityFilter {
    pub category: Option<Category>,
    pub action: Option<String>,
    pub actor: Option<Uuid>,
    pub status: Option<i16>,
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: PageRequest,
}

impl ActivityFilter {
    /// No filter: the page walks the primary key (bounded cost, fit for a read lane).
    pub fn is_plain_page(&self) -> bool {
        self.category.is_none()
            && self.action.is_none()
            && self.actor.is_none()
            && self.status.is_none()
            && self.resource_type.is_none()
            && self.resource_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

impl ActivityQuery {
    /// Every faulty field is named (422), not only the first.
    pub fn parse(&self) -> Result<ActivityFilter, AppError> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: &str| errors.push(FieldError::new(field, message));
        let category = self.category.as_deref().and_then(|c| {
            let parsed = Category::parse(c);
            if parsed.is_none() {
                fail(
                    "category",
                    "must be one of auth, data, request, security, trust, system",
                );
            }
            parsed
        });
        let text = |name: &str, value: &Option<String>, fail: &mut dyn FnMut(&str, &str)| {
            value.as_ref().and_then(|v| {
                if (1..=100).contains(&v.chars().count()) {
                    Some(v.clone())
                } else {
                    fail(name, "must be 1-100 characters");
                    None
                }
            })
        };
        let action = text("action", &self.action, &mut fail);
        let resource_type = text("resource_type", &self.resource_type, &mut fail);
        let uuid = |name: &str, value: &Option<String>, fail: &mut dyn FnMut(&str, &str)| {
            value.as_deref().and_then(|v| {
                let parsed = Uuid::parse_str(v).ok();
                if parsed.is_none() {
                    fail(name, "must be a UUID");
                }
                parsed
            })
        };
        let actor = uuid("actor", &self.actor, &mut fail);
        let resource_id = uuid("resource_id", &self.resource_id, &mut fail);
        let status = self.status.as_deref().and_then(|s| {
            let parsed = s.parse::<i16>().ok().filter(|s| (100..=599).contains(s));
            if parsed.is_none() {
                fail("status", "must be an HTTP status, 100-599");
            }
            parsed
        });
        let time = |name: &str, value: &Option<String>, fail: &mut dyn FnMut(&str, &str)| {
            value.as_deref().and_then(|v| {
                let parsed = DateTime::parse_from_rfc3339(v).ok();
                if parsed.is_none() {
                    fail(name, "must be an RFC 3339 time");
                }
                parsed.map(|t| t.with_timezone(&Utc))
            })
        };
        let since = time("since", &self.since, &mut fail);
        let until = time("until", &self.until, &mut fail);
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            fail("until", "must not be before since");
        }
        // A bad cursor is 400 `invalid_cursor` (SPEC §1), a bad limit one more field.
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
        .parse();
        let page = match page {
            Ok(page) => Some(page),
            Err(AppError::Validation(faults)) => {
                errors.extend(faults);
                None
            }
            Err(e) => return Err(e),
        };
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(ActivityFilter {
            category,
            action,
            actor,
            status,
            resource_type,
            resource_id,
            since,
            until,
            page: page.expect("a page when no field failed"),
        })
    }
}
