//! API keys as the API shows them, and the create body.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{AppError, Fields};
use crate::tenancy::model::Role;
use crate::types;

/// The most keys a tenant can have.
pub const MAX_KEYS: i64 = 50;

crate::commerce::text_enum! {
    /// What made a key: a member (with a token) or another key of the tenant.
    CreatorType {
        User => "user",
        ApiKey => "api_key",
    }
}

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// What the key may do: as a member of this role.
    pub role: Role,
    /// The key's first 12 characters, to recognise it.
    #[schema(example = "cck_Q2xhc3Np")]
    pub prefix: String,
    /// The member (`users.id`) or API key that made it, as `created_by_type` says; kept
    /// after that member or key is gone.
    pub created_by: Uuid,
    pub created_by_type: CreatorType,
    #[serde(serialize_with = "types::timestamp")]
    pub created_at: DateTime<Utc>,
    /// Null: it does not expire.
    #[serde(serialize_with = "types::timestamp_opt")]
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub const COLUMNS: &'static str =
        "id, name, role, prefix, created_by, created_by_type, created_at, expires_at";

    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            name: row.get(1),
            role: row.get::<_, String>(2).parse().unwrap_or(Role::Staff),
            prefix: row.get(3),
            created_by: row.get(4),
            created_by_type: row.get(5),
            created_at: row.get(6),
            expires_at: row.get(7),
        }
    }
}

/// What `POST /api/v1/api-keys` answers: the key, this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret, shown this once: send it as `Authorization: Bearer cck_...`.
    #[schema(pattern = "^cck_[A-Za-z0-9_-]{43}[0-9a-f]{32}$")]
    pub key: String,
}

/// `POST /api/v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Inventory sync", "role": "staff", "expires_at": "2027-01-01T00:00:00Z"}))]
pub struct CreateApiKey {
    #[schema(schema_with = types::schema::name::<100>)]
    pub name: String,
    /// Not above the creator's own role (an admin cannot make an owner key).
    pub role: Role,
    /// In the future (RFC 3339); default: no expiry.
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<String>,
}

/// A validated [`CreateApiKey`].
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateApiKey {
    pub fn validate(self, now: DateTime<Utc>) -> Result<NewApiKey, AppError> {
        let mut f = Fields::default();
        let name = f.check("name", types::name(&self.name, 100));
        let expires_at = f.check(
            "expires_at",
            self.expires_at
                .as_deref()
                .map(|raw| {
                    let at = DateTime::parse_from_rfc3339(raw.trim())
                        .map_err(|_| "must be an RFC 3339 time")?
                        .with_timezone(&Utc);
                    if at <= now {
                        return Err("must be in the future");
                    }
                    Ok(at)
                })
                .transpose(),
        );
        f.finish(|| {
            Some(NewApiKey {
                name: name?,
                role: self.role,
                expires_at: expires_at?,
            })
        })
    }
}
