//! Fan-out across instances (SPEC §7): a [`Publisher`] queues events to a task that sends them
//! through PostgreSQL `NOTIFY` (default) or Redis `PUBLISH` (when `REDIS_URL` is set); every
//! instance, the publishing one included, receives them through `LISTEN` / `SUBSCRIBE` and
//! hands them to its local [`Hub`], so all instances behave alike.
//!
//! A payload is a JSON array of events, as many as fit in one `NOTIFY` (under its 8,000-byte
//! limit); an event larger than that is stored in `hub_events` and the array carries its
//! reference (`{"tenant_id", "ref"}`). Redis has no such limit, so it carries events inline.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Channel, Event, Hub};
use crate::db::Db;
use crate::db::listen::{self, Listener, Subscriber};
use crate::metrics::Metrics;

/// The `NOTIFY` channel and the Redis channel.
pub const CHANNEL: &str = "convcommerce_events";
/// The largest payload sent through `NOTIFY` (PostgreSQL refuses 8,000 bytes and more).
pub const NOTIFY_LIMIT: usize = 7_900;
/// Batches waiting for the sender; beyond it `publish` drops and counts them.
const QUEUE: usize = 16_384;
/// How often the hub drops streams nobody follows.
const SWEEP: Duration = Duration::from_secs(30);

/// One element of a payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Wire {
    Stored {
        tenant_id: Uuid,
        #[serde(rename = "ref")]
        id: i64,
    },
    Inline(Event),
}

/// What producers call after their rows commit. Cheap to clone; never waits.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Vec<Event>>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Queues `events` for the fan-out, in order.
    pub fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if self.queue.try_send(events.to_vec()).is_err() {
            tracing::warn!(events = events.len(), "the hub's fan-out queue is full");
            self.metrics.ws.fanout_dropped(events.len() as u64);
        }
    }
}

/// Starts the sender, the receiver and the sweep; they stop at `stop`. Events travel
/// through Redis when `redis_url` is given, else through `NOTIFY`, received on `listener`.
pub fn start(
    listener: &mut Listener,
    redis_url: Option<&SecretString>,
    db: Db,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<(Publisher, Vec<JoinHandle<()>>)> {
    let (queue, batches) = mpsc::channel(QUEUE);
    let redis = redis_url
        .map(|url| redis::Client::open(url.expose_secret()))
        .transpose()?;
    let mut tasks = vec![tokio::spawn(send(
        batches,
        db.clone(),
        redis.clone(),
        metrics.clone(),
        stop.clone(),
    ))];
    match redis {
        Some(client) => {
            let (hub, stop) = (hub.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                listen::follow(
                    "the hub's Redis subscription",
                    stop,
                    || hub.reset(None),
                    || subscribe_redis(&client, &hub),
                )
                .await
            }));
        }
        None => listener.subscribe(
            CHANNEL,
            Arc::new(Feed {
                db,
                hub: hub.clone(),
            }),
        ),
    }
    tasks.push(tokio::spawn(sweep(hub, stop)));
    Ok((Publisher { queue, metrics }, tasks))
}

async fn sweep(hub: Arc<Hub>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => hub.sweep(),
        }
    }
}

async fn send(
    mut batches: mpsc::Receiver<Vec<Event>>,
    db: Db,
    redis: Option<redis::Client>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut redis_conn = None;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => return,
            },
        };
        // Whatever else waits goes out with it, in as few messages as fit.
        let mut events = first;
        while let Ok(more) = batches.try_recv() {
            events.extend(more);
        }
        let count = events.len() as u64;
        let sent = match &redis {
            Some(client) => publish_redis(client, &mut redis_conn, &events).await,
            None => notify(&db, &events).await,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %format!("{e:#}"), "the hub's fan-out failed to send");
            metrics.ws.fanout_dropped(count);
        }
    }
}

/// The payloads of `items` (each a serialized [`Wire`]), each under `limit` bytes.
fn pack(items: &[String], limit: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::from("[");
    for item in items {
        if current.len() > 1 && current.len() + item.len() + 2 > limit {
            current.push(']');
            payloads.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(item);
    }
    if current.len() > 1 {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

async fn notify(db: &Db, events: &[Event]) -> anyhow::Result<()> {
    let mut items = Vec::with_capacity(events.len());
    for event in events {
        let inline = serde_json::to_string(event)?;
        if inline.len() + 2 <= NOTIFY_LIMIT {
            items.push(inline);
            continue;
        }
        let channel = serde_json::to_value(event.channel)?;
        let channel = channel.as_str().unwrap_or_default();
        let row = db
            .for_tenant(event.tenant_id)
            .query_opt(
                "INSERT INTO hub_events (tenant_id, channel, user_id, data)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&event.tenant_id, &channel, &event.user_id, &event.data],
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stored event returned no id"))?;
        items.push(serde_json::to_string(&Wire::Stored {
            tenant_id: event.tenant_id,
            id: row.get(0),
        })?);
    }
    let conn = db.platform().await?;
    for payload in pack(&items, NOTIFY_LIMIT) {
        conn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
    }
    Ok(())
}

async fn publish_redis(
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    events: &[Event],
) -> anyhow::Result<()> {
    if conn.is_none() {
        *conn = Some(client.get_multiplexed_async_connection().await?);
    }
    let connection = conn.as_mut().expect("connected above");
    let payload = serde_json::to_string(events)?;
    let published = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(payload)
        .query_async::<i64>(connection)
        .await;
    if let Err(e) = published {
        // The next batch reconnects.
        *conn = None;
        return Err(e.into());
    }
    Ok(())
}

/// Follows the fan-out on the instance's `LISTEN` connection (without Redis).
struct Feed {
    db: Db,
    hub: Arc<Hub>,
}

impl Subscriber for Feed {
    fn notified<'a>(&'a self, payload: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(deliver(payload, &self.db, &self.hub))
    }

    /// Events sent while the connection was down are lost: every stream starts again.
    fn missed(&self) {
        self.hub.reset(None);
    }
}

async fn subscribe_redis(client: &redis::Client, hub: &Hub) -> anyhow::Result<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload()?;
        match serde_json::from_str::<Vec<Event>>(&payload) {
            Ok(events) => events.iter().for_each(|e| {
                hub.deliver(e);
            }),
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed hub payload"),
        }
    }
    anyhow::bail!("subscription closed")
}

/// Hands a payload's events to the hub, in order, reading stored ones back.
async fn deliver(payload: &str, db: &Db, hub: &Hub) {
    let items = match serde_json::from_str::<Vec<Wire>>(payload) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a malformed hub payload");
            return;
        }
    };
    for item in items {
        match item {
            Wire::Inline(event) => {
                hub.deliver(&event);
            }
            Wire::Stored { tenant_id, id } => match stored(db, tenant_id, id).await {
                Ok(event) => {
                    hub.deliver(&event);
                }
                Err(e) => {
                    // The tenant's stream has a hole: its clients must refetch.
                    tracing::warn!(%tenant_id, error = %format!("{e:#}"), "a stored hub event could not be read");
                    hub.reset(Some(tenant_id));
                }
            },
        }
    }
}

async fn stored(db: &Db, tenant_id: Uuid, id: i64) -> anyhow::Result<Event> {
    let row = db
        .for_tenant(tenant_id)
        .read_opt(
            "SELECT channel, user_id, data FROM hub_events WHERE tenant_id = $1 AND id = $2",
            &[&tenant_id, &id],
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("hub event {id} is gone"))?;
    let channel: String = row.get(0);
    Ok(Event {
        tenant_id,
        channel: serde_json::from_value::<Channel>(serde_json::Value::String(channel))?,
        user_id: row.get(1),
        data: row.get(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_keep_the_order() {
        let items: Vec<String> = (0..100).map(|n| format!("{{\"n\":{n}}}")).collect();
        let payloads = pack(&items, 100);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= 100));
        let back: Vec<serde_json::Value> = payloads
            .iter()
            .flat_map(|p| serde_json::from_str::<Vec<serde_json::Value>>(p).unwrap())
            .collect();
        let numbers: Vec<u64> = back.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (0..100).collect::<Vec<u64>>());
        assert!(pack(&[], 100).is_empty());
    }

    #[test]
    fn a_reference_is_not_taken_for_an_event() {
        let tenant = Uuid::now_v7();
        let raw = format!(
            r#"[{{"tenant_id":"{tenant}","ref":7}},{{"tenant_id":"{tenant}","channel":"alerts","data":{{}}}}]"#
        );
        let items: Vec<Wire> = serde_json::from_str(&raw).unwrap();
        assert!(matches!(items[0], Wire::Stored { id: 7, .. }));
        assert!(matches!(&items[1], Wire::Inline(e) if e.channel == Channel::Alerts));
    }
}
