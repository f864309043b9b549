//! Tenant and membership lookups, cached so a warm request costs no database round trip.
//!
//! Entries live at most `TENANT_CACHE_TTL_SECONDS` (misses, which a new member may turn into
//! hits, at most `NEGATIVE_TTL`). Changes that revoke access (suspension, removal, role
//! change) invalidate the entry on this instance at once and on the others through
//! PostgreSQL NOTIFY on [`INVALIDATION_CHANNEL`], sent in the changing transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{Role, Tenant};
use crate::db::{Conn, Db, DbError};
use crate::metrics::Metrics;

pub const INVALIDATION_CHANNEL: &str = "convcommerce_directory";
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
const CAPACITY: u64 = 100_000;

/// An active member's standing in a tenant.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub user_id: Uuid,
    pub role: Role,
}

/// What a cache invalidation names: a tenant, or one member of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invalidation {
    pub tenant: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

struct LookupExpiry {
    positive: Duration,
}

impl<K, T> Expiry<K, Option<T>> for LookupExpiry {
    fn expire_after_create(&self, _: &K, value: &Option<T>, _: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            NEGATIVE_TTL
        })
    }
}

#[derive(Clone)]
pub struct Directory {
    db: Db,
    metrics: Arc<Metrics>,
    tenants: Cache<Uuid, Option<Arc<Tenant>>>,
    members: Cache<(Uuid, String), Option<Membership>>,
}

impl Directory {
    pub fn new(db: Db, metrics: Arc<Metrics>, ttl: Duration) -> Self {
        Self {
            db,
            metrics,
            tenants: Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(LookupExpiry { positive: ttl })
                .build(),
            members: Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(LookupExpiry { positive: ttl })
                .build(),
        }
    }

    pub async fn tenant(&self, id: Uuid) -> Result<Option<Arc<Tenant>>, Arc<DbError>> {
        self.tenants
            .try_get_with(id, async {
                self.metrics.directory_lookup("tenant");
                let conn = self.db.platform().await?;
                let row = conn
                    .query_opt(
                        &format!("SELECT {} FROM tenants WHERE id = $1", Tenant::COLUMNS),
                        &[&id],
                    )
                    .await?;
                Ok(row.map(|r| Arc::new(Tenant::from_row(&r))))
            })
            .await
    }

    /// The caller's active membership in `tenant_id`, if any.
    pub async fn membership(
        &self,
        tenant_id: Uuid,
        subject: &str,
    ) -> Result<Option<Membership>, Arc<DbError>> {
        self.members
            .try_get_with((tenant_id, subject.to_string()), async {
                self.metrics.directory_lookup("membership");
                let row = self
                    .db
                    .for_tenant(tenant_id)
                    .query_opt(
                        "SELECT id, role FROM users
                         WHERE tenant_id = $1 AND external_id = $2 AND is_active",
                        &[&tenant_id, &subject],
                    )
                    .await?;
                Ok(row.map(|r| Membership {
                    user_id: r.get(0),
                    role: r.get::<_, String>(1).parse().unwrap_or(Role::Staff),
                }))
            })
            .await
    }

    pub async fn invalidate(&self, what: &Invalidation) {
        match &what.subject {
            Some(subject) => {
                self.members
                    .invalidate(&(what.tenant, subject.clone()))
                    .await
            }
            None => self.tenants.invalidate(&what.tenant).await,
        }
    }

    pub fn invalidate_all(&self) {
        self.tenants.invalidate_all();
        self.members.invalidate_all();
    }

    /// Queues a NOTIFY, delivered to every instance when `tx` commits.
    pub async fn announce(tx: &Conn, what: &Invalidation) -> Result<(), DbError> {
        let payload = serde_json::to_string(what).expect("serialisable");
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&INVALIDATION_CHANNEL, &payload],
        )
        .await?;
        Ok(())
    }
}
