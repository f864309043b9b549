//! The trust recompute (SPEC §6): every tenant's score, risk signals, level and grace period,
//! about every `TRUST_RECOMPUTE_INTERVAL_SECONDS`, on one instance at a time (a cluster job).
//! First the cross-tenant pass of the shared-phone signal (`trust::platform`), then each
//! tenant in a transaction of its own with that tenant set (`Trust::recompute`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Job;
use crate::clock::Clock;
use crate::db::Db;
use crate::trust::platform;
use crate::trust::recompute::Trust;

pub struct TrustRecompute {
    pub db: Db,
    pub trust: Trust,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecomputeReport {
    pub tenants: u64,
    /// Tenants whose recompute failed (logged); the others were recomputed.
    pub failed: u64,
}

impl Job for TrustRecompute {
    const NAME: &'static str = "trust_recompute";
    type Report = RecomputeReport;

    async fn run_once(&self) -> anyhow::Result<RecomputeReport> {
        // Each tenant with its last override: shared phones count for a review only when
        // they ordered since.
        let tenants: Vec<(Uuid, Option<DateTime<Utc>>)> = self
            .db
            .platform()
            .await?
            .query(
                "SELECT id, trust_overridden_at FROM tenants ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let phones = platform::shared_phones(&self.db, &tenants, self.clock.now()).await?;
        let mut report = RecomputeReport::default();
        for (tenant, _) in tenants {
            report.tenants += 1;
            let shared = phones.get(&tenant).copied().unwrap_or_default();
            if let Err(e) = self.trust.recompute(tenant, Some(shared)).await {
                report.failed += 1;
                tracing::warn!(%tenant, error = %e, "trust recompute of a tenant failed");
            }
        }
        Ok(report)
    }
}
