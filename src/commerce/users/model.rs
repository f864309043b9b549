//! Members of a tenant: the row, the create and patch bodies and their validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{AppError, FieldError};
use crate::tenancy::model::Role;
use crate::types::{self, Email, Phone};

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    /// The identity-provider subject (`sub` of the user's tokens).
    pub external_id: String,
    pub email: String,
    /// E.164: where SMS notifications go; `null` when none.
    #[schema(required = true)]
    pub phone: Option<String>,
    pub role: Role,
    pub is_active: bool,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl User {
    pub const COLUMNS: &'static str =
        "id, external_id, email, phone, role, is_active, created_at, updated_at";

    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            external_id: row.get("external_id"),
            email: row.get("email"),
            phone: row.get("phone"),
            role: row.get::<_, &str>("role").parse().unwrap_or(Role::Staff),
            is_active: row.get("is_active"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"external_id": "user_2xyz", "email": "staff@acme.example",
    "phone": "+5511912345678", "role": "staff"}))]
pub struct CreateUser {
    #[schema(schema_with = types::schema::external_id)]
    pub external_id: String,
    #[schema(schema_with = types::schema::email)]
    pub email: String,
    /// E.164, optional: the SMS notifications' address.
    #[serde(default)]
    #[schema(schema_with = types::schema::phone_or_null, required = false)]
    pub phone: Option<String>,
    pub role: Role,
}

pub struct NewUser {
    pub external_id: String,
    pub email: Email,
    pub phone: Option<Phone>,
    pub role: Role,
}

impl CreateUser {
    pub fn validate(self) -> Result<NewUser, AppError> {
        let mut errors = Vec::new();
        let external_id = types::external_id(&self.external_id)
            .map_err(|m| errors.push(FieldError::new("external_id", m)))
            .ok();
        let email = Email::parse(&self.email)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok();
        let phone = self
            .phone
            .as_deref()
            .map(Phone::parse)
            .transpose()
            .map_err(|m| errors.push(FieldError::new("phone", m)))
            .ok();
        match (external_id, email, phone) {
            (Some(external_id), Some(email), Some(phone)) => Ok(NewUser {
                external_id,
                email,
                phone,
                role: self.role,
            }),
            _ => Err(AppError::Validation(errors)),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "admin"}))]
pub struct UpdateUser {
    #[schema(schema_with = types::schema::email_or_null, required = false)]
    pub email: Option<String>,
    /// E.164; `null` removes it.
    #[serde(default, deserialize_with = "crate::commerce::nullable")]
    #[schema(schema_with = types::schema::phone_or_null, required = false)]
    pub phone: Option<Option<String>>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

pub struct UserChange {
    pub email: Option<Email>,
    /// `Some(None)`: removed.
    pub phone: Option<Option<Phone>>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

impl UpdateUser {
    pub fn validate(self) -> Result<UserChange, AppError> {
        let email = self
            .email
            .map(|e| Email::parse(&e).map_err(|m| AppError::validation("email", m)))
            .transpose()?;
        let phone = match self.phone {
            None => None,
            Some(None) => Some(None),
            Some(Some(p)) => Some(Some(
                Phone::parse(&p).map_err(|m| AppError::validation("phone", m))?,
            )),
        };
        Ok(UserChange {
            email,
            phone,
            role: self.role,
            is_active: self.is_active,
        })
    }
}
