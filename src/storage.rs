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
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::config::{Config, MediaStoreConfig, S3Config};

/// S3 refuses multipart parts under 5 MiB (but the last), so an S3 upload holds up to one
/// part in memory; a directory takes any size, so there a part is small.
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
const DIRECTORY_PART_BYTES: usize = 256 * 1024;
/// Parts of one upload in flight to the store at once.
const PARTS_IN_FLIGHT: usize = 2;

/// The object store for media, with the upload size limit and the cap on uploads in flight.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    part_bytes: usize,
    uploads: Arc<Semaphore>,
    pub max_bytes: u64,
}

impl MediaStore {
    /// Opens (and creates) the configured directory, or the client of the configured bucket
    /// (which makes no request: [`MediaStore::check`] does).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (store, part_bytes): (Arc<dyn ObjectStore>, usize) = match &config.media_store {
            MediaStoreConfig::Directory(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "creating the media directory {} (MEDIA_STORE)",
                        dir.display()
                    )
                })?;
                let local = LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("opening MEDIA_STORE {}", dir.display()))?;
                (Arc::new(local), DIRECTORY_PART_BYTES)
            }
            MediaStoreConfig::S3(s3) => (
                s3_bucket(s3)
                    .with_context(|| format!("MEDIA_STORE s3://{}/{}", s3.bucket, s3.prefix))?,
                S3_PART_BYTES,
            ),
        };
        Ok(Self {
            store,
            part_bytes,
            uploads: Arc::new(Semaphore::new(config.media_max_concurrent_uploads)),
            max_bytes: config.media_max_bytes,
        })
    }

    /// A place among the uploads in flight, or `None` when all are taken.
    pub fn admit_upload(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.uploads).try_acquire_owned().ok()
    }

    /// Starts writing the object `key` part by part; see [`Upload`].
    pub fn upload(&self, key: &str) -> Upload {
        let writer =
            BufWriter::with_capacity(Arc::clone(&self.store), Path::from(key), self.part_bytes)
                .with_max_concurrency(PARTS_IN_FLIGHT);
        Upload {
            writer: Some(writer),
            written: 0,
        }
    }

    /// Every object, with its key and last change (for the reconciliation with the rows).
    pub fn objects(&self) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.store.list(None)
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

    /// Deletes the bytes; a failure is logged, not returned: the metadata is already gone, and
    /// the cleanup job's reconciliation deletes what is left.
    pub async fn delete(&self, key: &str) {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(error = %e, key, "media bytes could not be deleted"),
        }
    }
}

/// An object being written. It becomes visible only at [`Upload::finish`]; dropped before
/// that (the request was cancelled, or failed), it aborts what the store holds of it.
pub struct Upload {
    writer: Option<BufWriter>,
    written: u64,
}

impl Upload {
    pub async fn write(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        self.written += bytes.len() as u64;
        let writer = self.writer.as_mut().context("the upload is finished")?;
        writer.put(bytes).await?;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the object.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let mut writer = self.writer.take().context("the upload is finished")?;
        writer.shutdown().await?;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "an abandoned upload could not be aborted");
                }
            });
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
