//! Where uploaded bytes live: an `object_store` backend (a local directory, `MEDIA_STORE`).
//! Infrastructure, below the features: the media feature decides what is stored.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use uuid::Uuid;

use crate::config::Config;

/// The object store for media, with the upload size limit.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    pub max_bytes: u64,
}

impl MediaStore {
    /// Opens (and creates) the configured directory.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.media_store).with_context(|| {
            format!(
                "creating the media directory {} (MEDIA_STORE)",
                config.media_store.display()
            )
        })?;
        let local = LocalFileSystem::new_with_prefix(&config.media_store)
            .with_context(|| format!("opening MEDIA_STORE {}", config.media_store.display()))?;
        Ok(Self {
            store: Arc::new(local),
            max_bytes: config.media_max_bytes,
        })
    }

    /// Objects are keyed by tenant, so one tenant's files share a prefix.
    pub fn key(tenant_id: Uuid, media_id: Uuid) -> String {
        format!("{tenant_id}/{media_id}")
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.store.put(&Path::from(key), bytes.into()).await?;
        Ok(())
    }

    pub async fn get(
        &self,
        key: &str,
    ) -> anyhow::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(self.store.get(&Path::from(key)).await?.into_stream())
    }

    /// Deletes the bytes; a failure is logged, not returned: the metadata is already gone.
    pub async fn delete(&self, key: &str) {
        if let Err(e) = self.store.delete(&Path::from(key)).await {
            tracing::warn!(error = %e, key, "media bytes could not be deleted");
        }
    }
}
