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
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub requests_per_minute: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 60_000_000)]
    pub requests_per_hour: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub requests_per_day: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000)]
    pub max_products: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100_000)]
    pub max_users: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_099_511_627_776.0)]
    pub max_storage_bytes: Option<Option<i64>>,
    /// Days conversation messages are kept (default 365).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3_650)]
    pub conversation_retention_days: Option<Option<i64>>,
    /// Days activities are kept (default 90).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3_650)]
    pub activity_retention_days: Option<Option<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "suspended", "limits": {"requests_per_minute": 120, "max_products": null}}))]
pub struct UpdateTenant {
    pub status: Option<TenantStatus>,
    /// Any subset of the limits; `null` restores that limit's default.
    pub limits: Option<LimitsPatch>,
}

/// Each limit's name and bounds, in `LimitsPatch`'s field order (its schema says the same):
/// requests per window at least 1, quotas at least 0 (users 1), each with an upper bound so
/// that no override can overflow a counter; retention 1-3650 days (SPEC §4).
const LIMIT_BOUNDS: [(&str, i64, i64); 8] = [
    ("requests_per_minute", 1, 1_000_000),
    ("requests_per_hour", 1, 60_000_000),
    ("requests_per_day", 1, 1_000_000_000),
    ("max_products", 0, 1_000_000),
    ("max_users", 1, 100_000),
    ("max_storage_bytes", 0, 1 << 40),
    ("conversation_retention_days", 1, 3650),
    ("activity_retention_days", 1, 3650),
];

/// A validated limits change: overrides to set and to remove.
#[derive(Debug, Default)]
pub struct LimitsChange {
    pub set: serde_json::Map<String, serde_json::Value>,
    pub reset: Vec<String>,
}

impl LimitsPatch {
    pub fn validate(&self) -> Result<LimitsChange, AppError> {
        let fields = [
            self.requests_per_minute,
            self.requests_per_hour,
            self.requests_per_day,
            self.max_products,
            self.max_users,
            self.max_storage_bytes,
            self.conversation_retention_days,
            self.activity_retention_days,
        ];
        let mut change = LimitsChange::default();
        let mut errors = Vec::new();
        for (value, (name, min, max)) in fields.into_iter().zip(LIMIT_BOUNDS) {
            match value {
                None => {}
                Some(None) => change.reset.push(name.to_string()),
                Some(Some(v)) if !(min..=max).contains(&v) => errors.push(FieldError::new(
                    format!("limits.{name}"),
                    format!("must be from {min} to {max}"),
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

    #[test]
    fn every_limit_has_an_upper_bound() {
        for (name, min, max) in LIMIT_BOUNDS {
            let at = |v: i64| {
                let patch: LimitsPatch =
                    serde_json::from_value(serde_json::json!({ name: v })).unwrap();
                patch.validate()
            };
            assert!(at(max).is_ok(), "{name} = {max}");
            assert!(at(min).is_ok(), "{name} = {min}");
            match at(max + 1) {
                Err(AppError::Validation(errors)) => {
                    assert_eq!(errors[0].field, format!("limits.{name}"))
                }
                other => panic!("{name} over its bound: {other:?}"),
            }
        }
        let patch: LimitsPatch =
            serde_json::from_str(r#"{"conversation_retention_days": 3651}"#).unwrap();
        assert!(patch.validate().is_err(), "retention is at most 3650 days");
    }
}
