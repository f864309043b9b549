//! SQL for the activity log: the row a data change writes in its own transaction, the batch
//! the writer inserts per tenant, and the list.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::model::{Activity, ActivityFilter, NewActivity};
use crate::commerce::filter::Where;
use crate::db::{DbError, Params, TenantDb, TenantTx};

const INSERT_ONE: &str = "INSERT INTO activities (tenant_id, id, actor, actor_type, action, \
    category, method, route, resource_type, resource_id, status, latency_ms, ip, user_agent, \
    request_id, details, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// Many rows in one statement: one array per column, zipped by `unnest`.
const INSERT_MANY: &str = "INSERT INTO activities (tenant_id, id, actor, actor_type, action, \
    category, method, route, resource_type, resource_id, status, latency_ms, ip, user_agent, \
    request_id, details, created_at) \
    SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
        $7::text[], $8::text[], $9::text[], $10::uuid[], $11::int2[], $12::int4[], $13::text[], \
        $14::text[], $15::text[], $16::jsonb[], $17::timestamptz[])";

/// Gives `new` its id and time.
pub fn stamp(new: NewActivity) -> Activity {
    new.into_activity(Uuid::now_v7(), Utc::now())
}

/// Inserts `activity` and commits `tx`, pipelined: one round trip for both.
pub async fn insert_and_commit(tx: TenantTx, a: &Activity) -> Result<(), DbError> {
    let params: Params = &[
        &a.tenant_id,
        &a.id,
        &a.actor,
        &a.actor_type.as_str(),
        &a.action,
        &a.category.as_str(),
        &a.method,
        &a.route,
        &a.resource_type,
        &a.resource_id,
        &a.status,
        &a.latency_ms,
        &a.ip,
        &a.user_agent,
        &a.request_id,
        &a.details,
        &a.created_at,
    ];
    tx.commit_after(INSERT_ONE, params).await
}

/// Inserts one tenant's batch in one transaction (the tenant set: row-level security holds).
pub async fn insert_batch(db: &TenantDb, batch: &[Activity]) -> Result<(), DbError> {
    let columns = Columns::of(batch);
    db.query(INSERT_MANY, &columns.params(&db.tenant_id()))
        .await
        .map(drop)
}

/// Inserts several activities of the tenant in `tx` (one statement).
pub async fn insert_many(tx: &TenantTx, batch: &[Activity]) -> Result<(), DbError> {
    let columns = Columns::of(batch);
    tx.execute(INSERT_MANY, &columns.params(&tx.tenant_id()))
        .await
        .map(drop)
}

/// A batch of activities as one array per column, for [`INSERT_MANY`].
struct Columns {
    ids: Vec<Uuid>,
    actors: Vec<Option<Uuid>>,
    actor_types: Vec<&'static str>,
    actions: Vec<String>,
    categories: Vec<&'static str>,
    methods: Vec<Option<String>>,
    routes: Vec<Option<String>>,
    resource_types: Vec<Option<String>>,
    resource_ids: Vec<Option<Uuid>>,
    statuses: Vec<Option<i16>>,
    latencies: Vec<Option<i32>>,
    ips: Vec<Option<String>>,
    agents: Vec<Option<String>>,
    request_ids: Vec<Option<String>>,
    details: Vec<serde_json::Value>,
    times: Vec<DateTime<Utc>>,
}

impl Columns {
    fn of(batch: &[Activity]) -> Self {
        fn col<T: Clone>(batch: &[Activity], f: impl Fn(&Activity) -> T) -> Vec<T> {
            batch.iter().map(f).collect()
        }
        Self {
            ids: col(batch, |a| a.id),
            actors: col(batch, |a| a.actor),
            actor_types: col(batch, |a| a.actor_type.as_str()),
            actions: col(batch, |a| a.action.clone()),
            categories: col(batch, |a| a.category.as_str()),
            methods: col(batch, |a| a.method.clone()),
            routes: col(batch, |a| a.route.clone()),
            resource_types: col(batch, |a| a.resource_type.clone()),
            resource_ids: col(batch, |a| a.resource_id),
            statuses: col(batch, |a| a.status),
            latencies: col(batch, |a| a.latency_ms),
            ips: col(batch, |a| a.ip.clone()),
            agents: col(batch, |a| a.user_agent.clone()),
            request_ids: col(batch, |a| a.request_id.clone()),
            details: col(batch, |a| a.details.clone()),
            times: col(batch, |a| a.created_at),
        }
    }

    fn params<'a>(&'a self, tenant_id: &'a Uuid) -> [&'a (dyn ToSql + Sync); 17] {
        [
            tenant_id,
            &self.ids,
            &self.actors,
            &self.actor_types,
            &self.actions,
            &self.categories,
            &self.methods,
            &self.routes,
            &self.resource_types,
            &self.resource_ids,
            &self.statuses,
            &self.latencies,
            &self.ips,
            &self.agents,
            &self.request_ids,
            &self.details,
            &self.times,
        ]
    }
}

/// A page of the tenant's activities, newest first, with the filters the request uses.
pub async fn list(db: &TenantDb, filter: &ActivityFilter) -> Result<Vec<Activity>, DbError> {
    let mut w = Where::tenant("tenant_id", db.tenant_id());
    w.push_opt("category = {}", filter.category.map(|c| c.as_str()));
    w.push_opt("action = {}", filter.action.clone());
    w.push_opt("actor = {}", filter.actor);
    w.push_opt("status = {}", filter.status);
    w.push_opt("resource_type = {}", filter.resource_type.clone());
    w.push_opt("resource_id = {}", filter.resource_id);
    w.push_opt("created_at >= {}", filter.since);
    w.push_opt("created_at < {}", filter.until);
    let tail = w.page("id", filter.page);
    let sql = format!(
        "SELECT {} FROM activities WHERE {} {tail}",
        Activity::COLUMNS,
        w.sql()
    );
    let rows = if filter.is_plain_page() {
        db.read(&sql, &w.params()).await?
    } else {
        db.query(&sql, &w.params()).await?
    };
    Ok(rows.iter().map(Activity::from_row).collect())
}
