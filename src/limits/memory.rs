//! The in-process backend: exact for one instance; per-tenant state behind sharded locks.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use uuid::Uuid;

use super::{BackendError, Decision, RateLimitBackend, Window};
use crate::limits::Limits;

const SHARDS: usize = 64;

/// Each window's start and count.
#[derive(Default)]
struct Counters([(i64, u64); 3]);

impl Counters {
    /// The counts in the windows containing `now` (older windows count as empty).
    fn current(&mut self, now: i64) -> [u64; 3] {
        for w in Window::ALL {
            let slot = &mut self.0[w as usize];
            if slot.0 != w.start(now) {
                *slot = (w.start(now), 0);
            }
        }
        self.0.map(|(_, count)| count)
    }
}

pub struct MemoryBackend {
    shards: Vec<Mutex<HashMap<Uuid, Counters>>>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl MemoryBackend {
    fn with_counters<T>(&self, tenant: Uuid, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        let mut map = shard.lock().expect("limiter shard lock");
        f(map.entry(tenant).or_default())
    }

    fn decide(&self, tenant: Uuid, limits: &Limits, now: i64, charge: bool) -> Decision {
        let caps = Decision::limits_of(limits);
        self.with_counters(tenant, |counters| {
            let mut used = counters.current(now);
            let room = used.iter().zip(caps).all(|(u, cap)| *u < cap);
            if charge && room {
                for (slot, u) in counters.0.iter_mut().zip(used.iter_mut()) {
                    slot.1 += 1;
                    *u = slot.1;
                }
            }
            Decision::from_counts(limits, now, used, room || !charge)
        })
    }
}

impl RateLimitBackend for MemoryBackend {
    async fn acquire(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> Result<Decision, BackendError> {
        Ok(self.decide(tenant, limits, now, true))
    }

    async fn peek(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> Result<Decision, BackendError> {
        Ok(self.decide(tenant, limits, now, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(m: i64, h: i64) -> Limits {
        Limits {
            requests_per_minute: m,
            requests_per_hour: h,
            ..Limits::DEFAULT
        }
    }

    #[tokio::test]
    async fn refused_requests_count_in_no_window() {
        let backend = MemoryBackend::default();
        let tenant = Uuid::now_v7();
        let t = 1_700_000_100;
        for _ in 0..3 {
            assert!(
                backend
                    .acquire(tenant, &limits(3, 5), t)
                    .await
                    .unwrap()
                    .refused
                    .is_none()
            );
        }
        let refused = backend.acquire(tenant, &limits(3, 5), t + 1).await.unwrap();
        assert_eq!(refused.refused.unwrap().window, Window::Minute);
        assert_eq!(
            refused.windows[1].used, 3,
            "the refusal did not count in the hour"
        );
        // Next minute: two more fit the hour, then the hour refuses.
        for _ in 0..2 {
            assert!(
                backend
                    .acquire(tenant, &limits(3, 5), t + 60)
                    .await
                    .unwrap()
                    .refused
                    .is_none()
            );
        }
        let hour = backend
            .acquire(tenant, &limits(3, 5), t + 61)
            .await
            .unwrap();
        assert_eq!(hour.refused.unwrap().window, Window::Hour);
        assert_eq!(hour.windows[0].used, 2);
        let peeked = backend.peek(tenant, &limits(3, 5), t + 61).await.unwrap();
        assert_eq!(peeked.windows[2].used, 5);
    }

    #[tokio::test]
    async fn concurrent_acquires_admit_exactly_the_limit() {
        let backend = std::sync::Arc::new(MemoryBackend::default());
        let tenant = Uuid::now_v7();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let b = backend.clone();
                tokio::spawn(
                    async move { b.acquire(tenant, &limits(37, 1000), 1_700_000_100).await },
                )
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            if t.await.unwrap().unwrap().refused.is_none() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 37);
    }
}
