//! The batch writer: activities that are not part of a data change (reads, failures,
//! rejections) queue in a bounded channel and are written about once a second, one
//! transaction per tenant with that tenant set. A full buffer drops the activity and counts
//! it (`convcommerce_activity_dropped_total{kind="buffer_full"}`); the request never waits.
//! After the server has drained, what is queued is written before the task ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ActivitySink;
use super::model::{Activity, NewActivity};
use super::store;
use crate::db::Db;
use crate::metrics::Metrics;

/// How far behind the log may be. A flush takes what a second brought (at most the buffer's
/// capacity): one transaction per tenant a second, however busy, is what keeps the log cheap.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The request side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct ActivityWriter {
    queue: mpsc::Sender<Activity>,
    metrics: Arc<Metrics>,
}

impl ActivityWriter {
    /// Queues `new`, or counts it dropped when the buffer is full.
    pub fn record(&self, new: NewActivity) {
        if self.queue.try_send(store::stamp(new)).is_err() {
            self.metrics.activity_dropped("buffer_full", 1);
        }
    }
}

/// Starts the writer with a buffer of `capacity` activities; it writes until `stop`, then
/// writes what is queued and ends.
pub fn spawn(
    db: Db,
    capacity: usize,
    sink: Arc<dyn ActivitySink>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> (ActivityWriter, JoinHandle<()>) {
    let capacity = capacity.max(1);
    let (queue, mut rx) = mpsc::channel(capacity);
    let writer = ActivityWriter {
        queue,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                got = rx.recv() => got,
                _ = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < capacity {
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(a) => batch.push(a),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => break,
                }
            }
            flush(&db, &mut batch, sink.as_ref(), &metrics).await;
        }
        rx.close();
        while let Some(a) = rx.recv().await {
            batch.push(a);
            if batch.len() >= capacity {
                flush(&db, &mut batch, sink.as_ref(), &metrics).await;
            }
        }
        flush(&db, &mut batch, sink.as_ref(), &metrics).await;
    });
    (writer, task)
}

/// Writes `batch` (emptying it), one transaction per tenant; a tenant whose write failed is
/// logged and counted, the others still go in.
async fn flush(db: &Db, batch: &mut Vec<Activity>, sink: &dyn ActivitySink, metrics: &Metrics) {
    let mut by_tenant: HashMap<Uuid, Vec<Activity>> = HashMap::new();
    for a in batch.drain(..) {
        by_tenant.entry(a.tenant_id).or_default().push(a);
    }
    for (tenant, rows) in by_tenant {
        match store::insert_batch(&db.for_tenant(tenant), &rows).await {
            Ok(()) => sink.recorded(&rows),
            Err(e) => {
                metrics.activity_dropped("write_failed", rows.len() as u64);
                tracing::warn!(%tenant, error = %e, count = rows.len(), "writing activities failed");
            }
        }
    }
}
