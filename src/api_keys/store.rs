//! SQL for API keys. Every statement also filters `tenant_id` explicitly.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::model::{ApiKey, CreatorType, MAX_KEYS, NewApiKey};
use crate::auth::api_key;
use crate::db::{DbError, TenantDb};
use crate::extract::PageRequest;
use crate::monitoring::activity::{Change, Recorder};
use crate::tenancy::directory::{Directory, Invalidation};

/// What can go wrong storing keys, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no such key")]
    NotFound,
    #[error("the tenant has its {MAX_KEYS} keys")]
    Limit,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Makes a key for the tenant (at most [`MAX_KEYS`]; creates serialise on the tenant's row)
/// with its activity; returns it and the secret, which is not stored.
pub async fn create(
    db: &TenantDb,
    activity: &Recorder,
    creator: (Uuid, CreatorType),
    new: &NewApiKey,
    now: DateTime<Utc>,
) -> Result<(ApiKey, String), KeyError> {
    let tx = db.begin().await?;
    let tenant_id = tx.tenant_id();
    tx.execute(
        "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
        &[&tenant_id],
    )
    .await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM api_keys WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?
        .get(0);
    if count >= MAX_KEYS {
        return Err(KeyError::Limit);
    }
    let made = api_key::generate(tenant_id);
    let id = Uuid::now_v7();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO api_keys (tenant_id, id, name, role, prefix, key_hash, created_by,
                     created_by_type, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {}",
                ApiKey::COLUMNS
            ),
            &[
                &tenant_id,
                &id,
                &new.name,
                &new.role.as_str(),
                &made.prefix,
                &made.hash.as_slice(),
                &creator.0,
                &creator.1,
                &now,
                &new.expires_at,
            ],
        )
        .await?;
    let key = ApiKey::from_row(&row);
    activity
        .commit(
            tx,
            Change::new("api_key.created", "api_key", id).details(json!({
                "name": key.name, "role": key.role, "prefix": key.prefix
            })),
        )
        .await?;
    Ok((key, made.key))
}

/// A page of the tenant's keys, newest first (on a read lane: the primary key's order).
pub async fn list(db: &TenantDb, page: PageRequest) -> Result<Vec<ApiKey>, DbError> {
    Ok(db
        .read(
            &format!(
                "SELECT {} FROM api_keys WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
                ApiKey::COLUMNS
            ),
            &[&db.tenant_id(), &page.after, &(page.limit + 1)],
        )
        .await?
        .iter()
        .map(ApiKey::from_row)
        .collect())
}

/// Revokes a key: the row goes, with its activity, and every instance forgets the key when
/// the NOTIFY sent in the same transaction arrives (this one at once).
pub async fn revoke(
    db: &TenantDb,
    activity: &Recorder,
    directory: &Directory,
    id: Uuid,
) -> Result<(), KeyError> {
    let tx = db.begin().await?;
    let tenant_id = tx.tenant_id();
    let gone = tx
        .query_opt(
            "DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2 RETURNING prefix",
            &[&tenant_id, &id],
        )
        .await?
        .ok_or(KeyError::NotFound)?;
    let prefix: String = gone.get(0);
    Directory::announce(&tx, &Invalidation::key(tenant_id, id)).await?;
    activity
        .commit(
            tx,
            Change::new("api_key.revoked", "api_key", id).details(json!({"prefix": prefix})),
        )
        .await?;
    directory
        .invalidate(&Invalidation::key(tenant_id, id))
        .await;
    Ok(())
}
