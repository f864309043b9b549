//! Keeps stored notifications bounded: a tenant's notifications older than
//! [`RETENTION_DAYS`] go, and each recipient keeps at most [`KEPT_PER_USER`] (the newest);
//! their deliveries go with them, and one-time codes' deliveries after the same time.
//!
//! Tenant by tenant, each in its own transaction with the tenant set, like the cleanup job.

use chrono::Duration;
use uuid::Uuid;

use crate::clock::Clock;
use crate::db::Db;
use crate::jobs::Job;

pub const RETENTION_DAYS: i64 = 90;
pub const KEPT_PER_USER: i64 = 1_000;

pub struct NotificationPurge {
    pub db: Db,
    pub clock: std::sync::Arc<dyn Clock>,
}

impl Job for NotificationPurge {
    const NAME: &'static str = "notification_purge";
    /// Notifications and code deliveries deleted.
    type Report = u64;

    async fn run_once(&self) -> anyhow::Result<u64> {
        let cutoff = self.clock.now() - Duration::days(RETENTION_DAYS);
        let tenants: Vec<Uuid> = self
            .db
            .platform()
            .await?
            .query("SELECT id FROM tenants ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut purged = 0;
        for tenant in tenants {
            let row = self
                .db
                .for_tenant(tenant)
                .query_opt(
                    "WITH old AS (
                         DELETE FROM notifications WHERE tenant_id = $1 AND (created_at < $2
                             OR id IN (SELECT id FROM (
                                 SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id DESC) AS n
                                 FROM notifications WHERE tenant_id = $1) ranked
                                 WHERE n > $3))
                         RETURNING 1),
                     codes AS (
                         DELETE FROM notification_deliveries
                         WHERE tenant_id = $1 AND notification_id IS NULL AND created_at < $2
                         RETURNING 1)
                     SELECT (SELECT count(*) FROM old) + (SELECT count(*) FROM codes)",
                    &[&tenant, &cutoff, &KEPT_PER_USER],
                )
                .await?;
            purged += row.map_or(0, |r| r.get::<_, i64>(0)) as u64;
        }
        Ok(purged)
    }
}
