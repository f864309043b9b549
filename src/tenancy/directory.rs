//! Tenant and membership lookups, cached so a warm request costs no database round trip.
//!
//! Entries live at most `TENANT_CACHE_TTL_SECONDS` (misses, which a new member may turn into
//! hits, at most `NEGATIVE_TTL`). Changes that revoke access (suspension, removal, role
//! change) invalidate the entry on this instance at once and on the others through
//! PostgreSQL NOTIFY on [`INVALIDATION_CHANNEL`], sent in the changing transaction. An
//! invalidation waits for the lookups in flight to have cached what they read, then drops the
//! entry, so none puts a revoked answer back (`Lookups`).
//!
//! Lookups that miss the cache reach the database, so each caller (token subject) has a
//! budget of [`MISSES_PER_MINUTE`] of them per UTC minute, checked before the query: a
//! valid token naming random tenants costs the database at most that.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{Role, Tenant};
use crate::auth::api_key::KeyHash;
use crate::db::{Conn, Db, DbError};
use crate::error::AppError;
use crate::metrics::Metrics;

pub const INVALIDATION_CHANNEL: &str = "convcommerce_directory";
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
const CAPACITY: u64 = 100_000;
/// Lookups that miss the cache, per caller and minute (SPEC §10).
pub const MISSES_PER_MINUTE: u32 = 30;

/// Why a lookup has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Db(Arc<DbError>),
    /// The caller spent its misses for this minute; the budget refills in `retry_after` s.
    #[error("lookup budget spent; retry in {retry_after} s")]
    Budget { retry_after: u64 },
}

/// Per caller: the minute (unix seconds / 60) and the misses spent in it.
type Spent = Arc<Mutex<(i64, u32)>>;

/// An active member's standing in a tenant.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub user_id: Uuid,
    pub role: Role,
}

/// An API key as the directory knows it (never the key itself).
#[derive(Debug, Clone, Copy)]
pub struct KeyRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub role: Role,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a cache invalidation names: a tenant, one member of it, or one of its API keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invalidation {
    pub tenant: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Uuid>,
}

impl Invalidation {
    pub fn tenant(tenant: Uuid) -> Self {
        Self {
            tenant,
            subject: None,
            key: None,
        }
    }

    pub fn member(tenant: Uuid, subject: impl Into<String>) -> Self {
        Self {
            tenant,
            subject: Some(subject.into()),
            key: None,
        }
    }

    pub fn key(tenant: Uuid, key: Uuid) -> Self {
        Self {
            tenant,
            subject: None,
            key: Some(key),
        }
    }
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

/// One kind of cached lookup (tenants, memberships or API keys): answers found and not found,
/// each for its TTL, and invalidations that win over the lookups in flight.
///
/// A lookup that read a key just before its revocation committed must not cache that answer
/// after the revocation's invalidation, or the revoked key would keep working until the entry
/// expired. So a miss holds the read side of `in_flight` from before its query until its
/// answer is cached, and an invalidation takes the write side: it waits for the misses in
/// flight to have cached what they read (a few milliseconds, a query each), then drops the
/// entries; a miss that starts after it queries again. Hits take no lock.
#[derive(Clone)]
struct Lookups<K, V> {
    entries: Cache<K, Option<V>>,
    in_flight: Arc<tokio::sync::RwLock<()>>,
}

impl<K, V> Lookups<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `by_value`: entries can be dropped by what they hold (API keys, by their id).
    fn new(ttl: Duration, by_value: bool) -> Self {
        let builder = Cache::builder()
            .max_capacity(CAPACITY)
            .expire_after(LookupExpiry { positive: ttl });
        let entries = if by_value {
            builder.support_invalidation_closures().build()
        } else {
            builder.build()
        };
        Self {
            entries,
            in_flight: Arc::default(),
        }
    }

    /// The cached answer for `key`, or `lookup`'s, cached (concurrent misses of one key share
    /// one lookup).
    async fn get<E: Send + Sync + 'static>(
        &self,
        key: K,
        lookup: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, Arc<E>> {
        if let Some(found) = self.entries.get(&key).await {
            return Ok(found);
        }
        let _in_flight = self.in_flight.read().await;
        self.entries.try_get_with(key, lookup).await
    }

    async fn invalidate(&self, key: &K) {
        let _quiet = self.in_flight.write().await;
        self.entries.invalidate(key).await;
    }

    /// Drops the entries whose answer matches `gone`.
    async fn invalidate_if(&self, gone: impl Fn(&V) -> bool + Send + Sync + 'static) {
        let _quiet = self.in_flight.write().await;
        let dropped = self
            .entries
            .invalidate_entries_if(move |_, value| value.as_ref().is_some_and(&gone));
        if let Err(e) = dropped {
            tracing::warn!(error = %e, "clearing every cached entry instead");
            self.entries.invalidate_all();
        }
    }

    async fn invalidate_all(&self) {
        let _quiet = self.in_flight.write().await;
        self.entries.invalidate_all();
    }
}

#[derive(Clone)]
pub struct Directory {
    db: Db,
    metrics: Arc<Metrics>,
    tenants: Lookups<Uuid, Arc<Tenant>>,
    members: Lookups<(Uuid, String), Membership>,
    /// API keys by their hash; revoking one invalidates it by id (every instance, by NOTIFY).
    keys: Lookups<KeyHash, KeyRecord>,
    /// Misses spent per caller; bounded like the caches, forgotten after two idle minutes.
    misses: Cache<String, Spent>,
}

impl Directory {
    pub fn new(db: Db, metrics: Arc<Metrics>, ttl: Duration) -> Self {
        Self {
            db,
            metrics,
            tenants: Lookups::new(ttl, false),
            members: Lookups::new(ttl, false),
            keys: Lookups::new(ttl, true),
            misses: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }

    /// Spends one of `caller`'s misses, or refuses when this minute's are gone.
    async fn spend_miss(&self, caller: &str) -> Result<(Spent, i64), LookupError> {
        let now = chrono::Utc::now().timestamp();
        let minute = now.div_euclid(60);
        let spent = self
            .misses
            .get_with(caller.to_string(), async {
                Arc::new(Mutex::new((minute, 0)))
            })
            .await;
        let mut count = spent.lock().unwrap_or_else(|p| p.into_inner());
        if count.0 != minute {
            *count = (minute, 0);
        }
        if count.1 >= MISSES_PER_MINUTE {
            self.metrics.directory_refusal();
            return Err(LookupError::Budget {
                retry_after: (60 - now.rem_euclid(60)).max(1) as u64,
            });
        }
        count.1 += 1;
        drop(count);
        Ok((spent, minute))
    }

    /// Runs `lookup` on `caller`'s budget: a miss is spent before it runs and given back when
    /// the lookup found something (a real tenant or member) or never reached the database.
    async fn budgeted<T>(
        &self,
        kind: &'static str,
        caller: &str,
        lookup: impl Future<Output = Result<Option<T>, DbError>>,
    ) -> Result<Option<T>, LookupError> {
        let (spent, minute) = self.spend_miss(caller).await?;
        self.metrics.directory_lookup(kind);
        let found = lookup.await;
        if !matches!(found, Ok(None)) {
            let mut count = spent.lock().unwrap_or_else(|p| p.into_inner());
            if count.0 == minute {
                count.1 = count.1.saturating_sub(1);
            }
        }
        found.map_err(|e| LookupError::Db(Arc::new(e)))
    }

    /// The tenant `id`, looked up for `caller` (whose miss budget a cache miss spends).
    pub async fn tenant(&self, id: Uuid, caller: &str) -> Result<Option<Arc<Tenant>>, LookupError> {
        self.tenants
            .get(id, async {
                let row = self
                    .budgeted("tenant", caller, async {
                        self.db
                            .platform()
                            .await?
                            .query_opt(
                                &format!("SELECT {} FROM tenants WHERE id = $1", Tenant::COLUMNS),
                                &[&id],
                            )
                            .await
                    })
                    .await?;
                Ok(row.map(|r| Arc::new(Tenant::from_row(&r))))
            })
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    /// The caller's active membership in `tenant_id`, if any.
    pub async fn membership(
        &self,
        tenant_id: Uuid,
        subject: &str,
    ) -> Result<Option<Membership>, LookupError> {
        self.members
            .get((tenant_id, subject.to_string()), async {
                let row = self
                    .budgeted(
                        "membership",
                        subject,
                        self.db.for_tenant(tenant_id).query_opt(
                            "SELECT id, role FROM users
                             WHERE tenant_id = $1 AND external_id = $2 AND is_active",
                            &[&tenant_id, &subject],
                        ),
                    )
                    .await?;
                Ok(row.map(|r| Membership {
                    user_id: r.get(0),
                    role: r.get::<_, String>(1).parse().unwrap_or(Role::Staff),
                }))
            })
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    /// The API key of `tenant_id` whose hash is `hash`, if it exists (revoked keys do not).
    pub async fn api_key(
        &self,
        tenant_id: Uuid,
        hash: KeyHash,
        caller: &str,
    ) -> Result<Option<KeyRecord>, LookupError> {
        self.keys
            .get(hash, async {
                let row = self
                    .budgeted(
                        "api_key",
                        caller,
                        self.db.for_tenant(tenant_id).query_opt(
                            "SELECT id, role, expires_at FROM api_keys
                             WHERE tenant_id = $1 AND key_hash = $2",
                            &[&tenant_id, &hash.as_slice()],
                        ),
                    )
                    .await?;
                Ok(row.map(|r| KeyRecord {
                    id: r.get(0),
                    tenant_id,
                    role: r.get::<_, String>(1).parse().unwrap_or(Role::Staff),
                    expires_at: r.get(2),
                }))
            })
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    pub async fn invalidate(&self, what: &Invalidation) {
        if let Some(key) = what.key {
            // Entries of that key stop being returned at once; moka drops them lazily.
            self.keys
                .invalidate_if(move |record| record.id == key)
                .await;
            return;
        }
        match &what.subject {
            Some(subject) => {
                self.members
                    .invalidate(&(what.tenant, subject.clone()))
                    .await
            }
            None => self.tenants.invalidate(&what.tenant).await,
        }
    }

    pub async fn invalidate_all(&self) {
        self.tenants.invalidate_all().await;
        self.members.invalidate_all().await;
        self.keys.invalidate_all().await;
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

impl From<LookupError> for AppError {
    /// A directory lookup (shared by concurrent requests) failed, or the caller spent its
    /// budget of lookups that miss the cache.
    #[track_caller]
    fn from(err: LookupError) -> Self {
        match err {
            LookupError::Budget { retry_after } => AppError::LookupBudget { retry_after },
            // The shared error cannot be moved out; an unreachable database maps as always.
            LookupError::Db(err) => match &*err {
                DbError::Unavailable(cause) => AppError::from(DbError::Unavailable(cause.clone())),
                other => AppError::from(anyhow::anyhow!("{other}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::oneshot;

    use super::*;

    /// A lookup that has read the old answer (a key before its revocation committed) and is
    /// held there until `release`; it says when it has started.
    async fn stalled(
        started: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> Result<Option<&'static str>, Infallible> {
        started.send(()).unwrap();
        release.await.unwrap();
        Ok(Some("before the revocation"))
    }

    #[tokio::test]
    async fn an_invalidation_wins_over_a_lookup_in_flight() {
        let lookups: Lookups<u8, &'static str> = Lookups::new(Duration::from_secs(30), true);
        for (key, invalidate_by_value) in [(1, false), (2, true)] {
            let (started, has_started) = oneshot::channel();
            let (release, released) = oneshot::channel();
            let in_flight = tokio::spawn({
                let lookups = lookups.clone();
                async move { lookups.get(key, stalled(started, released)).await }
            });
            has_started.await.unwrap();
            // The revocation commits, and its invalidation arrives while the lookup is held.
            let invalidation = tokio::spawn({
                let lookups = lookups.clone();
                async move {
                    if invalidate_by_value {
                        lookups
                            .invalidate_if(|v| *v == "before the revocation")
                            .await;
                    } else {
                        lookups.invalidate(&key).await;
                    }
                }
            });
            tokio::task::yield_now().await;
            release.send(()).unwrap();
            // The lookup in flight began before the revocation: its own answer is the old one.
            let seen = in_flight.await.unwrap().unwrap();
            assert_eq!(seen, Some("before the revocation"));
            invalidation.await.unwrap();
            // Any lookup after the invalidation reads again and finds the key revoked.
            let after = lookups.get(key, async { Ok::<_, Infallible>(None) }).await;
            assert_eq!(
                after.unwrap(),
                None,
                "invalidated by value: {invalidate_by_value}"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_share_one_lookup() {
        let lookups: Lookups<u8, u8> = Lookups::new(Duration::from_secs(30), false);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let misses = (0..20).map(|_| {
            let (lookups, calls) = (lookups.clone(), calls.clone());
            tokio::spawn(async move {
                lookups
                    .get(7, async move {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, Infallible>(Some(42))
                    })
                    .await
                    .unwrap()
            })
        });
        for answer in futures_util::future::join_all(misses).await {
            assert_eq!(answer.unwrap(), Some(42));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
