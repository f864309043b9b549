//! SQL of the platform-admin module. Tenant rows (`users`) are written only after
//! `set_tenant`, so row-level security checks them like any other write.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{LimitsChange, NewTenant};
use crate::db::{Db, DbError, OnConstraint, PlatformTx};
use crate::extract::PageRequest;
use crate::tenancy::directory::{Directory, Invalidation};
use crate::tenancy::model::{Tenant, TenantStatus};

fn select(filter: &str) -> String {
    format!("SELECT {} FROM tenants {filter}", Tenant::COLUMNS)
}

/// What can go wrong storing tenants, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("no such tenant")]
    NotFound,
    #[error("the slug is taken")]
    SlugTaken,
    #[error(transparent)]
    Db(#[from] DbError),
}

type Result<T, E = TenantError> = std::result::Result<T, E>;

/// Creates the tenant and its owner in one platform transaction.
pub async fn create(db: &Db, new: &NewTenant) -> Result<Tenant> {
    let tx = db.begin_platform().await?;
    let id = Uuid::now_v7();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $3) RETURNING {}",
                Tenant::COLUMNS
            ),
            &[&id, &new.name, &new.slug.as_str()],
        )
        .await
        .on_constraint("tenants_slug_key", || TenantError::SlugTaken)?;
    insert_owner(&tx, id, new).await?;
    tx.commit().await?;
    Ok(Tenant::from_row(&row))
}

async fn insert_owner(tx: &PlatformTx, tenant_id: Uuid, new: &NewTenant) -> Result<()> {
    tx.set_tenant(tenant_id).await?;
    tx.execute(
        "INSERT INTO users (tenant_id, id, external_id, email, role)
         VALUES ($1, $2, $3, $4, 'owner')",
        &[
            &tenant_id,
            &Uuid::now_v7(),
            &new.owner_external_id,
            &new.owner_email.as_str(),
        ],
    )
    .await?;
    Ok(())
}

/// A page of tenants, newest first (pooled).
pub async fn list(db: &Db, page: PageRequest) -> Result<Vec<Tenant>> {
    let conn = db.platform().await?;
    let rows = conn
        .query(
            &select("WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"),
            &[&page.after, &(page.limit + 1)],
        )
        .await?;
    Ok(rows.iter().map(Tenant::from_row).collect())
}

/// The id of the tenant with `slug`, if there is one.
pub async fn id_by_slug(db: &Db, slug: &str) -> Result<Option<Uuid>> {
    let conn = db.platform().await?;
    Ok(conn
        .query_opt("SELECT id FROM tenants WHERE slug = $1", &[&slug])
        .await?
        .map(|r| r.get(0)))
}

pub async fn get(db: &Db, id: Uuid) -> Result<Tenant> {
    let conn = db.platform().await?;
    conn.query_opt(&select("WHERE id = $1"), &[&id])
        .await?
        .map(|r| Tenant::from_row(&r))
        .ok_or(TenantError::NotFound)
}

/// Changes a tenant's status and limits. Setting a suspended tenant active records when
/// (`reactivated_at`, the service clock's `now`): an automatic suspension then needs evidence
/// newer than that.
pub async fn update(
    db: &Db,
    id: Uuid,
    status: Option<TenantStatus>,
    limits: &LimitsChange,
    now: DateTime<Utc>,
) -> Result<Tenant> {
    let tx = db.begin_platform().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE tenants
                 SET status = coalesce($2, status),
                     status_reason = CASE WHEN $2::text IS NULL THEN status_reason END,
                     reactivated_at = CASE WHEN $2 = 'active' AND status = 'suspended' THEN $5
                                           ELSE reactivated_at END,
                     limits = (limits - $3::text[]) || $4::jsonb,
                     updated_at = now()
                 WHERE id = $1
                 RETURNING {}",
                Tenant::COLUMNS
            ),
            &[
                &id,
                &status.map(TenantStatus::as_str),
                &limits.reset,
                &serde_json::Value::Object(limits.set.clone()),
                &now,
            ],
        )
        .await?
        .ok_or(TenantError::NotFound)?;
    Directory::announce(&tx, &Invalidation::tenant(id)).await?;
    tx.commit().await?;
    Ok(Tenant::from_row(&row))
}
