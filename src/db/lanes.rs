//! Read lanes: short tenant reads from many requests share a few connections, each request's
//! transaction pipelined behind the others' (`DB_LANES`, docs/ARCHITECTURE.md).
//!
//! A lane is one connection. A request sends its whole transaction (`BEGIN READ ONLY` with the
//! transaction-local tenant in one message, the statement, prepared once per lane, and
//! `COMMIT`) while it holds the lane's send lock, so the connection carries complete
//! transactions one after another and PostgreSQL reads many of them per wake-up instead of
//! waiting for each client's next message. Nothing of another request can land inside a
//! transaction, and every statement also filters `tenant_id` explicitly. The transaction is
//! read-only: a write, or a row lock, fails instead of holding up the requests queued behind it.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use super::tls::PgTarget;
use super::{DbError, Params, Ready, Statements, begin_read_for};

pub(super) struct Lanes {
    target: PgTarget,
    lanes: Vec<Lane>,
    statements: Statements,
}

#[derive(Default)]
struct Lane {
    /// The open connection, which every request on the lane reads.
    open: RwLock<Option<Arc<LaneConnection>>>,
    /// Held while the connection is opened (on first use, and again after it breaks), so
    /// that one request connects and the others wait for it.
    connecting: AsyncMutex<()>,
    /// Requests on this lane, queued or in flight: new ones go to the least busy lane.
    busy: AtomicUsize,
}

struct LaneConnection {
    client: Client,
    /// Prepared statements by SQL text (a finite set: the service's statements).
    statements: Mutex<HashMap<String, Statement>>,
    /// Held while a request sends its transaction or a statement is prepared, so that both
    /// go out whole, between complete transactions.
    send: AsyncMutex<()>,
}

impl Lanes {
    pub(super) fn new(mut target: PgTarget, count: usize, statements: Statements) -> Self {
        target.config.application_name("convcommerce-lane");
        Self {
            target,
            lanes: (0..count).map(|_| Lane::default()).collect(),
            statements,
        }
    }

    /// Runs one read-only statement in its own tenant transaction on the least busy lane.
    /// When the lane's connection turns out to be closed, the read runs again on a new one
    /// (once): a read-only transaction can be repeated.
    pub(super) async fn read(
        &self,
        tenant_id: Uuid,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, DbError> {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|lane| lane.busy.load(Ordering::Relaxed))
            .expect("lanes are only made with at least one");
        lane.busy.fetch_add(1, Ordering::Relaxed);
        let _busy = Busy(&lane.busy);
        // Only a connection that was open may have died under the read; a failed connect is
        // not tried twice, so an outage is answered within one connect timeout.
        let was_open = lane.current().is_some();
        match self.read_on(lane, tenant_id, sql, params).await {
            Err(DbError::Unavailable(cause)) if was_open => {
                tracing::warn!(error = %cause, "read lane connection lost; reconnecting");
                self.read_on(lane, tenant_id, sql, params).await
            }
            done => done,
        }
    }

    async fn read_on(
        &self,
        lane: &Lane,
        tenant_id: Uuid,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, DbError> {
        let connection = self.connection(lane).await?;
        let ready = connection.ready(sql, &self.statements).await?;
        let begin = begin_read_for(tenant_id);
        let client = &connection.client;
        let mut exchange = pin!(async {
            tokio::join!(
                client.batch_execute(&begin),
                ready.rows(client, sql, params),
                client.batch_execute("COMMIT"),
            )
        });
        // tokio-postgres sends a request when its future is first polled, so this first poll
        // sends all three messages, back to back, under the send lock.
        let first = {
            let _send = connection.send.lock().await;
            poll_fn(|cx| Poll::Ready(exchange.as_mut().poll(cx))).await
        };
        let (begin, rows, commit) = match first {
            Poll::Ready(done) => done,
            Poll::Pending => exchange.await,
        };
        // A failed statement turns the COMMIT into a rollback; the lane is idle again after it.
        commit?;
        begin?;
        Ok(rows?)
    }

    async fn connection(&self, lane: &Lane) -> Result<Arc<LaneConnection>, DbError> {
        if let Some(open) = lane.current() {
            return Ok(open);
        }
        let _connecting = lane.connecting.lock().await;
        if let Some(open) = lane.current() {
            return Ok(open);
        }
        let (client, connection) = self
            .target
            .connect()
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "read lane connection closed");
            }
        });
        let open = Arc::new(LaneConnection {
            client,
            statements: Mutex::default(),
            send: AsyncMutex::new(()),
        });
        *lane.open.write().expect("never poisoned") = Some(open.clone());
        Ok(open)
    }

    /// Closes the lanes' connections (requests still running on them finish first).
    pub(super) fn close(&self) {
        for lane in &self.lanes {
            lane.open.write().expect("never poisoned").take();
        }
    }
}

impl Lane {
    /// The connection, unless it is missing or closed.
    fn current(&self) -> Option<Arc<LaneConnection>> {
        self.open
            .read()
            .expect("never poisoned")
            .as_ref()
            .filter(|c| !c.client.is_closed())
            .cloned()
    }
}

impl LaneConnection {
    /// `sql`, ready to run on this lane: prepared once per lane, or (unnamed statements) with
    /// its parameter types, learned once. Either is done under the send lock, so that it too
    /// goes out between complete transactions.
    async fn ready(&self, sql: &str, statements: &Statements) -> Result<Ready, DbError> {
        match statements {
            Statements::Prepared => {
                if let Some(statement) = self.statements.lock().expect("never poisoned").get(sql) {
                    return Ok(Ready::Named(statement.clone()));
                }
                let _send = self.send.lock().await;
                let statement = self.client.prepare(sql).await?;
                self.statements
                    .lock()
                    .expect("never poisoned")
                    .insert(sql.to_string(), statement.clone());
                Ok(Ready::Named(statement))
            }
            Statements::Unnamed(types) => {
                if let Some(known) = types.known(sql) {
                    return Ok(Ready::Unnamed(known));
                }
                let _send = self.send.lock().await;
                Ok(Ready::Unnamed(types.of(&self.client, sql, false).await?))
            }
        }
    }
}

struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
