//! API usage tracking without a database write per request: admitted requests are counted
//! in memory per tenant and UTC minute, and a job writes them in batches to `api_usage`
//! (minute, hour and day buckets): `jobs::usage` runs [`flush`] every `USAGE_FLUSH_MILLISECONDS`
//! and once more after the server has drained at shutdown; a failed flush keeps its counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Window;
use crate::db::{Db, DbError, TenantDb};

/// Counts not yet written: (tenant, minute start) -> requests.
#[derive(Clone, Default)]
pub struct UsageRecorder {
    pending: Arc<Mutex<HashMap<(Uuid, i64), i64>>>,
}

impl UsageRecorder {
    pub fn record(&self, tenant: Uuid, now: i64) {
        let minute = Window::Minute.start(now);
        *self
            .pending
            .lock()
            .expect("usage lock")
            .entry((tenant, minute))
            .or_default() += 1;
    }

    fn take(&self) -> HashMap<(Uuid, i64), i64> {
        std::mem::take(&mut *self.pending.lock().expect("usage lock"))
    }

    fn restore(&self, counts: HashMap<(Uuid, i64), i64>) {
        let mut pending = self.pending.lock().expect("usage lock");
        for (key, n) in counts {
            *pending.entry(key).or_default() += n;
        }
    }
}

/// One bucket of a tenant's history.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Bucket {
    #[serde(serialize_with = "crate::types::timestamp")]
    pub start: DateTime<Utc>,
    pub requests: i64,
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("a representable time")
}

/// Writes the pending counts; returns how many requests were written. Each tenant's rows
/// are written with that tenant set, so row-level security checks them.
pub async fn flush(db: &Db, recorder: &UsageRecorder) -> Result<i64, DbError> {
    let counts = recorder.take();
    if counts.is_empty() {
        return Ok(0);
    }
    match write(db, &counts).await {
        Ok(written) => Ok(written),
        Err(e) => {
            recorder.restore(counts);
            Err(e)
        }
    }
}

/// One tenant's rows for the upsert, as parallel arrays: granularity, bucket start, count.
type Rows = (Vec<&'static str>, Vec<DateTime<Utc>>, Vec<i64>);

async fn write(db: &Db, counts: &HashMap<(Uuid, i64), i64>) -> Result<i64, DbError> {
    let mut by_tenant: HashMap<Uuid, Rows> = HashMap::new();
    for (&(tenant, minute), &n) in counts {
        let rows = by_tenant.entry(tenant).or_default();
        for w in Window::ALL {
            rows.0.push(w.name());
            rows.1.push(timestamp(w.start(minute)));
            rows.2.push(n);
        }
    }
    let tx = db.begin_platform().await?;
    for (tenant, (granularity, starts, requests)) in &by_tenant {
        tx.set_tenant(*tenant).await?;
        tx.execute(
            "INSERT INTO api_usage (tenant_id, granularity, bucket_start, requests)
             SELECT $1, g, b, sum(n)
             FROM unnest($2::text[], $3::timestamptz[], $4::bigint[]) AS t(g, b, n)
             GROUP BY g, b
             ON CONFLICT (tenant_id, granularity, bucket_start)
             DO UPDATE SET requests = api_usage.requests + EXCLUDED.requests",
            &[tenant, granularity, starts, requests],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(counts.values().sum())
}

/// A tenant's recent buckets: the last 60 minutes, 24 hours and 30 days that had requests.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct History {
    pub minute: Vec<Bucket>,
    pub hour: Vec<Bucket>,
    pub day: Vec<Bucket>,
}

pub async fn history(db: &TenantDb, now: i64) -> Result<History, DbError> {
    let rows = db
        .query(
            "SELECT granularity, bucket_start, requests FROM api_usage
             WHERE tenant_id = $1 AND (
                 (granularity = 'minute' AND bucket_start > $2) OR
                 (granularity = 'hour' AND bucket_start > $3) OR
                 (granularity = 'day' AND bucket_start > $4))
             ORDER BY bucket_start DESC",
            &[
                &db.tenant_id(),
                &timestamp(Window::Minute.start(now) - 60 * 60),
                &timestamp(Window::Hour.start(now) - 24 * 3_600),
                &timestamp(Window::Day.start(now) - 30 * 86_400),
            ],
        )
        .await?;
    let mut history = History {
        minute: vec![],
        hour: vec![],
        day: vec![],
    };
    for row in rows {
        let bucket = Bucket {
            start: row.get(1),
            requests: row.get(2),
        };
        match row.get::<_, &str>(0) {
            "minute" => history.minute.push(bucket),
            "hour" => history.hour.push(bucket),
            _ => history.day.push(bucket),
        }
    }
    Ok(history)
}
