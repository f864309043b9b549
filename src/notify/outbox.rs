//! The outbox workers (SPEC §8): claim a due delivery with `FOR UPDATE SKIP LOCKED` as a
//! lease (`sending` until the lease ends), send it outside any transaction, record the
//! provider's answer under the claim. A delivery a crash left `sending` is claimed again when
//! its lease ends; its email keeps its Message-ID, so the receiver can tell the repeat.
//!
//! Finding work: this instance's enqueues wake it for their tenant ([`Wake`]); after a tenant
//! has nothing due, its next due time is kept as a timer; and a sweep of every tenant (at
//! start, then every `NOTIFY_SWEEP_SECONDS`) finds what other instances left (a crash, a
//! retry). The sweep is this module's only cross-tenant code: `notification_due_tenants`
//! (migration 0009) visits the tenants one at a time with each one set, so row-level security
//! scopes every probe; everything else works in one tenant's transaction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::choice;
use super::email::Mailer;
use super::model::{Priority, QuietHours};
use super::sms::Sms;
use super::store;
use super::templates::{self, TemplateChannel, TemplateKey};
use crate::clock::Clock;
use crate::config::NotifyConfig;
use crate::db::{Db, DbError};
use crate::jobs::Job;
use crate::metrics::Metrics;
use crate::monitoring::rules::model::NotifyChannel;

/// Wakes this instance's outbox for a tenant that has just queued something.
#[derive(Clone, Default)]
pub struct Wake(Arc<WakeInner>);

#[derive(Default)]
struct WakeInner {
    tenants: Mutex<BTreeSet<Uuid>>,
    notify: Notify,
}

impl Wake {
    pub fn tenant(&self, tenant: Uuid) {
        self.0
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant);
        self.0.notify.notify_one();
    }

    fn take(&self) -> BTreeSet<Uuid> {
        std::mem::take(&mut *self.0.tenants.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another attempt (a timeout, a 4xx SMTP reply, a 5xx or 429 from Twilio), no
    /// sooner than `after` when the provider said so.
    Transient {
        error: String,
        after: Option<Duration>,
    },
    /// Will not go through however often it is tried (a 5xx SMTP reply, a refused number).
    Permanent(String),
}

/// A claimed delivery, with what rendering it needs.
#[derive(Debug)]
pub struct Claimed {
    pub tenant: Uuid,
    pub id: Uuid,
    pub claim: Uuid,
    pub channel: NotifyChannel,
    pub address: Option<String>,
    pub locale: String,
    pub key: TemplateKey,
    pub priority: Priority,
    pub attempts: i32,
    pub variables: Value,
    /// When the recipient's quiet hours end, if they are in them now (read at the claim, from
    /// the preferences as they are then: they may have changed since the enqueue).
    pub quiet_until: Option<DateTime<Utc>>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        provider_id: String,
    },
    Failed(SendError),
    /// Not sent: a non-urgent delivery whose recipient is in quiet hours waits until `until`.
    Deferred {
        until: DateTime<Utc>,
    },
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    /// Put back until the end of their recipient's quiet hours.
    pub deferred: u64,
}

pub struct Outbox {
    db: Db,
    clock: Arc<dyn Clock>,
    mailer: Option<Mailer>,
    sms: Option<Sms>,
    config: NotifyConfig,
    metrics: Arc<Metrics>,
    wake: Wake,
}

const CLAIM: &str = "WITH claimed AS (
    UPDATE notification_deliveries d
    SET status = 'sending', claim = $3, attempts = d.attempts + 1, due_at = $4, updated_at = now()
    WHERE d.tenant_id = $1 AND d.id = (
        SELECT id FROM notification_deliveries
        WHERE tenant_id = $1 AND status IN ('queued', 'sending') AND due_at <= $2
          AND channel = ANY($5)
        ORDER BY due_at LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.notification_id, d.channel, d.address, d.locale, d.template_key,
              d.priority, d.variables, d.attempts)
SELECT c.id, c.channel, c.address, c.locale, c.template_key, c.priority, c.attempts,
       c.variables AS code_variables, n.title, n.body, n.category, n.metadata,
       n.variables AS extra, t.name AS tenant_name
       , p.quiet_hours
FROM claimed c
LEFT JOIN notifications n ON n.tenant_id = $1 AND n.id = c.notification_id
LEFT JOIN notification_preferences p ON p.tenant_id = $1 AND p.user_id = n.user_id
JOIN tenants t ON t.id = $1";

/// Puts a claimed delivery back in the queue until `$4` without counting the attempt: the
/// recipient is in quiet hours now.
const DEFER: &str = "UPDATE notification_deliveries
    SET status = 'queued', due_at = $4, attempts = attempts - 1, claim = NULL, updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND claim = $3 AND status = 'sending'";

/// Records a claimed delivery's outcome under its claim (`$8`: an urgent one went out in the
/// recipient's quiet hours, which it records as bypassed). An SMS that became `sent` gets its
/// route (`sms_routes`: Twilio's sid to the tenant and delivery, which is how the status webhook
/// finds it) in the same statement, so a sid is routable exactly when it is recorded.
const RECORD: &str = "WITH recorded AS (
    UPDATE notification_deliveries
    SET status = $4, due_at = coalesce($5, due_at), last_error = $6,
        provider_id = coalesce($7, provider_id), claim = NULL, updated_at = now(),
        bypassed = CASE WHEN $8 AND NOT 'quiet_hours' = ANY(bypassed)
                        THEN array_append(bypassed, 'quiet_hours') ELSE bypassed END
    WHERE tenant_id = $1 AND id = $2 AND claim = $3 AND status = 'sending'
    RETURNING id, channel, status)
INSERT INTO sms_routes (sid, tenant, delivery_id)
SELECT $7, $1, id FROM recorded
WHERE channel = 'sms' AND status = 'sent' AND length($7::text) BETWEEN 1 AND 64
ON CONFLICT (sid) DO NOTHING";

impl Outbox {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        config: &NotifyConfig,
        public_base_url: Option<&url::Url>,
        metrics: Arc<Metrics>,
        wake: Wake,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            mailer: config.smtp.as_ref().map(Mailer::new).transpose()?,
            sms: config
                .twilio
                .as_ref()
                .map(|t| Sms::new(t, public_base_url))
                .transpose()?,
            db,
            clock,
            config: config.clone(),
            metrics,
            wake,
        })
    }

    /// The channels this instance can send (and so claims).
    fn channels(&self) -> Vec<&'static str> {
        let mut channels = Vec::new();
        if self.mailer.is_some() {
            channels.push(NotifyChannel::Email.as_str());
        }
        if self.sms.is_some() {
            channels.push(NotifyChannel::Sms.as_str());
        }
        channels
    }

    /// Every tenant with a delivery queued or sending on this instance's channels, and when
    /// its first is due (cross-tenant: see the module docs).
    pub async fn sweep(&self) -> Result<Vec<(Uuid, DateTime<Utc>)>, DbError> {
        let channels = self.channels();
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_platform().await?;
        let rows = tx
            .query(
                "SELECT tenant, due_at FROM notification_due_tenants($1)",
                &[&channels],
            )
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Claims `tenant`'s next due delivery, if it has one nobody holds.
    pub async fn claim(&self, tenant: Uuid) -> Result<Option<Claimed>, DbError> {
        let now = self.clock.now();
        let lease_end = now + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        let claim = Uuid::now_v7();
        let row = self
            .db
            .for_tenant(tenant)
            .query_opt(
                CLAIM,
                &[&tenant, &now, &claim, &lease_end, &self.channels()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key: TemplateKey = row.get("template_key");
        let priority: Priority = row.get("priority");
        let mut variables = match row.get::<_, Option<Value>>("code_variables") {
            Some(code) => code,
            None => json!({
                "title": row.get::<_, Option<String>>("title"),
                "body": row.get::<_, Option<String>>("body"),
                "priority": priority.as_str(),
                "category": row.get::<_, Option<String>>("category"),
                "metadata": row.get::<_, Option<Value>>("metadata").unwrap_or_else(|| json!({})),
            }),
        };
        if let (Some(vars), Some(Value::Object(extra))) = (
            variables.as_object_mut(),
            row.get::<_, Option<Value>>("extra"),
        ) {
            vars.extend(extra);
        }
        variables["tenant"] = json!({"name": row.get::<_, String>("tenant_name")});
        let quiet_hours: Option<QuietHours> = row
            .get::<_, Option<Value>>("quiet_hours")
            .and_then(|q| serde_json::from_value(q).ok());
        let quiet_until = choice::quiet_until(quiet_hours.as_ref(), now);
        Ok(Some(Claimed {
            tenant,
            id: row.get("id"),
            claim,
            channel: row.get("channel"),
            address: row.get("address"),
            locale: row.get("locale"),
            key,
            priority,
            attempts: row.get("attempts"),
            variables,
            quiet_until,
        }))
    }

    /// Renders and sends a claimed delivery (no transaction is open meanwhile); a
    /// non-urgent one whose recipient is in quiet hours now is not sent but deferred.
    pub async fn deliver(&self, c: &Claimed) -> Outcome {
        if let Some(until) = c.quiet_until
            && c.priority != Priority::Urgent
        {
            return Outcome::Deferred { until };
        }
        let Some(address) = c.address.as_deref() else {
            return Outcome::Failed(SendError::Permanent("no address".into()));
        };
        let channel = match c.channel {
            NotifyChannel::Email => TemplateChannel::Email,
            NotifyChannel::Sms => TemplateChannel::Sms,
            NotifyChannel::InApp => {
                return Outcome::Failed(SendError::Permanent("in-app is not sent".into()));
            }
        };
        let chain = templates::locale_chain(&c.locale);
        let db = self.db.for_tenant(c.tenant);
        let source = match store::tenant_template(&db, c.key, channel, &chain).await {
            Ok(Some(source)) => source,
            Ok(None) => templates::builtin(c.key, channel, &chain),
            Err(e) => {
                return Outcome::Failed(SendError::Transient {
                    error: format!("reading the template: {e}"),
                    after: None,
                });
            }
        };
        let rendered = match templates::render(channel, &source, &c.variables) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(SendError::Permanent(format!("template: {e}"))),
        };
        let sent = match (channel, &self.mailer, &self.sms) {
            (TemplateChannel::Email, Some(mailer), _) => {
                mailer.send(c.id, address, c.priority, &rendered).await
            }
            (TemplateChannel::Sms, _, Some(sms)) => sms.send(address, &rendered.text).await,
            _ => Err(SendError::Transient {
                error: "the channel is not configured on this instance".into(),
                after: None,
            }),
        };
        match sent {
            Ok(provider_id) => Outcome::Sent { provider_id },
            Err(e) => Outcome::Failed(e),
        }
    }

    /// The delay before attempt `attempts + 1`, by this instance's configuration ([`backoff`]).
    pub fn backoff(&self, attempts: i32) -> Duration {
        backoff(self.config.retry_base, self.config.retry_max, attempts)
    }

    /// Records `outcome` under `c`'s claim: a delivery whose lease passed to another worker,
    /// or that the status webhook moved on, is left as it is.
    pub async fn record(&self, c: &Claimed, outcome: &Outcome) -> Result<Report, DbError> {
        let db = self.db.for_tenant(c.tenant);
        let mut report = Report::default();
        let (status, due, error, provider): (
            &str,
            Option<DateTime<Utc>>,
            Option<String>,
            Option<&str>,
        ) = match outcome {
            Outcome::Sent { provider_id } => {
                report.sent = 1;
                ("sent", None, None, Some(provider_id))
            }
            Outcome::Failed(SendError::Transient { error, after })
                if c.attempts < self.config.max_attempts =>
            {
                report.retried = 1;
                let wait = self.backoff(c.attempts).max(after.unwrap_or_default());
                let due = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                ("queued", Some(due), Some(error.clone()), None)
            }
            Outcome::Failed(SendError::Transient { error, .. })
            | Outcome::Failed(SendError::Permanent(error)) => {
                report.failed = 1;
                ("failed", None, Some(error.clone()), None)
            }
            Outcome::Deferred { until } => {
                db.query(DEFER, &[&c.tenant, &c.id, &c.claim, until])
                    .await?;
                self.metrics
                    .notification_delivery(c.channel.as_str(), "deferred");
                report.deferred = 1;
                return Ok(report);
            }
        };
        let quiet_bypassed = c.priority == Priority::Urgent && c.quiet_until.is_some();
        db.query(
            RECORD,
            &[
                &c.tenant,
                &c.id,
                &c.claim,
                &status,
                &due,
                &error,
                &provider,
                &quiet_bypassed,
            ],
        )
        .await?;
        let outcome = if report.sent > 0 {
            "sent"
        } else if report.retried > 0 {
            "retried"
        } else {
            "failed"
        };
        self.metrics
            .notification_delivery(c.channel.as_str(), outcome);
        if let Some(due) = due {
            tracing::info!(tenant_id = %c.tenant, delivery = %c.id, attempts = c.attempts, %due,
                error = error.as_deref().unwrap_or(""), "delivery will be retried");
        }
        Ok(report)
    }

    /// Claims, sends and records `tenant`'s due deliveries until none is left.
    async fn drain(&self, tenant: Uuid, report: &mut Report) -> Result<(), DbError> {
        while let Some(c) = self.claim(tenant).await? {
            let outcome = self.deliver(&c).await;
            let done = self.record(&c, &outcome).await?;
            report.sent += done.sent;
            report.retried += done.retried;
            report.failed += done.failed;
            report.deferred += done.deferred;
        }
        Ok(())
    }

    /// When `tenant`'s next delivery on this instance's channels is due.
    async fn next_due(&self, tenant: Uuid) -> Result<Option<DateTime<Utc>>, DbError> {
        let row = self
            .db
            .for_tenant(tenant)
            .query_opt(
                "SELECT min(due_at) FROM notification_deliveries
                 WHERE tenant_id = $1 AND status IN ('queued', 'sending') AND channel = ANY($2)",
                &[&tenant, &self.channels()],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Runs the workers until `stop`: `NOTIFY_WORKERS` tasks take tenants with due work from
    /// a queue the scheduler fills (wakes, timers, sweeps).
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            if self.channels().is_empty() || self.config.workers == 0 {
                return;
            }
            let queue = Arc::new(TenantQueue::default());
            let (schedule, timers) = mpsc::unbounded_channel();
            let mut workers: Vec<JoinHandle<()>> = (0..self.config.workers)
                .map(|_| {
                    tokio::spawn(worker(
                        self.clone(),
                        queue.clone(),
                        schedule.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            scheduler(&self, &queue, timers, &stop).await;
            queue.close();
            for w in workers.drain(..) {
                let _ = w.await;
            }
        })
    }
}

/// Tenants with work now, each at most once in the queue.
#[derive(Default)]
struct TenantQueue {
    inner: Mutex<(VecDeque<Uuid>, BTreeSet<Uuid>, bool)>,
    ready: Notify,
}

impl TenantQueue {
    fn push(&self, tenant: Uuid) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.1.insert(tenant) {
            q.0.push_back(tenant);
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).2 = true;
        self.ready.notify_waiters();
    }

    /// The next tenant, or `None` once closed.
    async fn next(&self) -> Option<Uuid> {
        loop {
            let notified = self.ready.notified();
            {
                let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if q.2 {
                    return None;
                }
                if let Some(t) = q.0.pop_front() {
                    q.1.remove(&t);
                    return Some(t);
                }
            }
            notified.await;
        }
    }
}

/// One worker: a tenant at a time; a claimed delivery puts the tenant back first, so other
/// workers take its next ones meanwhile.
async fn worker(
    outbox: Arc<Outbox>,
    queue: Arc<TenantQueue>,
    schedule: mpsc::UnboundedSender<(Uuid, DateTime<Utc>)>,
    stop: CancellationToken,
) {
    while let Some(tenant) = queue.next().await {
        if stop.is_cancelled() {
            break;
        }
        match outbox.claim(tenant).await {
            Ok(Some(c)) => {
                queue.push(tenant);
                let outcome = outbox.deliver(&c).await;
                if let Err(e) = outbox.record(&c, &outcome).await {
                    tracing::warn!(tenant_id = %tenant, error = %e, "a delivery's result was not recorded; its lease will end");
                }
            }
            Ok(None) => match outbox.next_due(tenant).await {
                Ok(Some(at)) => {
                    let _ = schedule.send((tenant, at));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "outbox: next due time unknown")
                }
            },
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "outbox: claim failed");
                let retry = outbox.clock.now() + chrono::Duration::seconds(1);
                let _ = schedule.send((tenant, retry));
            }
        }
    }
}

/// Fills the queue: wakes at once, timers when due, a sweep at start and every interval.
async fn scheduler(
    outbox: &Outbox,
    queue: &TenantQueue,
    mut timers_in: mpsc::UnboundedReceiver<(Uuid, DateTime<Utc>)>,
    stop: &CancellationToken,
) {
    let mut timers: BTreeMap<DateTime<Utc>, BTreeSet<Uuid>> = BTreeMap::new();
    let mut sweep = tokio::time::interval(outbox.config.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = outbox.clock.now();
        while let Some(entry) = timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for tenant in entry.remove() {
                queue.push(tenant);
            }
        }
        let next_timer = timers
            .keys()
            .next()
            .map(|at| (*at - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            () = stop.cancelled() => return,
            () = outbox.wake.0.notify.notified() => {
                for tenant in outbox.wake.take() {
                    queue.push(tenant);
                }
            }
            Some((tenant, at)) = timers_in.recv() => {
                // A delivery another worker is just claiming can look due: look again shortly.
                let at = at.max(outbox.clock.now() + chrono::Duration::milliseconds(100));
                timers.entry(at).or_default().insert(tenant);
            }
            _ = sweep.tick() => match outbox.sweep().await {
                Ok(due) => {
                    for (tenant, at) in due {
                        timers.entry(at).or_default().insert(tenant);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
            },
            () = tokio::time::sleep(next_timer) => {}
        }
    }
}

/// The delay before attempt `attempts + 1`: `base × 2^(attempts-1)`, at most `max`, with
/// equal jitter (half of it fixed, half random).
pub fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let doubled = base
        .saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1))
        .min(max);
    let half = doubled / 2;
    let random = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(random)
}

impl Job for Outbox {
    const NAME: &'static str = "notification_outbox";
    type Report = Report;

    /// One pass: sweeps every tenant and sends everything due now.
    async fn run_once(&self) -> anyhow::Result<Report> {
        let now = self.clock.now();
        let mut report = Report::default();
        for (tenant, due) in self.sweep().await? {
            if due <= now {
                self.drain(tenant, &mut report).await?;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_maximum_with_equal_jitter() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(60));
        for attempts in 1..=12 {
            let full = (base * 2u32.pow(attempts as u32 - 1)).min(max);
            let delays: Vec<Duration> = (0..200).map(|_| backoff(base, max, attempts)).collect();
            for d in &delays {
                assert!(
                    *d >= full / 2 && *d <= full,
                    "attempt {attempts}: {d:?} outside {:?}..={full:?}",
                    full / 2
                );
            }
            let distinct: BTreeSet<Duration> = delays.iter().copied().collect();
            assert!(distinct.len() > 10, "attempt {attempts}: jittered");
        }
        // It grows: each attempt's shortest delay is the previous one's longest, to the cap.
        assert!(backoff(base, max, 0) <= base, "below 1 counts as 1");
        assert!(backoff(base, max, 1) <= Duration::from_secs(2));
        assert!(backoff(base, max, 3) >= Duration::from_secs(4));
        assert!(
            backoff(base, max, 50) >= max / 2,
            "the cap, without overflow"
        );
    }
}
