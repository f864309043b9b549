//! What happens to an activity once it is durable: it goes out on the tenant's `activity`
//! channel and through the rules engine, whose alerts go out on the `alerts` channel. The
//! [`ActivitySink`] the writer and the in-transaction recorder call.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::activity::ActivitySink;
use super::activity::model::Activity;
use super::hub::fanout::Publisher;
use super::hub::{Channel, Event};
use super::rules::engine::{AlertHook, Announce, Engine};
use crate::metrics::Metrics;

/// Batches waiting for the rules engine; over it a batch is counted as dropped.
const EVALUATION_QUEUE: usize = 1_024;

pub struct Live {
    publisher: Publisher,
    evaluate: mpsc::Sender<Vec<Activity>>,
    metrics: Arc<Metrics>,
}

impl ActivitySink for Live {
    fn recorded(&self, batch: &[Activity]) {
        let events: Vec<Event> = batch
            .iter()
            .filter_map(|a| {
                Some(Event {
                    tenant_id: a.tenant_id,
                    channel: Channel::Activity,
                    user_id: None,
                    data: serde_json::to_value(a).ok()?,
                })
            })
            .collect();
        self.publisher.publish(&events);
        if self.evaluate.try_send(batch.to_vec()).is_err() {
            self.metrics
                .activity_dropped("evaluation_full", batch.len() as u64);
        }
    }
}

/// The sink and the task that runs the rules engine over what it receives, tenant by tenant,
/// until `stop`, after which it evaluates what is queued. `alerts` runs in each alert's
/// transaction (the notifications).
pub fn spawn(
    engine_db: crate::db::Db,
    publisher: Publisher,
    alerts: Arc<dyn AlertHook>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> (Arc<Live>, JoinHandle<()>) {
    let (evaluate, mut batches) = mpsc::channel::<Vec<Activity>>(EVALUATION_QUEUE);
    let engine = Engine::new(engine_db, Arc::new(Announce(publisher.clone()))).with_hook(alerts);
    let task = tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                () = stop.cancelled() => {
                    batches.close();
                    batches.recv().await
                }
            };
            let Some(mut batch) = batch else { break };
            while let Ok(more) = batches.try_recv() {
                batch.extend(more);
            }
            let mut by_tenant: BTreeMap<Uuid, Vec<Activity>> = BTreeMap::new();
            for activity in batch {
                by_tenant
                    .entry(activity.tenant_id)
                    .or_default()
                    .push(activity);
            }
            for (tenant, activities) in by_tenant {
                if let Err(e) = engine.evaluate(tenant, &activities).await {
                    tracing::warn!(%tenant, error = %e, "rules could not be evaluated");
                }
            }
        }
    });
    let live = Arc::new(Live {
        publisher,
        evaluate,
        metrics,
    });
    (live, task)
}
