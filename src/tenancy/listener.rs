//! Applies directory invalidations that other instances announce through PostgreSQL NOTIFY
//! (followed on the instance's shared `LISTEN` connection, `db::listen`).

use futures_util::future::BoxFuture;

use super::directory::{Directory, Invalidation};
use crate::db::listen::Subscriber;

impl Subscriber for Directory {
    fn notified<'a>(&'a self, payload: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match serde_json::from_str::<Invalidation>(payload) {
                Ok(what) => self.invalidate(&what).await,
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed invalidation"),
            }
        })
    }

    /// Invalidations sent while the connection was down are lost: forget everything.
    fn missed(&self) {
        let directory = self.clone();
        tokio::spawn(async move { directory.invalidate_all().await });
    }
}
