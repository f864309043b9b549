//! Where uploaded bytes live: an `object_store` backend (`MEDIA_STORE`: a local directory or an
//! S3-compatible bucket). Infrastructure, below the features: the media feature decides what
//! is stored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::{Config, MediaStoreConfig, S3Config};

/// The object store for media, with the upload size limit.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    pub max_bytes: u64,
}

impl MediaStore {
    /// Opens (and creates) the configured directory, or the client of the configured bucket
    /// (which makes no request: [`MediaStore::check`] does).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = match &config.media_store {
            MediaStoreConfig::Directory(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "creating the media directory {} (MEDIA_STORE)",
                        dir.display()
                    )
                })?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(dir)
                        .with_context(|| format!("opening MEDIA_STORE {}", dir.display()))?,
                )
            }
            MediaStoreConfig::S3(s3) => s3_bucket(s3)
                .with_context(|| format!("MEDIA_STORE s3://{}/{}", s3.bucket, s3.prefix))?,
        };
        Ok(Self {
            store,
            max_bytes: config.media_max_bytes,
        })
    }

    /// Lists the store once, so that a missing bucket or directory, or credentials it refuses,
    /// stop the server at start instead of failing uploads.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self.store.list(None).next().await {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
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

/// The bucket's client, its keys under the prefix. A few quick retries: an upload waits on
/// the store, and a store that is down should answer an error, not hold requests for minutes
/// (object_store's default).
fn s3_bucket(s3: &S3Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    // object_store's HTTP client takes rustls's process-wide provider (Cargo.toml); an error
    // here means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::new().with_bucket_name(&s3.bucket);
    for (name, value) in &s3.aws {
        let key = name
            .to_ascii_lowercase()
            .parse()
            .with_context(|| format!("{name} is not an S3 setting"))?;
        builder = builder.with_config(key, value.expose_secret());
    }
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .with_endpoint(endpoint.as_str().trim_end_matches('/'))
            .with_allow_http(endpoint.scheme() == "http");
    }
    let bucket = builder
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        })
        .build()?;
    Ok(if s3.prefix.is_empty() {
        Arc::new(bucket)
    } else {
        Arc::new(PrefixStore::new(bucket, s3.prefix.as_str()))
    })
}
