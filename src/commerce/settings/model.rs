//! Tenant settings: the document, its request body and validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{AppError, Fields};
use crate::types::{self, TimeZone};

/// `GET /api/v1/tenant/settings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSettings {
    /// The tenant's day for analytics and schedules (IANA name, default `UTC`).
    pub timezone: String,
    /// New orders start `confirmed` instead of `pending` (default false; needs trust level 1,
    /// and takes effect only while the tenant has it).
    pub auto_confirm_orders: bool,
    /// `null` while the tenant runs on the defaults (never saved).
    #[serde(serialize_with = "types::timestamp_opt")]
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl TenantSettings {
    pub fn defaults() -> Self {
        Self {
            timezone: "UTC".into(),
            auto_confirm_orders: false,
            updated_at: None,
        }
    }
}

/// `PUT /api/v1/tenant/settings`: the whole document; a field left out takes its default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timezone": "America/Sao_Paulo", "auto_confirm_orders": true}))]
pub struct PutTenantSettings {
    /// Default `UTC`.
    #[serde(default = "utc")]
    #[schema(schema_with = time_zone_or_utc, required = false)]
    pub timezone: String,
    /// `true` needs trust level 1 (403 `feature_not_available` below it, before the rest of
    /// the body is read); default false.
    #[serde(default)]
    #[schema(default = false, required = false)]
    pub auto_confirm_orders: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn time_zone_or_utc() -> utoipa::openapi::schema::Object {
    let mut schema = types::schema::time_zone();
    schema.default = Some("UTC".into());
    schema
}

/// A validated [`PutTenantSettings`].
pub struct SettingsInput {
    pub timezone: TimeZone,
    pub auto_confirm_orders: bool,
}

impl PutTenantSettings {
    pub fn validate(self) -> Result<SettingsInput, AppError> {
        let mut f = Fields::default();
        let timezone = f.check("timezone", TimeZone::parse(&self.timezone));
        f.finish(|| {
            Some(SettingsInput {
                timezone: timezone?,
                auto_confirm_orders: self.auto_confirm_orders,
            })
        })
    }
}
