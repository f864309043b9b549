//! Applies directory invalidations that other instances announce through PostgreSQL NOTIFY.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::directory::{Directory, INVALIDATION_CHANNEL, Invalidation};
use crate::db::tls::PgTarget;

/// Listens until `shutdown`; reconnects after a lost connection, clearing the caches then
/// since notifications sent meanwhile were missed.
pub async fn run(target: PgTarget, directory: Directory, shutdown: CancellationToken) {
    let mut first = true;
    while !shutdown.is_cancelled() {
        if !first {
            directory.invalidate_all();
        }
        first = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = listen(&target, &directory) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "directory invalidation listener lost its connection");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen(target: &PgTarget, directory: &Directory) -> anyhow::Result<()> {
    let (client, mut connection) = target.connect().await.map_err(|e| target.explain(e))?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {INVALIDATION_CHANNEL}");
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
                    match serde_json::from_str::<Invalidation>(n.payload()) {
                        Ok(what) => directory.invalidate(&what).await,
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed invalidation"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("connection closed"),
            }
        }
    }
}
