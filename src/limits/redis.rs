//! The shared backend: one Lua script checks every window and charges all of them
//! atomically, so instances sharing a Redis never admit more than the limit together.
//!
//! Keys: `cc:rl:{<tenant>}:<window>:<window start>`; the braces keep a tenant's three keys in
//! one cluster slot, and each key expires shortly after its window ends.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{BackendError, Decision, RateLimitBackend, Window};
use crate::limits::Limits;

const SCRIPT: &str = r"
local used = {}
for i = 1, 3 do used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
if ARGV[7] == '1' then
  for i = 1, 3 do
    if used[i] >= tonumber(ARGV[i]) then return {0, used[1], used[2], used[3]} end
  end
  for i = 1, 3 do
    used[i] = redis.call('INCR', KEYS[i])
    if used[i] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3 + i]) end
  end
end
return {1, used[1], used[2], used[3]}
";

pub struct RedisBackend {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    script: redis::Script,
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

impl RedisBackend {
    /// Connects lazily: a Redis that is down at start-up only means local decisions until
    /// it answers.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: RwLock::new(None),
            script: redis::Script::new(SCRIPT),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(conn) = self.conn.read().await.as_ref() {
            return Ok(conn.clone());
        }
        let mut slot = self.conn.write().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(failed)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    pub async fn ping(&self) -> Result<(), BackendError> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn run(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
        charge: bool,
    ) -> Result<Decision, BackendError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for w in Window::ALL {
            invocation.key(format!("cc:rl:{{{tenant}}}:{}:{}", w.name(), w.start(now)));
        }
        for cap in Decision::limits_of(limits) {
            invocation.arg(cap);
        }
        for w in Window::ALL {
            invocation.arg(w.seconds() + 60);
        }
        invocation.arg(if charge { "1" } else { "0" });
        let reply: Vec<u64> = invocation.invoke_async(&mut conn).await.map_err(failed)?;
        let [admitted, m, h, d] = reply[..] else {
            return Err(failed("unexpected script reply"));
        };
        Ok(Decision::from_counts(limits, now, [m, h, d], admitted == 1))
    }
}

impl RateLimitBackend for RedisBackend {
    async fn acquire(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> Result<Decision, BackendError> {
        self.run(tenant, limits, now, true).await
    }

    async fn peek(
        &self,
        tenant: Uuid,
        limits: &Limits,
        now: i64,
    ) -> Result<Decision, BackendError> {
        self.run(tenant, limits, now, false).await
    }
}
