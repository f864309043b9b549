//! The cleanup job (SPEC §5): purges media that no product has shown for 24 hours, and
//! conversation messages older than the tenant's retention (threads left empty go too), and
//! thins old usage buckets; activities go after the tenant's `activity_retention_days`.
//! Purged media free their storage quota through the quota trigger.
//!
//! It visits tenants one at a time, in a transaction of its own with that tenant set, so
//! row-level security still scopes every statement; object bytes are deleted after commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Job;
use crate::clock::Clock;
use crate::db::Db;
use crate::limits::Limits;
use crate::storage::MediaStore;

/// How long a media may stay unreferenced.
pub const MEDIA_GRACE: chrono::Duration = chrono::Duration::hours(24);
/// Minute buckets are kept two days, hour buckets ninety; day buckets stay.
const MINUTE_BUCKETS_KEPT: chrono::Duration = chrono::Duration::days(2);
const HOUR_BUCKETS_KEPT: chrono::Duration = chrono::Duration::days(90);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub media_purged: u64,
    pub bytes_freed: i64,
    pub messages_purged: u64,
    pub threads_purged: u64,
    pub usage_buckets_purged: u64,
    pub activities_purged: u64,
    /// Tenants whose pass failed (logged); the others were still cleaned.
    pub tenants_failed: u64,
}

/// One pass over every tenant as of `now`.
pub async fn run_at(
    db: &Db,
    media: &MediaStore,
    now: DateTime<Utc>,
) -> anyhow::Result<CleanupReport> {
    let tenants: Vec<(Uuid, Limits)> = db
        .platform()
        .await?
        .query("SELECT id, limits FROM tenants ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), Limits::with_overrides(&r.get(1))))
        .collect();
    let mut report = CleanupReport::default();
    for (tenant, limits) in tenants {
        match clean_tenant(db, tenant, &limits, now, &mut report).await {
            Ok(keys) => {
                for key in keys {
                    media.delete(&key).await;
                }
            }
            Err(e) => {
                report.tenants_failed += 1;
                tracing::warn!(%tenant, error = %format!("{e:#}"), "cleanup of a tenant failed");
            }
        }
    }
    Ok(report)
}

async fn clean_tenant(
    db: &Db,
    tenant: Uuid,
    limits: &Limits,
    now: DateTime<Utc>,
    report: &mut CleanupReport,
) -> anyhow::Result<Vec<String>> {
    let tx = db.begin_platform().await?;
    tx.set_tenant(tenant).await?;
    let purged = tx
        .query(
            "DELETE FROM media WHERE tenant_id = $1 AND unreferenced_since < $2
             RETURNING storage_key, size_bytes",
            &[&tenant, &(now - MEDIA_GRACE)],
        )
        .await?;
    report.media_purged += purged.len() as u64;
    report.bytes_freed += purged.iter().map(|r| r.get::<_, i64>(1)).sum::<i64>();
    let retention = chrono::Duration::days(limits.conversation_retention_days);
    report.messages_purged += tx
        .execute(
            "DELETE FROM conversation_history WHERE tenant_id = $1 AND created_at < $2",
            &[&tenant, &(now - retention)],
        )
        .await?;
    report.threads_purged += tx
        .execute(
            "DELETE FROM conversation_threads t WHERE t.tenant_id = $1
               AND NOT EXISTS (SELECT 1 FROM conversation_history h
                               WHERE h.tenant_id = t.tenant_id AND h.thread_id = t.id)",
            &[&tenant],
        )
        .await?;
    report.usage_buckets_purged += tx
        .execute(
            "DELETE FROM api_usage WHERE tenant_id = $1 AND (
                 (granularity = 'minute' AND bucket_start < $2) OR
                 (granularity = 'hour' AND bucket_start < $3))",
            &[
                &tenant,
                &(now - MINUTE_BUCKETS_KEPT),
                &(now - HOUR_BUCKETS_KEPT),
            ],
        )
        .await?;
    // The server's role may not DELETE activities: the migration role's function does, for
    // the tenant this transaction has set.
    let activities: i64 = tx
        .query_one(
            "SELECT purge_activities($1)",
            &[&(now - chrono::Duration::days(limits.activity_retention_days))],
        )
        .await?
        .get(0);
    report.activities_purged += activities as u64;
    tx.commit().await?;
    Ok(purged.iter().map(|r| r.get(0)).collect())
}

/// The cleanup as a scheduled job, as of the service clock.
pub struct Cleanup {
    pub db: Db,
    pub media: MediaStore,
    pub clock: Arc<dyn Clock>,
}

impl Job for Cleanup {
    const NAME: &'static str = "cleanup";
    type Report = CleanupReport;

    async fn run_once(&self) -> anyhow::Result<CleanupReport> {
        run_at(&self.db, &self.media, self.clock.now()).await
    }
}
