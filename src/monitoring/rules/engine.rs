//! The evaluator the activity sink calls per batch: compiled rules matched in memory (cached
//! per tenant, recompiled when the tenant's rule-set version moves), then, for the matches,
//! each (rule, group) window updated under its row lock in PostgreSQL and alerts inserted in
//! the same transaction, so instances sharing a database count together and fire once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::condition::{EventFields, Field, FieldValue};
use futures_util::future::BoxFuture;

use super::model::{Alert, CompiledRule};
use super::store::{self, RuleError};
use super::window::State;
use crate::db::{Db, DbError, TenantTx};
use crate::monitoring::hub::fanout::Publisher;
use crate::monitoring::hub::{Channel, Event};

/// Where fired alerts go once committed (notifications, the WebSocket hub).
pub trait AlertSink: Send + Sync {
    fn fired(&self, tenant_id: Uuid, alert: &Alert);
}

/// Alerts go out live, on their tenant's `alerts` channel, as they fire.
pub struct Announce(pub Publisher);

impl AlertSink for Announce {
    fn fired(&self, tenant_id: Uuid, alert: &Alert) {
        announce(&self.0, tenant_id, alert);
    }
}

/// Publishes `alert` (fired, acknowledged or resolved) on its tenant's `alerts` channel.
pub fn announce(publisher: &Publisher, tenant_id: Uuid, alert: &Alert) {
    if let Ok(data) = serde_json::to_value(alert) {
        publisher.publish(&[Event {
            tenant_id,
            channel: Channel::Alerts,
            user_id: None,
            data,
        }]);
    }
}

/// A sink that drops alerts (they are stored either way).
impl AlertSink for () {
    fn fired(&self, _: Uuid, _: &Alert) {}
}

/// Work to do once the alert's transaction has committed.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What an alert sets off in the transaction that stores it (its notifications, SPEC §8), so
/// both commit together; the [`AfterCommit`] it returns runs after the commit.
pub trait AlertHook: Send + Sync {
    fn fired<'a>(
        &'a self,
        tx: &'a TenantTx,
        rule: &'a CompiledRule,
        alert: &'a Alert,
    ) -> BoxFuture<'a, Result<AfterCommit, DbError>>;
}

/// The matching events of a batch per (rule id, group key): the rule's index in
/// [`TenantRules::rules`] and the events' times and ids.
type Matches = BTreeMap<(Uuid, String), (usize, Vec<(DateTime<Utc>, Uuid)>)>;

struct TenantRules {
    version: i64,
    rules: Vec<CompiledRule>,
}

#[derive(Clone)]
pub struct Engine {
    db: Db,
    /// Compiled rules per tenant, checked against the rule-set version on every batch.
    cache: moka::future::Cache<Uuid, Arc<TenantRules>>,
    sink: Arc<dyn AlertSink>,
    hook: Option<Arc<dyn AlertHook>>,
}

/// The event's id and time, which the engine needs of every event.
fn identity(event: &dyn EventFields) -> Option<(Uuid, DateTime<Utc>)> {
    let id = match event.field(&Field::Id)? {
        FieldValue::Text(s) => Uuid::parse_str(&s).ok()?,
        _ => return None,
    };
    let at = match event.field(&Field::CreatedAt)? {
        FieldValue::Time(t) => t,
        _ => return None,
    };
    Some((id, at))
}

impl Engine {
    pub fn new(db: Db, sink: Arc<dyn AlertSink>) -> Self {
        Self {
            db,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            sink,
            hook: None,
        }
    }

    /// Runs `hook` in the transaction of every alert fired.
    pub fn with_hook(mut self, hook: Arc<dyn AlertHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    async fn rules(&self, tenant_id: Uuid) -> Result<Arc<TenantRules>, RuleError> {
        let db = self.db.for_tenant(tenant_id);
        let version = store::version(&db).await?;
        if let Some(cached) = self.cache.get(&tenant_id).await
            && cached.version == version
        {
            return Ok(cached);
        }
        let (version, rules) = store::enabled(&db).await?;
        let compiled = Arc::new(TenantRules {
            version,
            rules: rules.iter().filter_map(CompiledRule::from_rule).collect(),
        });
        self.cache.insert(tenant_id, compiled.clone()).await;
        Ok(compiled)
    }

    /// Evaluates one committed batch of `tenant_id`'s activities (each needs `id` and
    /// `created_at`); returns the alerts it fired, already stored and handed to the sink.
    pub async fn evaluate<E: EventFields>(
        &self,
        tenant_id: Uuid,
        batch: &[E],
    ) -> Result<Vec<Alert>, RuleError> {
        let rules = self.rules(tenant_id).await?;
        // Sorted by (rule, group): every instance locks window rows in this order, so two
        // batches cannot deadlock.
        let mut matched = Matches::new();
        for event in batch {
            let Some((id, at)) = identity(event) else {
                continue;
            };
            for (i, rule) in rules.rules.iter().enumerate() {
                if rule.parts.matches(event, at) {
                    matched
                        .entry((rule.id, rule.parts.group_key(event)))
                        .or_insert_with(|| (i, Vec::new()))
                        .1
                        .push((at, id));
                }
            }
        }
        if matched.is_empty() {
            return Ok(Vec::new());
        }
        let alerts = self.apply(tenant_id, &rules, matched).await?;
        for alert in &alerts {
            self.sink.fired(tenant_id, alert);
        }
        Ok(alerts)
    }

    async fn apply(
        &self,
        tenant_id: Uuid,
        rules: &TenantRules,
        matched: Matches,
    ) -> Result<Vec<Alert>, RuleError> {
        let db = self.db.for_tenant(tenant_id);
        let tx = db.begin().await?;
        let mut alerts = Vec::new();
        let mut after_commit = Vec::new();
        let empty = serde_json::to_value(State::default()).map_err(decode)?;
        for ((rule_id, group), (index, mut events)) in matched {
            let rule = &rules.rules[index];
            // Inserts the row or locks the existing one, and reads it, in one statement; a
            // rule deleted since it was compiled gives no row.
            let Some(row) = tx
                .query_opt(
                    "INSERT INTO monitoring_rule_windows (tenant_id, rule_id, group_key, state)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (
                         SELECT 1 FROM monitoring_rules WHERE tenant_id = $1 AND id = $2)
                     ON CONFLICT (tenant_id, rule_id, group_key)
                     DO UPDATE SET state = monitoring_rule_windows.state
                     RETURNING state",
                    &[&tx.tenant_id(), &rule_id, &group, &empty],
                )
                .await?
            else {
                continue;
            };
            let mut state: State = serde_json::from_value(row.get(0)).unwrap_or_default();
            events.sort();
            let mut firings = Vec::new();
            for (at, id) in events {
                firings.extend(state.push(&rule.evaluator, at, id));
            }
            tx.execute(
                "UPDATE monitoring_rule_windows SET state = $4, updated_at = now()
                 WHERE tenant_id = $1 AND rule_id = $2 AND group_key = $3",
                &[
                    &tx.tenant_id(),
                    &rule_id,
                    &group,
                    &serde_json::to_value(&state).map_err(decode)?,
                ],
            )
            .await?;
            for firing in firings {
                let row = tx
                    .query_one(
                        &format!(
                            "INSERT INTO monitoring_alerts (tenant_id, id, rule_id, severity,
                                 group_key, event_count, first_event_at, last_event_at,
                                 sample_activity_ids)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {}",
                            Alert::COLUMNS
                        ),
                        &[
                            &tx.tenant_id(),
                            &Uuid::now_v7(),
                            &rule_id,
                            &rule.severity.as_str(),
                            &group,
                            &firing.event_count,
                            &firing.first_event_at,
                            &firing.last_event_at,
                            &firing.samples,
                        ],
                    )
                    .await?;
                let alert = Alert::from_row(&row)?;
                if let Some(hook) = &self.hook {
                    after_commit.push(hook.fired(&tx, rule, &alert).await?);
                }
                alerts.push(alert);
            }
        }
        tx.commit().await?;
        for done in after_commit {
            done();
        }
        Ok(alerts)
    }
}

fn decode(e: serde_json::Error) -> RuleError {
    RuleError::Db(DbError::Decode(e.to_string()))
}
