//! The only trust code that reads several tenants: the shared-customer-phone signal. Run by
//! the recompute job (never from a tenant's request), it visits the tenants one at a time,
//! each in a transaction with that tenant set (row-level security scopes every read), keeps
//! only a hash of each phone in memory, and yields per tenant a count of other tenants: no
//! phone and no other tenant's name leaves this module.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::{Db, DbError};

/// How far back customer phones are compared.
pub const PHONE_WINDOW_DAYS: i64 = 7;

/// 8 bytes of a phone's SHA-256: enough to tell the phones of recent orders apart, and no
/// phone is kept in clear.
fn phone_key(phone: &str) -> u64 {
    let digest = Sha256::digest(phone.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// For each tenant of `tenants`: the most other tenants that one of its customers' phones
/// also ordered at in the last [`PHONE_WINDOW_DAYS`] days (0 when none).
pub async fn shared_phones(
    db: &Db,
    tenants: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, i64>, DbError> {
    let since = now - Duration::days(PHONE_WINDOW_DAYS);
    let mut phones_of: Vec<Vec<u64>> = Vec::with_capacity(tenants.len());
    let mut tenants_of: HashMap<u64, u32> = HashMap::new();
    for tenant in tenants {
        let rows = db
            .for_tenant(*tenant)
            .query(
                "SELECT DISTINCT customer->>'phone' FROM orders
                 WHERE tenant_id = $1 AND created_at >= $2 AND customer ? 'phone'",
                &[tenant, &since],
            )
            .await?;
        let keys: Vec<u64> = rows
            .iter()
            .filter_map(|r| r.get::<_, Option<&str>>(0))
            .map(phone_key)
            .collect();
        for key in &keys {
            *tenants_of.entry(*key).or_default() += 1;
        }
        phones_of.push(keys);
    }
    Ok(tenants
        .iter()
        .zip(phones_of)
        .map(|(tenant, keys)| {
            let others = keys
                .iter()
                .map(|k| i64::from(tenants_of[k]) - 1)
                .max()
                .unwrap_or(0);
            (*tenant, others)
        })
        .collect())
}
