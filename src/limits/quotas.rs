//! Resource quotas (SPEC §5): products, users and storage bytes per tenant.
//!
//! Enforcement lives in the database (migrations/0003_limits.sql): a trigger on each counted
//! table charges `tenant_quota_usage` in the same transaction as the insert or delete, under
//! the counter row's lock, and raises a `quota_*` check violation when the tenant's limit would
//! be passed; `AppError` turns that into 403 `quota_exceeded`. No code path can skip it.
//! Products are also capped by the tenant's trust level (SPEC §6, migrations/0010_trust.sql):
//! the limit reported here is the effective one, the lower of the two.

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

/// The tenant's quotas; `product_limit` is its effective product limit (the quota, or the
/// trust level's cap when lower).
pub async fn current(
    db: &TenantDb,
    limits: &Limits,
    product_limit: i64,
) -> Result<Quotas, DbError> {
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
            limit: product_limit,
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
