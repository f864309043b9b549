//! Where media bytes live: an `object_store` backend (a local directory, `MEDIA_STORE`), and
//! the content sniffing that decides what an upload is.

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

/// The media types accepted, recognised by their first bytes (never by the client's word).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some("image/webp")
    } else if starts(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

pub const ACCEPTED: &str = "JPEG, PNG, GIF, WebP or PDF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nIHDR"), Some("image/png"));
        assert_eq!(sniff(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
        for other in [
            &b""[..],
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"RIFF\x10\0\0\0WAVEfmt ",
            b"MZ\x90\0",
            b"\x89PN",
        ] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }
}
