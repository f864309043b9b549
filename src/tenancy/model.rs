//! Tenants and roles as the rest of the service sees them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::limits::Limits;

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

/// A tenant: a row of `tenants`, as the service and the API see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub status: TenantStatus,
    /// Why the tenant is suspended, when the platform said (an automatic suspension names its
    /// risk signal); null otherwise.
    #[schema(required = true)]
    pub status_reason: Option<String>,
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
        "id, name, slug, status, status_reason, trust_level, limits, created_at, updated_at";

    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            name: row.get("name"),
            slug: row.get("slug"),
            status: match row.get::<_, &str>("status") {
                "suspended" => TenantStatus::Suspended,
                _ => TenantStatus::Active,
            },
            status_reason: row.get("status_reason"),
            trust_level: row.get("trust_level"),
            limits: Limits::with_overrides(&row.get::<_, serde_json::Value>("limits")),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}
