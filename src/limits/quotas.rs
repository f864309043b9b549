//! Resource quotas (SPEC §5): products, users and storage bytes per tenant.
//!
//! Enforcement lives in the database (migrations/0003_limits.sql): a trigger on each counted
//! table charges `tenant_quota_usage` in the same transaction as the insert or delete, under
//! the counter row's lock, and raises a `quota_*` check violation when the tenant's limit would
//! be passed; `AppError` turns that into 403 `quota_exceeded`. No code path can skip it.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{DbError, TenantDb};
use crate::limits::Limits;

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaState {
    pub used: i64,
    pub limit: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Quotas {
    pub products: QuotaState,
    pub users: QuotaState,
    pub storage_bytes: QuotaState,
}

pub async fn current(db: &TenantDb, limits: &Limits) -> Result<Quotas, DbError> {
    let used = db
        .query_opt(
            "SELECT products, users, storage_bytes FROM tenant_quota_usage WHERE tenant_id = $1",
            &[&db.tenant_id()],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap_or((0, 0, 0));
    Ok(Quotas {
        products: QuotaState {
            used: used.0,
            limit: limits.max_products,
        },
        users: QuotaState {
            used: used.1,
            limit: limits.max_users,
        },
        storage_bytes: QuotaState {
            used: used.2,
            limit: limits.max_storage_bytes,
        },
    })
}
