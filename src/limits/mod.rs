//! Per-tenant rate limits (SPEC §5): fixed windows aligned to the UTC minute, hour and day.
//! A request is admitted only if every window has room, and then counts in every window; a
//! refused request counts in none.
//!
//! Two backends implement [`RateLimitBackend`]: [`memory::MemoryBackend`] (one instance) and
//! [`redis::RedisBackend`] (shared by instances, one atomic script per decision).
//! [`Limiter`] uses Redis when configured and falls back to memory while Redis fails.

pub mod headers;
pub mod memory;
pub mod quotas;
pub mod redis;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::Metrics;

/// A tenant's effective limits: its overrides, else the platform defaults (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    pub requests_per_minute: i64,
    pub requests_per_hour: i64,
    pub requests_per_day: i64,
    pub max_products: i64,
    pub max_users: i64,
    pub max_storage_bytes: i64,
    /// Conversation messages older than this are purged by the cleanup job.
    pub conversation_retention_days: i64,
    /// Activities older than this are purged by the cleanup job.
    pub activity_retention_days: i64,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        requests_per_minute: 60,
        requests_per_hour: 1_000,
        requests_per_day: 10_000,
        max_products: 1_000,
        max_users: 100,
        max_storage_bytes: 1 << 30,
        conversation_retention_days: 365,
        activity_retention_days: 90,
    };

    /// The defaults with the stored overrides (a JSON object keyed by field name) applied.
    pub fn with_overrides(overrides: &serde_json::Value) -> Self {
        let get = |name: &str, default: i64| {
            overrides
                .get(name)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(default)
        };
        let d = Self::DEFAULT;
        Self {
            requests_per_minute: get("requests_per_minute", d.requests_per_minute),
            requests_per_hour: get("requests_per_hour", d.requests_per_hour),
            requests_per_day: get("requests_per_day", d.requests_per_day),
            max_products: get("max_products", d.max_products),
            max_users: get("max_users", d.max_users),
            max_storage_bytes: get("max_storage_bytes", d.max_storage_bytes),
            conversation_retention_days: get(
                "conversation_retention_days",
                d.conversation_retention_days,
            ),
            activity_retention_days: get("activity_retention_days", d.activity_retention_days),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The start (unix seconds) of the window containing `now`.
    pub fn start(self, now: i64) -> i64 {
        now - now.rem_euclid(self.seconds())
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    fn limit(self, limits: &Limits) -> u64 {
        let value = match self {
            Self::Minute => limits.requests_per_minute,
            Self::Hour => limits.requests_per_hour,
            Self::Day => limits.requests_per_day,
        };
        value.max(0) as u64
    }
}

/// One window's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub window: Window,
    pub limit: u64,
    /// Requests counted in the window, this one included when admitted.
    pub used: u64,
    /// Seconds until the window resets.
    pub reset_seconds: u64,
}

impl WindowState {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub windows: [WindowState; 3],
    /// The window that refused the request (the full one that resets last), if any.
    pub refused: Option<WindowState>,
}

impl Decision {
    /// Builds a decision from the counts a backend found (`used`, after charging when
    /// admitted) and whether it admitted the request.
    pub fn from_counts(limits: &Limits, now: i64, used: [u64; 3], admitted: bool) -> Self {
        let windows = Window::ALL.map(|w| {
            let i = w as usize;
            WindowState {
                window: w,
                limit: w.limit(limits),
                used: used[i],
                reset_seconds: (w.start(now) + w.seconds() - now) as u64,
            }
        });
        let refused = if admitted {
            None
        } else {
            windows
                .iter()
                .filter(|s| s.used >= s.limit)
                .max_by_key(|s| s.reset_seconds)
                .copied()
        };
        Self { windows, refused }
    }

    pub fn limits_of(limits: &Limits) -> [u64; 3] {
        Window::ALL.map(|w| w.limit(limits))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rate-limit backend failed: {0}")]
pub struct BackendError(pub String);

/// A store of window counters that decides atomically.
pub trait RateLimitBackend: Send + Sync {
    /// Checks every window and, if all have room, charges all of them: one atomic step.
    fn acquire(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send;

    /// The windows' current state, charging nothing.
    fn peek(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> impl Future<Output = Result<Decision, BackendError>> + Send;
}

/// How long the limiter waits for Redis before deciding locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, decisions stay local this long before Redis is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The service's limiter: Redis when configured and healthy, else in-process.
pub struct Limiter {
    memory: memory::MemoryBackend,
    redis: Option<Arc<redis::RedisBackend>>,
    /// Milliseconds since `started` before which Redis is not tried (after a failure); real
    /// time, not the service clock, which tests may stop.
    redis_retry_at: AtomicU64,
    started: Instant,
    redis_failing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(redis: Option<Arc<redis::RedisBackend>>, metrics: Arc<Metrics>) -> Self {
        Self {
            memory: memory::MemoryBackend::default(),
            redis,
            redis_retry_at: AtomicU64::new(0),
            started: Instant::now(),
            redis_failing: AtomicBool::new(false),
            metrics,
        }
    }

    pub async fn acquire(&self, tenant: Uuid, limits: &Limits, now: i64) -> Decision {
        if let Some(decision) = self
            .try_redis(|redis| redis.acquire(tenant, limits, now))
            .await
        {
            return decision;
        }
        self.memory
            .acquire(tenant, limits, now)
            .await
            .expect("the in-process backend cannot fail")
    }

    pub async fn peek(&self, tenant: Uuid, limits: &Limits, now: i64) -> Decision {
        if let Some(decision) = self
            .try_redis(|redis| redis.peek(tenant, limits, now))
            .await
        {
            return decision;
        }
        self.memory
            .peek(tenant, limits, now)
            .await
            .expect("the in-process backend cannot fail")
    }

    /// Runs `op` on Redis unless it is absent or recently failed; `None` means "decide
    /// locally". Failures and recoveries are logged once per transition and counted.
    async fn try_redis<'a, F, Fut>(&'a self, op: F) -> Option<Decision>
    where
        F: FnOnce(&'a redis::RedisBackend) -> Fut,
        Fut: Future<Output = Result<Decision, BackendError>>,
    {
        let redis = self.redis.as_ref()?;
        let elapsed = self.started.elapsed().as_millis() as u64;
        if elapsed < self.redis_retry_at.load(Ordering::Relaxed) {
            self.metrics.rate_limit_fallback();
            return None;
        }
        let error = match tokio::time::timeout(REDIS_TIMEOUT, op(redis)).await {
            Ok(Ok(decision)) => {
                if self.redis_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis is back: rate limits are shared again");
                    self.metrics.set_redis_healthy(true);
                }
                return Some(decision);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        let retry_at = self.started.elapsed() + REDIS_RETRY_AFTER;
        self.redis_retry_at
            .store(retry_at.as_millis() as u64, Ordering::Relaxed);
        if !self.redis_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "Redis failed: rate limits fall back to this instance");
            self.metrics.set_redis_healthy(false);
        }
        self.metrics.rate_limit_fallback();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(m: i64, h: i64, d: i64) -> Limits {
        Limits {
            requests_per_minute: m,
            requests_per_hour: h,
            requests_per_day: d,
            ..Limits::DEFAULT
        }
    }

    #[test]
    fn windows_align_to_utc() {
        let t = 1_700_000_123; // 2023-11-14T22:15:23Z
        assert_eq!(Window::Minute.start(t), 1_700_000_100);
        assert_eq!(Window::Hour.start(t), 1_699_999_200);
        assert_eq!(Window::Day.start(t), 1_699_920_000);
    }

    #[test]
    fn the_refusing_window_is_the_full_one_that_resets_last() {
        let t = 1_700_000_123;
        let d = Decision::from_counts(&limits(5, 5, 100), t, [5, 5, 5], false);
        assert_eq!(d.refused.unwrap().window, Window::Hour);
        assert_eq!(d.windows[0].reset_seconds, 37);
        assert_eq!(d.windows[0].remaining(), 0);
        assert_eq!(d.windows[2].remaining(), 95);
        assert!(
            Decision::from_counts(&limits(5, 5, 100), t, [1, 1, 1], true)
                .refused
                .is_none()
        );
    }

    #[test]
    fn overrides_replace_only_their_keys() {
        let limits = Limits::with_overrides(&serde_json::json!({"requests_per_minute": 5}));
        assert_eq!(limits.requests_per_minute, 5);
        assert_eq!(limits.requests_per_hour, Limits::DEFAULT.requests_per_hour);
        assert_eq!(
            Limits::with_overrides(&serde_json::json!({})),
            Limits::DEFAULT
        );
    }
}
