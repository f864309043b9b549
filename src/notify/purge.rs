//! Keeps stored notifications bounded: a tenant's notifications older than
//! [`RETENTION_DAYS`] go, and each recipient keeps at most [`KEPT_PER_USER`] (the newest);
//! their deliveries go with them, and one-time codes' deliveries after the same time. Never
//! a notification (nor a code) with a delivery the outbox still has to send (`queued`, or
//! `sending` under a claim): it waits for a later pass, so no outbox row is lost. The
//! SMS routes (`sms_routes`, the status webhook's sid lookup) of deliveries that are gone go
//! in the same transaction, whatever removed the delivery (this purge, or a deleted user).
//!
//! Tenant by tenant, each in its own transaction with the tenant set, like the cleanup job;
//! `sms_routes` is a platform table, and its rows are chosen by their `tenant` column.

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
            let tx = self.db.for_tenant(tenant).begin().await?;
            let row = tx
                .query_one(
                    "WITH old AS (
                         DELETE FROM notifications n WHERE n.tenant_id = $1 AND (n.created_at < $2
                             OR n.id IN (SELECT id FROM (
                                 SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id DESC) AS n
                                 FROM notifications WHERE tenant_id = $1) ranked
                                 WHERE n > $3))
                           AND NOT EXISTS (
                             SELECT 1 FROM notification_deliveries d
                             WHERE d.tenant_id = $1 AND d.notification_id = n.id
                               AND d.status IN ('queued', 'sending'))
                         RETURNING 1),
                     codes AS (
                         DELETE FROM notification_deliveries
                         WHERE tenant_id = $1 AND notification_id IS NULL AND created_at < $2
                           AND status NOT IN ('queued', 'sending')
                         RETURNING 1)
                     SELECT (SELECT count(*) FROM old) + (SELECT count(*) FROM codes)",
                    &[&tenant, &cutoff, &KEPT_PER_USER],
                )
                .await?;
            // After the deletions above (a statement of its own, so it sees them), and also
            // whatever went with a deleted user's notifications.
            tx.commit_after(
                "DELETE FROM sms_routes r WHERE r.tenant = $1 AND NOT EXISTS (
                     SELECT 1 FROM notification_deliveries d
                     WHERE d.tenant_id = $1 AND d.id = r.delivery_id)",
                &[&tenant],
            )
            .await?;
            purged += row.get::<_, i64>(0) as u64;
        }
        Ok(purged)
    }
}
