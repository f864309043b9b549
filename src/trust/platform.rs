//! The only trust code that reads several tenants: the shared-customer-phone signal. Run by
//! the recompute job (never from a tenant's request), it visits the tenants one at a time,
//! each in a transaction with that tenant set (row-level security scopes every read), keeps
//! only a hash of each phone in memory, and yields per tenant a count of other tenants (and
//! the same for the phones that ordered since an admin's override): no phone and no other
//! tenant's name leaves this module.

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

/// A tenant's finding of the pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedPhone {
    /// The most other tenants that one of its customers' phones also ordered at in the last
    /// [`PHONE_WINDOW_DAYS`] days (0 when none).
    pub others: i64,
    /// The same, for only the phones that ordered at it since its `mark` (a platform admin's
    /// last override): the evidence that admin has not seen yet.
    pub since_mark: i64,
}

/// The finding for each tenant of `tenants`, given with its mark (see [`SharedPhone`]).
pub async fn shared_phones(
    db: &Db,
    tenants: &[(Uuid, Option<DateTime<Utc>>)],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, SharedPhone>, DbError> {
    let since = now - Duration::days(PHONE_WINDOW_DAYS);
    // Per tenant: each recent phone's key and its last order there.
    let mut phones_of: Vec<Vec<(u64, DateTime<Utc>)>> = Vec::with_capacity(tenants.len());
    let mut tenants_of: HashMap<u64, u32> = HashMap::new();
    for (tenant, _) in tenants {
        let rows = db
            .for_tenant(*tenant)
            .query(
                "SELECT customer->>'phone', max(created_at) FROM orders
                 WHERE tenant_id = $1 AND created_at >= $2 AND customer ? 'phone'
                 GROUP BY 1",
                &[tenant, &since],
            )
            .await?;
        let keys: Vec<(u64, DateTime<Utc>)> = rows
            .iter()
            .filter_map(|r| Some((phone_key(r.get::<_, Option<&str>>(0)?), r.get(1))))
            .collect();
        for (key, _) in &keys {
            *tenants_of.entry(*key).or_default() += 1;
        }
        phones_of.push(keys);
    }
    Ok(tenants
        .iter()
        .zip(phones_of)
        .map(|((tenant, mark), keys)| {
            let others = |after: Option<DateTime<Utc>>| {
                keys.iter()
                    .filter(|(_, last)| after.is_none_or(|at| *last >= at))
                    .map(|(k, _)| i64::from(tenants_of[k]) - 1)
                    .max()
                    .unwrap_or(0)
            };
            let found = SharedPhone {
                others: others(None),
                since_mark: others(*mark),
            };
            (*tenant, found)
        })
        .collect())
}
