//! The one gate of trust-gated endpoints: an extractor that resolves the tenant context (SPEC
//! §2's checks) and then refuses a tenant below the feature's level with 403
//! `feature_not_available`, before the handler reads the body or query.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::level::Feature;
use crate::error::AppError;
use crate::state::AppState;
use crate::tenancy::TenantCtx;

/// A feature an endpoint needs, as a type (`Unlocked<AnalyticsSummary>`).
pub trait Gate: Send + Sync {
    const FEATURE: Feature;
}

macro_rules! gates {
    ($($name:ident),+ $(,)?) => {$(
        #[doc = concat!("The `", stringify!($name), "` feature's gate.")]
        pub struct $name;

        impl Gate for $name {
            const FEATURE: Feature = Feature::$name;
        }
    )+};
}

gates!(
    AnalyticsSummary,
    AnalyticsTimeseries,
    BulkProductImport,
    CustomMonitoringRules,
    ApiKeys,
);

/// A [`TenantCtx`] whose tenant has `G`'s feature. Put it first among a handler's
/// arguments: axum runs extractors in order, and the body is read last.
pub struct Unlocked<G>(pub TenantCtx, PhantomData<G>);

impl<G> std::ops::Deref for Unlocked<G> {
    type Target = TenantCtx;

    fn deref(&self) -> &TenantCtx {
        &self.0
    }
}

impl<G: Gate> FromRequestParts<AppState> for Unlocked<G> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let ctx = TenantCtx::from_request_parts(parts, state).await?;
        G::FEATURE.check(ctx.tenant.trust_level)?;
        Ok(Self(ctx, PhantomData))
    }
}
