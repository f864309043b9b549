//! Trust levels, their product caps and the features they unlock (SPEC §6): the one table
//! every gate reads.

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::AppError;

/// The highest level.
pub const PREMIUM: i16 = 3;

/// `level_name` of each level, by level.
pub const LEVEL_NAMES: [&str; 4] = ["unverified", "verified", "trusted", "premium"];

pub fn level_name(level: i16) -> &'static str {
    LEVEL_NAMES[level.clamp(0, PREMIUM) as usize]
}

/// The trust level's cap on products, below the tenant's product quota: 5 at level 0, 50 at
/// level 1, none above (only the quota). The database applies the same caps
/// (`trust_product_cap`, migrations/0010_trust.sql; a test keeps them equal).
pub fn product_cap(level: i16) -> Option<i64> {
    match level {
        0 => Some(5),
        1 => Some(50),
        _ => None,
    }
}

/// The effective product limit: the quota, or the trust cap when it is lower.
pub fn product_limit(level: i16, quota: i64) -> i64 {
    product_cap(level).map_or(quota, |cap| cap.min(quota))
}

crate::commerce::text_enum! {
    /// A feature that a trust level unlocks (the `feature` of a 403 `feature_not_available`).
    Feature {
        AutoConfirmOrders => "auto_confirm_orders",
        EmailNotifications => "email_notifications",
        SmsNotifications => "sms_notifications",
        AnalyticsSummary => "analytics_summary",
        AnalyticsTimeseries => "analytics_timeseries",
        BulkProductImport => "bulk_product_import",
        CustomMonitoringRules => "custom_monitoring_rules",
        ApiKeys => "api_keys",
    }
}

impl Feature {
    /// The level that unlocks the feature (the seed's table).
    pub fn required_level(self) -> i16 {
        match self {
            Self::AutoConfirmOrders
            | Self::EmailNotifications
            | Self::SmsNotifications
            | Self::AnalyticsSummary => 1,
            Self::AnalyticsTimeseries | Self::BulkProductImport | Self::CustomMonitoringRules => 2,
            Self::ApiKeys => 3,
        }
    }

    pub fn available_at(self, level: i16) -> bool {
        level >= self.required_level()
    }

    /// 403 `feature_not_available` below the feature's level.
    pub fn check(self, level: i16) -> Result<(), AppError> {
        if self.available_at(level) {
            Ok(())
        } else {
            Err(AppError::FeatureNotAvailable {
                feature: self.as_str(),
                required_level: self.required_level(),
            })
        }
    }
}

/// One entry of the trust document's `features`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureState {
    pub name: Feature,
    #[schema(minimum = 0, maximum = 3)]
    pub required_level: i16,
    pub available: bool,
}

/// Every feature, as available at `level`.
pub fn features_at(level: i16) -> Vec<FeatureState> {
    Feature::ALL
        .iter()
        .map(|&f| FeatureState {
            name: f,
            required_level: f.required_level(),
            available: f.available_at(level),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_rise_with_the_level_and_never_pass_the_quota() {
        assert_eq!(product_limit(0, 1000), 5);
        assert_eq!(product_limit(1, 1000), 50);
        assert_eq!(product_limit(2, 1000), 1000);
        assert_eq!(product_limit(3, 1000), 1000);
        assert_eq!(product_limit(0, 3), 3);
        assert_eq!(product_limit(1, 20), 20);
    }

    #[test]
    fn gates_follow_the_seed_table() {
        let at = |level| {
            Feature::ALL
                .iter()
                .filter(|f| f.available_at(level))
                .count()
        };
        assert_eq!([at(0), at(1), at(2), at(3)], [0, 4, 7, 8]);
        let refused = Feature::ApiKeys.check(2).unwrap_err();
        assert_eq!(refused.code(), "feature_not_available");
        let problem = refused.to_problem();
        assert_eq!(problem.extensions["feature"], "api_keys");
        assert_eq!(problem.extensions["required_level"], 3);
        assert_eq!(level_name(2), "trusted");
    }
}
