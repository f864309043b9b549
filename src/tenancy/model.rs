//! Tenants, roles and limits as the rest of the service sees them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Staff => "staff",
        }
    }

    /// Owners and admins manage users, rules, templates, AI config and settings.
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

impl std::str::FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "owner" => Ok(Self::Owner),
            "admin" => Ok(Self::Admin),
            "staff" => Ok(Self::Staff),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// A tenant's effective limits: its overrides, else the platform defaults (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    pub requests_per_minute: i64,
    pub requests_per_hour: i64,
    pub requests_per_day: i64,
    pub max_products: i64,
    pub max_users: i64,
    pub max_storage_bytes: i64,
    /// Conversation messages older than this are purged by the cleanup job.
    pub conversation_retention_days: i64,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        requests_per_minute: 60,
        requests_per_hour: 1_000,
        requests_per_day: 10_000,
        max_products: 1_000,
        max_users: 100,
        max_storage_bytes: 1 << 30,
        conversation_retention_days: 365,
    };

    /// The defaults with the stored overrides (a JSON object keyed by field name) applied.
    pub fn with_overrides(overrides: &serde_json::Value) -> Self {
        let get = |name: &str, default: i64| {
            overrides
                .get(name)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(default)
        };
        let d = Self::DEFAULT;
        Self {
            requests_per_minute: get("requests_per_minute", d.requests_per_minute),
            requests_per_hour: get("requests_per_hour", d.requests_per_hour),
            requests_per_day: get("requests_per_day", d.requests_per_day),
            max_products: get("max_products", d.max_products),
            max_users: get("max_users", d.max_users),
            max_storage_bytes: get("max_storage_bytes", d.max_storage_bytes),
            conversation_retention_days: get(
                "conversation_retention_days",
                d.conversation_retention_days,
            ),
        }
    }
}

/// A tenant: a row of `tenants`, as the service and the API see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub status: TenantStatus,
    /// Progressive trust level, 0 (unverified) to 3 (premium).
    pub trust_level: i16,
    /// Effective limits: the tenant's overrides, else the defaults.
    pub limits: Limits,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub const COLUMNS: &'static str =
        "id, name, slug, status, trust_level, limits, created_at, updated_at";

    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            name: row.get("name"),
            slug: row.get("slug"),
            status: match row.get::<_, &str>("status") {
                "suspended" => TenantStatus::Suspended,
                _ => TenantStatus::Active,
            },
            trust_level: row.get("trust_level"),
            limits: Limits::with_overrides(&row.get::<_, serde_json::Value>("limits")),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_their_keys() {
        let limits = Limits::with_overrides(&serde_json::json!({"requests_per_minute": 5}));
        assert_eq!(limits.requests_per_minute, 5);
        assert_eq!(limits.requests_per_hour, Limits::DEFAULT.requests_per_hour);
        assert_eq!(
            Limits::with_overrides(&serde_json::json!({})),
            Limits::DEFAULT
        );
    }
}
