//! Request and response types of the platform-admin endpoints, and their validation.

use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::error::{AppError, FieldError};
use crate::tenancy::model::TenantStatus;
use crate::types::{self, Email, Slug};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Acme Store",
    "slug": "acme-store",
    "owner": {"external_id": "user_2abc", "email": "owner@acme.example"}
}))]
pub struct CreateTenant {
    #[schema(schema_with = types::schema::name::<200>)]
    pub name: String,
    /// Unique among tenants.
    #[schema(schema_with = types::schema::slug)]
    pub slug: String,
    pub owner: OwnerInput,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    #[schema(schema_with = types::schema::external_id)]
    pub external_id: String,
    #[schema(schema_with = types::schema::email)]
    pub email: String,
}

/// A validated [`CreateTenant`].
pub struct NewTenant {
    pub name: String,
    pub slug: Slug,
    pub owner_external_id: String,
    pub owner_email: Email,
}

impl CreateTenant {
    pub fn validate(self) -> Result<NewTenant, AppError> {
        let mut errors = Vec::new();
        let name = types::name(&self.name, 200)
            .map_err(|m| errors.push(FieldError::new("name", m)))
            .ok();
        let slug = Slug::parse(&self.slug)
            .map_err(|m| errors.push(FieldError::new("slug", m)))
            .ok();
        let external_id = types::external_id(&self.owner.external_id)
            .map_err(|m| errors.push(FieldError::new("owner.external_id", m)))
            .ok();
        let email = Email::parse(&self.owner.email)
            .map_err(|m| errors.push(FieldError::new("owner.email", m)))
            .ok();
        match (name, slug, external_id, email) {
            (Some(name), Some(slug), Some(owner_external_id), Some(owner_email)) => Ok(NewTenant {
                name,
                slug,
                owner_external_id,
                owner_email,
            }),
            _ => Err(AppError::Validation(errors)),
        }
    }
}

/// `null` and absent differ here: absent leaves a field alone, `null` resets it.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_minute: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_hour: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_day: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_products: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_users: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_storage_bytes: Option<Option<i64>>,
    /// Days conversation messages are kept (default 365).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub conversation_retention_days: Option<Option<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "suspended", "limits": {"requests_per_minute": 120, "max_products": null}}))]
pub struct UpdateTenant {
    pub status: Option<TenantStatus>,
    /// Any subset of the limits; `null` restores that limit's default.
    pub limits: Option<LimitsPatch>,
}

/// A validated limits change: overrides to set and to remove.
#[derive(Debug, Default)]
pub struct LimitsChange {
    pub set: serde_json::Map<String, serde_json::Value>,
    pub reset: Vec<String>,
}

impl LimitsPatch {
    pub fn validate(&self) -> Result<LimitsChange, AppError> {
        let fields = [
            ("requests_per_minute", self.requests_per_minute, 1),
            ("requests_per_hour", self.requests_per_hour, 1),
            ("requests_per_day", self.requests_per_day, 1),
            ("max_products", self.max_products, 0),
            ("max_users", self.max_users, 1),
            ("max_storage_bytes", self.max_storage_bytes, 0),
            (
                "conversation_retention_days",
                self.conversation_retention_days,
                1,
            ),
        ];
        let mut change = LimitsChange::default();
        let mut errors = Vec::new();
        for (name, value, min) in fields {
            match value {
                None => {}
                Some(None) => change.reset.push(name.to_string()),
                Some(Some(v)) if v < min => errors.push(FieldError::new(
                    format!("limits.{name}"),
                    format!("must be at least {min}"),
                )),
                Some(Some(v)) => {
                    change.set.insert(name.to_string(), v.into());
                }
            }
        }
        if errors.is_empty() {
            Ok(change)
        } else {
            Err(AppError::Validation(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_resets_and_absent_leaves_alone() {
        let patch: LimitsPatch =
            serde_json::from_str(r#"{"requests_per_minute": 5, "max_users": null}"#).unwrap();
        let change = patch.validate().unwrap();
        assert_eq!(change.set.get("requests_per_minute"), Some(&5.into()));
        assert_eq!(change.reset, vec!["max_users".to_string()]);
        assert_eq!(change.set.len(), 1);
    }

    #[test]
    fn limits_below_their_minimum_are_refused() {
        let patch: LimitsPatch = serde_json::from_str(r#"{"requests_per_day": 0}"#).unwrap();
        assert!(patch.validate().is_err());
    }
}
