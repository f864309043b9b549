//! SQL for media, and the bytes through [`MediaStore`]. Every statement also filters
//! `tenant_id` explicitly.

use uuid::Uuid;

use super::model::{Media, NewMedia};
use crate::db::{DbError, OnConstraint, TenantDb, Violation};
use crate::monitoring::activity::{Change, Recorder};
use crate::storage::MediaStore;

/// What can go wrong storing media, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no such media")]
    NotFound,
    /// A verification's document names the media (migrations/0010_trust.sql).
    #[error("the media belongs to a verification")]
    InUse,
    #[error(transparent)]
    Db(#[from] DbError),
    /// The object store failed (the row was not committed).
    #[error("object store: {0:#}")]
    Storage(anyhow::Error),
}

impl Violation for MediaError {
    fn violated(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.violated(),
            _ => None,
        }
    }
}

type Result<T, E = MediaError> = std::result::Result<T, E>;

/// Completes the upload's object, then inserts its row and its activity (one transaction,
/// where the storage quota trigger runs). Bytes whose row was not committed are deleted: a
/// refusal, or a failure before the COMMIT (no connection, a lost one mid-statement). Only
/// when the COMMIT itself got no answer may the row have committed, so then the bytes stay
/// and the cleanup job's reconciliation deletes them if no row appears. Runs to the end once
/// started: the caller gives it a task of its own, so a client that goes away cannot split
/// bytes from row.
pub async fn create(
    db: &TenantDb,
    activity: &Recorder,
    store: &MediaStore,
    base: &str,
    new: NewMedia,
) -> Result<Media> {
    let NewMedia {
        id,
        storage_key,
        content_type,
        filename,
        upload,
    } = new;
    let size = i64::try_from(upload.written()).map_err(|e| MediaError::Storage(e.into()))?;
    if let Err(e) = upload.finish().await {
        store.delete(&storage_key).await;
        return Err(MediaError::Storage(e));
    }
    let inserted = async {
        let tx = db.begin().await?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO media (tenant_id, id, content_type, size_bytes, filename,
                         storage_key)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
                    Media::COLUMNS
                ),
                &[
                    &tx.tenant_id(),
                    &id,
                    &content_type,
                    &size,
                    &filename,
                    &storage_key,
                ],
            )
            .await?;
        Ok::<_, DbError>((tx, row))
    }
    .await;
    let (tx, row) = match inserted {
        Ok(done) => done,
        Err(e) => {
            store.delete(&storage_key).await;
            return Err(e.into());
        }
    };
    let change = Change::new("media.uploaded", "media", id)
        .details(serde_json::json!({"content_type": content_type, "size_bytes": size}));
    match activity.commit(tx, change).await {
        Ok(()) => Ok(Media::from_row(&row, base)),
        Err(e) => {
            if !matches!(e, DbError::Unavailable(_)) {
                store.delete(&storage_key).await;
            }
            Err(e.into())
        }
    }
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

/// Deletes a media (products that showed it lose it): the row and its activity (one pooled
/// transaction), then, once committed, its bytes.
pub async fn delete(
    db: &TenantDb,
    activity: &Recorder,
    store: &MediaStore,
    id: Uuid,
) -> Result<()> {
    let tx = db.begin().await?;
    let row = tx
        .query_opt(
            "DELETE FROM media WHERE tenant_id = $1 AND id = $2 RETURNING storage_key",
            &[&tx.tenant_id(), &id],
        )
        .await
        .on_constraint("verification_media_media_fkey", || MediaError::InUse)?
        .ok_or(MediaError::NotFound)?;
    activity
        .commit(tx, Change::new("media.deleted", "media", id))
        .await?;
    store.delete(row.get(0)).await;
    Ok(())
}
