//! One `LISTEN` connection per instance (`DATABASE_LISTEN_URL`), shared by everything that
//! follows a `NOTIFY` channel: the directory's invalidations, the WebSocket hub's fan-out. A
//! lost connection is re-opened after a second; its subscribers are told that notifications
//! sent meanwhile were missed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::tls::PgTarget;

/// How long a lost connection waits before it is opened again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Something that follows a channel.
pub trait Subscriber: Send + Sync + 'static {
    /// One notification's payload. Notifications are handled one at a time, in the order
    /// PostgreSQL delivers them, so this should be quick.
    fn notified<'a>(&'a self, payload: &'a str) -> BoxFuture<'a, ()>;
    /// The connection was lost and is open again: whatever was notified meanwhile is lost.
    fn missed(&self);
}

/// The channels this instance follows, and who follows each.
#[derive(Default)]
pub struct Listener {
    subscribers: Vec<(&'static str, Arc<dyn Subscriber>)>,
}

impl Listener {
    /// `channel` must be a plain identifier (it is quoted into `LISTEN`).
    pub fn subscribe(&mut self, channel: &'static str, subscriber: Arc<dyn Subscriber>) {
        debug_assert!(
            channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        );
        self.subscribers.push((channel, subscriber));
    }

    /// Listens on `target` until `stop`.
    pub fn spawn(self, target: PgTarget, stop: CancellationToken) -> JoinHandle<()> {
        let subscribers = Arc::new(self.subscribers);
        tokio::spawn(follow(
            "LISTEN connection",
            stop,
            {
                let subscribers = subscribers.clone();
                move || subscribers.iter().for_each(|(_, s)| s.missed())
            },
            move || {
                let (target, subscribers) = (target.clone(), subscribers.clone());
                async move { listen(&target, &subscribers).await }
            },
        ))
    }
}

/// Runs `session` until `stop`, again after it fails (a second later), calling `missed`
/// before every run but the first: the shape of every subscription that can lose messages
/// while its connection is down (PostgreSQL `LISTEN`, Redis `SUBSCRIBE`).
pub async fn follow<S, F>(what: &str, stop: CancellationToken, missed: impl Fn(), mut session: S)
where
    S: FnMut() -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let mut first = true;
    while !stop.is_cancelled() {
        if !first {
            missed();
        }
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            result = session() => {
                if let Err(e) = result {
                    tracing::warn!(error = %format!("{e:#}"), "{what} lost");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

async fn listen(
    target: &PgTarget,
    subscribers: &[(&'static str, Arc<dyn Subscriber>)],
) -> anyhow::Result<()> {
    let (client, mut connection) = target.connect().await.map_err(|e| target.explain(e))?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement: String = subscribers
        .iter()
        .map(|(channel, _)| format!("LISTEN \"{channel}\";"))
        .collect();
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            result = &mut listen, if !listening => {
                result?;
                listening = true;
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    for (_, subscriber) in subscribers.iter().filter(|(c, _)| *c == n.channel()) {
                        subscriber.notified(n.payload()).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("connection closed"),
            }
        }
    }
}
