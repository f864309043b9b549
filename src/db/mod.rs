//! Database access. Tenant data is reachable only through [`TenantDb`], whose every
//! transaction sets `my.tenant_id` with `SET LOCAL` (transaction-local) before any statement
//! runs, so row-level security applies to everything it does.

pub mod bootstrap;
pub mod embedded;
mod lanes;
pub mod listen;
pub mod migrate;
pub mod safety;
pub mod tls;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, RowStream, Statement};
use uuid::Uuid;

use lanes::Lanes;
use tls::PgTarget;

/// Sets the tenant for the rest of a platform transaction ([`PlatformTx::set_tenant`]):
/// transaction-local, so it cannot outlive the transaction on a pooled connection.
const SET_TENANT: &str = "SELECT set_config('my.tenant_id', $1, true)";

/// `BEGIN` and the transaction-local tenant in one simple-protocol message: one sync point for
/// PostgreSQL, and `SET LOCAL` is a utility statement, neither planned nor run by the executor
/// (the tenant costs PostgreSQL less than through `set_config`). Inlining is safe: a `Uuid`
/// formats as hex and hyphens only.
fn begin_for(tenant_id: Uuid) -> String {
    format!("BEGIN; SET LOCAL my.tenant_id = '{tenant_id}'")
}

/// The same for a read-only transaction ([`TenantDb::read`]).
fn begin_read_for(tenant_id: Uuid) -> String {
    format!("BEGIN READ ONLY; SET LOCAL my.tenant_id = '{tenant_id}'")
}

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How statements reach PostgreSQL (`DB_PREPARED_STATEMENTS`).
#[derive(Clone)]
pub enum Statements {
    /// Prepared once per connection and kept (the default): PostgreSQL parses a statement once
    /// per connection, and can keep its plan.
    Prepared,
    /// PostgreSQL's unnamed statement, parsed with each execution, in the same message as its
    /// execution: no named statement outlives its transaction, which a transaction pooler
    /// (PgBouncer 1.18 in transaction mode) requires, since consecutive transactions of one
    /// client connection may run on different server connections.
    Unnamed(Arc<ParamTypes>),
}

impl Statements {
    pub fn unnamed() -> Self {
        Self::Unnamed(Arc::default())
    }
}

/// The parameter types of each statement, learned once per process: the unnamed statement
/// needs them with every execution. They are learned by preparing the statement inside a
/// transaction and closing it before the transaction ends, so that even this named statement
/// never outlives it. The statements are the service's own: a finite set.
#[derive(Default)]
pub struct ParamTypes(Mutex<HashMap<String, Arc<[Type]>>>);

impl ParamTypes {
    fn known(&self, sql: &str) -> Option<Arc<[Type]>> {
        self.0.lock().expect("never poisoned").get(sql).cloned()
    }

    /// `sql`'s parameter types, learned on `client` if they are not known yet. `in_tx`:
    /// `client` is inside a transaction.
    async fn of(&self, client: &Client, sql: &str, in_tx: bool) -> Result<Arc<[Type]>, DbError> {
        if let Some(types) = self.known(sql) {
            return Ok(types);
        }
        if !in_tx {
            client.batch_execute("BEGIN").await?;
        }
        // The statement is dropped at once: its Close goes out before the COMMIT.
        let learned = client
            .prepare(sql)
            .await
            .map(|statement| Arc::<[Type]>::from(statement.params()));
        if !in_tx {
            client.batch_execute("COMMIT").await?;
        }
        let types = learned?;
        self.0
            .lock()
            .expect("never poisoned")
            .insert(sql.to_string(), types.clone());
        Ok(types)
    }
}

/// A statement ready to run on one connection.
pub(super) enum Ready {
    Named(Statement),
    Unnamed(Arc<[Type]>),
}

impl Ready {
    /// Runs `sql` with `params`. The request is sent on the first poll, so several of these can
    /// be pipelined (see [`TenantDb::query`]).
    async fn run(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<RowStream, tokio_postgres::Error> {
        match self {
            Self::Named(statement) => client.query_raw(statement, params.iter().copied()).await,
            Self::Unnamed(types) => {
                let typed = params.iter().copied().zip(types.iter().cloned());
                client.query_typed_raw(sql, typed).await
            }
        }
    }

    pub(super) async fn rows(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.run(client, sql, params).await?.try_collect().await
    }

    /// The rows the statement affected (for a statement that returns none).
    async fn affected(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let mut stream = pin!(self.run(client, sql, params).await?);
        while stream.try_next().await?.is_some() {}
        Ok(stream.rows_affected().unwrap_or(0))
    }
}

/// At most one row of `rows` (a statement that found more is a fault of the statement).
fn at_most_one(rows: Vec<Row>) -> Result<Option<Row>, DbError> {
    if rows.len() > 1 {
        return Err(DbError::Decode(format!(
            "one row expected, the statement returned {}",
            rows.len()
        )));
    }
    Ok(rows.into_iter().next())
}

/// The longest a request waits for a connection (a free pooled one, or a new one) before it
/// answers 503: an outage is answered within 2 s, and a saturated pool pushes back.
const ACQUIRE_WITHIN: Duration = Duration::from_millis(800);

/// A pooled connection within [`ACQUIRE_WITHIN`] in all (waiting for a slot and connecting).
async fn acquire(pool: &Pool) -> Result<Object, DbError> {
    match tokio::time::timeout(ACQUIRE_WITHIN, pool.get()).await {
        Ok(got) => Ok(got?),
        Err(_) => Err(DbError::Unavailable(format!(
            "no database connection within {} ms",
            ACQUIRE_WITHIN.as_millis()
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(tokio_postgres::Error),
    /// A value that does not convert to or from its column (a json(b) document).
    #[error("column value: {0}")]
    Decode(String),
}

impl DbError {
    /// The constraint (unique, foreign key, check) a statement violated, if it did.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Query(err) => err.as_db_error().and_then(|db| db.constraint()),
            Self::Unavailable(_) | Self::Decode(_) => None,
        }
    }
}

/// An error that may stand for a violated constraint: [`DbError`], and the stores' own
/// errors that wrap one.
pub trait Violation {
    fn violated(&self) -> Option<&str>;
}

impl Violation for DbError {
    fn violated(&self) -> Option<&str> {
        self.constraint()
    }
}

/// Maps a named constraint's violation to a store's own error where the statement runs
/// (realworld-axum-sqlx's `on_constraint`); chains, so one statement can name several.
pub trait OnConstraint<T, E> {
    fn on_constraint<F: From<E>>(self, name: &str, make: impl FnOnce() -> F) -> Result<T, F>;
}

impl<T, E: Violation> OnConstraint<T, E> for Result<T, E> {
    fn on_constraint<F: From<E>>(self, name: &str, make: impl FnOnce() -> F) -> Result<T, F> {
        self.map_err(|e| {
            if e.violated() == Some(name) {
                make()
            } else {
                F::from(e)
            }
        })
    }
}

impl From<tokio_postgres::Error> for DbError {
    /// A lost or refused connection, or a server shutting down, is `Unavailable` (503, worth
    /// retrying); anything else is a fault of the statement.
    fn from(err: tokio_postgres::Error) -> Self {
        if cannot_reach(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Query(err)
        }
    }
}

/// Whether `err` says the database cannot be reached rather than that a statement failed.
fn cannot_reach(err: &tokio_postgres::Error) -> bool {
    match err.as_db_error() {
        // Class 08 (connection exception), 57P01-57P03 (shutting down, starting up), 53300
        // (too many connections).
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        // No server answer: the socket failed, closed, or timed out.
        None => {
            err.is_closed()
                || std::error::Error::source(err)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
                || err.to_string().starts_with("timeout")
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The server's connection pool, connected as the application role.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    lanes: Option<Arc<Lanes>>,
    statements: Statements,
}

impl Db {
    /// A pool of `max_size` connections, and `lanes` more for short reads (none when 0), with
    /// prepared statements.
    pub fn connect(url: &SecretString, max_size: usize, lanes: usize) -> anyhow::Result<Self> {
        Self::connect_with(url, max_size, lanes, Statements::Prepared)
    }

    /// The same, sending statements as `statements` says.
    pub fn connect_with(
        url: &SecretString,
        max_size: usize,
        lanes: usize,
        statements: Statements,
    ) -> anyhow::Result<Self> {
        let mut pg = PgTarget::parse(url.expose_secret())?;
        pg.config.application_name("convcommerce");
        // Bounds on runaway statements and on transactions a crashed handler left open.
        pg.config
            .options("-c statement_timeout=15000 -c idle_in_transaction_session_timeout=30000");
        pg.config.connect_timeout(ACQUIRE_WITHIN);
        let lanes =
            (lanes > 0).then(|| Arc::new(Lanes::new(pg.clone(), lanes, statements.clone())));
        let manager = Manager::from_config(
            pg.config,
            pg.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(ACQUIRE_WITHIN))
            .create_timeout(Some(ACQUIRE_WITHIN))
            .recycle_timeout(Some(ACQUIRE_WITHIN))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            lanes,
            statements,
        })
    }

    fn conn(&self, obj: Object) -> Conn {
        Conn::new(obj, self.statements.clone())
    }

    /// Tenant-scoped access: the only way to tenant tables.
    pub fn for_tenant(&self, tenant_id: Uuid) -> TenantDb {
        TenantDb {
            db: self.clone(),
            tenant_id,
        }
    }

    /// A connection with no tenant set, for the platform table `tenants` and for checks.
    /// Row-level security still applies: tenant tables show no rows through it.
    pub(crate) async fn platform(&self) -> Result<Conn, DbError> {
        Ok(self.conn(acquire(&self.pool).await?))
    }

    pub(crate) async fn begin_platform(&self) -> Result<PlatformTx, DbError> {
        let mut conn = self.conn(acquire(&self.pool).await?);
        conn.in_tx = true;
        conn.client().batch_execute("BEGIN").await?;
        Ok(PlatformTx { conn })
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    pub fn close(&self) {
        self.pool.close();
        if let Some(lanes) = &self.lanes {
            lanes.close();
        }
    }
}

/// A pooled connection that is never returned to the pool inside an open transaction:
/// if it is dropped mid-transaction (an error, or a cancelled request), it is rolled back
/// first, or discarded when that is impossible.
pub struct Conn {
    obj: Option<Object>,
    in_tx: bool,
    statements: Statements,
}

impl Conn {
    fn new(obj: Object, statements: Statements) -> Self {
        Self {
            obj: Some(obj),
            in_tx: false,
            statements,
        }
    }

    fn client(&self) -> &Object {
        self.obj.as_ref().expect("connection present until drop")
    }

    /// `sql`, ready to run on this connection.
    async fn ready(&self, sql: &str) -> Result<Ready, DbError> {
        Ok(match &self.statements {
            Statements::Prepared => Ready::Named(self.client().prepare_cached(sql).await?),
            Statements::Unnamed(types) => {
                Ready::Unnamed(types.of(self.client(), sql, self.in_tx).await?)
            }
        })
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        let ready = self.ready(sql).await?;
        Ok(ready.rows(self.client(), sql, params).await?)
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        at_most_one(self.query(sql, params).await?)
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Decode("one row expected, the statement returned none".into()))
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, DbError> {
        let ready = self.ready(sql).await?;
        Ok(ready.affected(self.client(), sql, params).await?)
    }

    async fn commit(&mut self) -> Result<(), DbError> {
        self.client().batch_execute("COMMIT").await?;
        self.in_tx = false;
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else { return };
        if !self.in_tx {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            // The connection goes back to the pool only once the rollback has completed.
            Ok(handle) => {
                handle.spawn(async move {
                    if obj.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(obj));
                    }
                });
            }
            Err(_) => drop(Object::take(obj)),
        }
    }
}

/// Access to one tenant's rows.
#[derive(Clone)]
pub struct TenantDb {
    db: Db,
    tenant_id: Uuid,
}

impl TenantDb {
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Runs one statement in its own tenant transaction, in one network round trip:
    /// BEGIN with the tenant, the statement and COMMIT are pipelined on the connection.
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        self.pooled(begin_for(self.tenant_id), sql, params).await
    }

    async fn pooled(
        &self,
        begin: String,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, DbError> {
        let mut conn = self.db.conn(acquire(&self.db.pool).await?);
        let ready = conn.ready(sql).await?;
        conn.in_tx = true;
        let client = conn.client();
        let (begin, rows, commit) = tokio::join!(
            client.batch_execute(&begin),
            ready.rows(client, sql, params),
            client.batch_execute("COMMIT"),
        );
        // A failed statement turns the COMMIT into a rollback; either way, once COMMIT has
        // answered the connection is idle again.
        commit?;
        conn.in_tx = false;
        begin?;
        Ok(rows?)
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs one read-only statement of bounded cost (an index lookup, a page of an index) in
    /// its own read-only tenant transaction, on a read lane when there are lanes (`db::lanes`),
    /// else on a pooled connection like [`TenantDb::query`]. Statements whose cost depends on
    /// the data, such as searches, go through `query`: on a lane they would hold up the reads
    /// queued behind them.
    pub async fn read(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        match &self.db.lanes {
            Some(lanes) => lanes.read(self.tenant_id, sql, params).await,
            None => {
                self.pooled(begin_read_for(self.tenant_id), sql, params)
                    .await
            }
        }
    }

    pub async fn read_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        Ok(self.read(sql, params).await?.into_iter().next())
    }

    /// Starts a tenant transaction (BEGIN and the tenant in one message, one round trip).
    pub async fn begin(&self) -> Result<TenantTx, DbError> {
        let mut conn = self.db.conn(acquire(&self.db.pool).await?);
        conn.in_tx = true;
        conn.client()
            .batch_execute(&begin_for(self.tenant_id))
            .await?;
        Ok(TenantTx {
            conn,
            tenant_id: self.tenant_id,
        })
    }
}

/// An open transaction with the tenant set. Dropped without `commit`, it rolls back.
pub struct TenantTx {
    conn: Conn,
    tenant_id: Uuid,
}

impl TenantTx {
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        self.conn.commit().await
    }

    /// Runs a last statement and commits, pipelined (one round trip for both); a failing
    /// statement turns the COMMIT into a rollback and is the error returned.
    pub async fn commit_after(mut self, sql: &str, params: Params<'_>) -> Result<(), DbError> {
        let ready = self.conn.ready(sql).await?;
        let client = self.conn.client();
        let (done, commit) = tokio::join!(
            ready.affected(client, sql, params),
            client.batch_execute("COMMIT")
        );
        commit?;
        self.conn.in_tx = false;
        done?;
        Ok(())
    }
}

impl std::ops::Deref for TenantTx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// An open transaction with no tenant set: tenant tables show no rows and accept no writes
/// through it until [`PlatformTx::set_tenant`]. For the platform-admin module only.
pub struct PlatformTx {
    conn: Conn,
}

impl PlatformTx {
    /// Works on `tenant_id`'s rows for the rest of this transaction.
    pub async fn set_tenant(&self, tenant_id: Uuid) -> Result<(), DbError> {
        self.conn
            .query_one(SET_TENANT, &[&tenant_id.to_string()])
            .await
            .map(drop)
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        self.conn.commit().await
    }
}

impl std::ops::Deref for PlatformTx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// Opens a single connection outside the pool (migrations, start-up checks, bootstrap).
pub async fn connect_once(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut pg = PgTarget::parse(url)?;
    pg.config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = pg.connect().await.map_err(|e| pg.explain(e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "maintenance connection closed");
        }
    });
    Ok(client)
}
