//! Purges the hub's stored large events (`hub_events`, migration 0008): every instance has read
//! a row within moments of its `NOTIFY`, so rows older than [`KEPT`] only take space.
//!
//! Tenant by tenant, so row-level security scopes each delete, like the cleanup job.

use std::time::Duration;

use uuid::Uuid;

use super::Job;
use crate::db::Db;

/// How long a stored event stays readable.
pub const KEPT: Duration = Duration::from_secs(300);

pub struct HubEventsPurge {
    pub db: Db,
}

/// One pass: deletes the stored events older than `kept`, in every tenant; returns how many.
pub async fn purge(db: &Db, kept: Duration) -> anyhow::Result<u64> {
    let tenants: Vec<Uuid> = db
        .platform()
        .await?
        .query("SELECT id FROM tenants ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let seconds = kept.as_secs_f64();
    let mut purged = 0;
    for tenant in tenants {
        let row = db
            .for_tenant(tenant)
            .query_opt(
                "WITH gone AS (
                     DELETE FROM hub_events
                     WHERE tenant_id = $1 AND created_at < now() - make_interval(secs => $2)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
                &[&tenant, &seconds],
            )
            .await?;
        purged += row.map_or(0, |r| r.get::<_, i64>(0)) as u64;
    }
    Ok(purged)
}

impl Job for HubEventsPurge {
    const NAME: &'static str = "hub_events_purge";
    type Report = u64;

    async fn run_once(&self) -> anyhow::Result<u64> {
        purge(&self.db, KEPT).await
    }
}
