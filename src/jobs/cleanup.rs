//! The cleanup job (SPEC §5): purges media that no product has shown for 24 hours, and
//! conversation messages older than the tenant's retention (threads left empty go too), and
//! thins old usage buckets; activities go after the tenant's `activity_retention_days`; rule
//! windows that no longer hold anything (idle past their window and cooldown) go, and each rule
//! keeps at most [`MAX_WINDOWS_PER_RULE`] groups; verification codes go after a day. Media a
//! verification names is never unreferenced, so never purged.
//! Purged media free their storage quota through the quota trigger.
//!
//! It visits tenants one at a time, in a transaction of its own with that tenant set, so
//! row-level security still scopes every statement; object bytes are deleted after commit.
//! Then it reconciles the media store with the rows: an object that no row names, older than
//! an hour (an upload completes its object a moment before its row commits), is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use uuid::Uuid;

use super::Job;
use crate::clock::Clock;
use crate::db::{Db, PlatformTx};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::monitoring::rules::model::{Severity, VOLUME_ANOMALY};
use crate::storage::MediaStore;

/// How long a media may stay unreferenced.
pub const MEDIA_GRACE: chrono::Duration = chrono::Duration::hours(24);
/// Minute buckets are kept two days, hour buckets ninety; day buckets stay.
const MINUTE_BUCKETS_KEPT: chrono::Duration = chrono::Duration::days(2);
const HOUR_BUCKETS_KEPT: chrono::Duration = chrono::Duration::days(90);
/// How old an object with no row must be before the reconciliation deletes it.
pub const ORPHAN_GRACE: chrono::Duration = chrono::Duration::hours(1);
/// How long verification codes are kept.
pub const CODES_KEPT: chrono::Duration = chrono::Duration::days(1);
/// Object keys checked against the rows per statement.
const RECONCILE_BATCH: usize = 1_000;
/// Groups (`monitoring_rule_windows` rows) a rule keeps past a pass: the most recently active.
pub const MAX_WINDOWS_PER_RULE: i64 = 10_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub media_purged: u64,
    pub bytes_freed: i64,
    pub messages_purged: u64,
    pub threads_purged: u64,
    pub usage_buckets_purged: u64,
    /// Objects deleted because no row named them.
    pub orphans_deleted: u64,
    pub activities_purged: u64,
    /// Rule windows deleted: idle, or past a rule's [`MAX_WINDOWS_PER_RULE`].
    pub rule_windows_pruned: u64,
    /// Verification codes older than [`CODES_KEPT`] (long expired; the resend throttle reads
    /// only the last hour).
    pub codes_purged: u64,
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
    report.orphans_deleted = reconcile(db, media, now - ORPHAN_GRACE).await?;
    Ok(report)
}

/// Deletes the objects last written before `before` that no media row names. Only keys of the
/// service's own shape (`<tenant id>/<media id>`) are considered: whatever else shares the store
/// is left alone.
async fn reconcile(db: &Db, media: &MediaStore, before: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut objects = media.objects();
    let mut batch: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let mut pending = 0;
    let mut deleted = 0;
    while let Some(object) = objects.next().await {
        let object = object?;
        if object.last_modified >= before {
            continue;
        }
        let key = object.location.to_string();
        if let Some(tenant) = media_key_tenant(&key) {
            batch.entry(tenant).or_default().push(key);
            pending += 1;
        }
        if pending >= RECONCILE_BATCH {
            deleted += delete_orphans(db, media, std::mem::take(&mut batch)).await?;
            pending = 0;
        }
    }
    Ok(deleted + delete_orphans(db, media, batch).await?)
}

/// The tenant of a key shaped `<tenant id>/<media id>`.
fn media_key_tenant(key: &str) -> Option<Uuid> {
    let (tenant, media) = key.split_once('/')?;
    Uuid::try_parse(media).ok()?;
    Uuid::try_parse(tenant).ok()
}

async fn delete_orphans(
    db: &Db,
    media: &MediaStore,
    keys: BTreeMap<Uuid, Vec<String>>,
) -> anyhow::Result<u64> {
    let mut deleted = 0;
    for (tenant, keys) in keys {
        let tx = db.begin_platform().await?;
        tx.set_tenant(tenant).await?;
        let named: BTreeSet<String> = tx
            .query(
                "SELECT storage_key FROM media WHERE tenant_id = $1 AND storage_key = ANY($2)",
                &[&tenant, &keys],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await?;
        for key in keys.iter().filter(|k| !named.contains(*k)) {
            media.delete(key).await;
            deleted += 1;
        }
    }
    Ok(deleted)
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
    report.rule_windows_pruned += prune_rule_windows(&tx, tenant, now).await?;
    report.codes_purged += tx
        .execute(
            "DELETE FROM trust_codes WHERE tenant_id = $1 AND created_at < $2",
            &[&tenant, &(now - CODES_KEPT)],
        )
        .await?;
    tx.commit().await?;
    Ok(purged.iter().map(|r| r.get(0)).collect())
}

/// Deletes the tenant's rule windows that hold nothing any more: untouched for longer than
/// both their rule's window and its cooldown, every event they held has left the window and
/// the cooldown is over, so the row is as good as absent. The baseline rule's row (one per
/// rule) keeps its rolling mean. Then each rule keeps its [`MAX_WINDOWS_PER_RULE`] most
/// recently active groups, so groups keyed by values a stranger chooses (an ip) stay bounded.
async fn prune_rule_windows(
    tx: &PlatformTx,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let severities: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
    let cooldowns: Vec<i64> = Severity::ALL
        .iter()
        .map(|s| s.default_cooldown_seconds())
        .collect();
    let idle = tx
        .execute(
            "DELETE FROM monitoring_rule_windows w USING monitoring_rules r
             WHERE w.tenant_id = $1 AND r.tenant_id = $1 AND r.id = w.rule_id
               AND r.key IS DISTINCT FROM $2
               AND w.updated_at < $3::timestamptz - make_interval(secs => greatest(
                   coalesce((r.threshold ->> 'window_seconds')::bigint, 0),
                   coalesce(r.cooldown_seconds::bigint,
                            (SELECT d.seconds FROM unnest($4::text[], $5::bigint[]) AS d(severity, seconds)
                             WHERE d.severity = r.severity))))",
            &[&tenant, &VOLUME_ANOMALY, &now, &severities, &cooldowns],
        )
        .await?;
    let crowded = tx
        .execute(
            "DELETE FROM monitoring_rule_windows w
             WHERE w.tenant_id = $1 AND (w.rule_id, w.group_key) IN (
                 SELECT rule_id, group_key FROM (
                     SELECT rule_id, group_key, row_number() OVER (
                         PARTITION BY rule_id ORDER BY updated_at DESC, group_key) AS n
                     FROM monitoring_rule_windows WHERE tenant_id = $1) ranked
                 WHERE n > $2)",
            &[&tenant, &MAX_WINDOWS_PER_RULE],
        )
        .await?;
    Ok(idle + crowded)
}

/// The cleanup as a scheduled job, as of the service clock.
pub struct Cleanup {
    pub db: Db,
    pub media: MediaStore,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

impl Job for Cleanup {
    const NAME: &'static str = "cleanup";
    type Report = CleanupReport;

    async fn run_once(&self) -> anyhow::Result<CleanupReport> {
        let report = run_at(&self.db, &self.media, self.clock.now()).await?;
        self.metrics.media_orphans_deleted(report.orphans_deleted);
        Ok(report)
    }
}
