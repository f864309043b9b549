//! SQL for media, and the bytes through [`MediaStore`]. Every statement also filters
//! `tenant_id` explicitly.

use uuid::Uuid;

use super::model::{Media, NewMedia};
use crate::db::{DbError, TenantDb};
use crate::storage::MediaStore;

/// What can go wrong storing media, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no such media")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
    /// The object store failed (the row was not committed).
    #[error("object store: {0:#}")]
    Storage(anyhow::Error),
}

type Result<T, E = MediaError> = std::result::Result<T, E>;

/// Stores an upload in one transaction (where a storage quota check belongs): the row is
/// written, then the bytes; the row commits only once the bytes are stored.
pub async fn create(db: &TenantDb, store: &MediaStore, base: &str, new: NewMedia) -> Result<Media> {
    let tx = db.begin().await?;
    let id = Uuid::now_v7();
    let key = MediaStore::key(tx.tenant_id(), id);
    let size = i64::try_from(new.bytes.len()).map_err(|e| MediaError::Storage(e.into()))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO media (tenant_id, id, content_type, size_bytes, filename, storage_key)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
                Media::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &id,
                &new.content_type,
                &size,
                &new.filename,
                &key,
            ],
        )
        .await?;
    store
        .put(&key, new.bytes)
        .await
        .map_err(MediaError::Storage)?;
    if let Err(e) = tx.commit().await {
        store.delete(&key).await;
        return Err(e.into());
    }
    Ok(Media::from_row(&row, base))
}

/// One media's metadata, by key on a read lane.
pub async fn get(db: &TenantDb, id: Uuid, base: &str) -> Result<Media> {
    db.read_opt(
        &format!(
            "SELECT {} FROM media WHERE tenant_id = $1 AND id = $2",
            Media::COLUMNS
        ),
        &[&db.tenant_id(), &id],
    )
    .await?
    .map(|r| Media::from_row(&r, base))
    .ok_or(MediaError::NotFound)
}

/// The content type and object key of a media.
/// Content type, size and object key of a media (by key, on a read lane).
pub async fn locate(db: &TenantDb, id: Uuid) -> Result<(String, i64, String)> {
    let row = db
        .read_opt(
            "SELECT content_type, size_bytes, storage_key FROM media
             WHERE tenant_id = $1 AND id = $2",
            &[&db.tenant_id(), &id],
        )
        .await?
        .ok_or(MediaError::NotFound)?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Deletes a media (products that showed it lose it); then its bytes.
/// Deletes the row (one pooled statement), then its bytes.
pub async fn delete(db: &TenantDb, store: &MediaStore, id: Uuid) -> Result<()> {
    let row = db
        .query_opt(
            "DELETE FROM media WHERE tenant_id = $1 AND id = $2 RETURNING storage_key",
            &[&db.tenant_id(), &id],
        )
        .await?
        .ok_or(MediaError::NotFound)?;
    store.delete(row.get(0)).await;
    Ok(())
}
