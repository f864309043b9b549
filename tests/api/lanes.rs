//! Read lanes (`db::lanes`): many requests' read transactions pipelined on one connection.
//! (The HTTP isolation case is `isolation::interleaved_requests_over_one_read_lane_never_leak`.)

use convcommerce::db::{Db, DbError, Statements};
use futures_util::future::join_all;
use secrecy::SecretString;
use serde_json::json;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::*;
use crate::pooler::{PgBouncer, Pooling, for_each_pooling};

const NAMES: &str = "SELECT name FROM products WHERE tenant_id = $1 ORDER BY name";

fn lane_db(app: &TestApp, lanes: usize) -> Db {
    Db::connect(&SecretString::from(app.db.app_url.clone()), 1, lanes).unwrap()
}

/// A pool of one connection and one lane, directly or through `bouncer` (then with unnamed
/// statements, as a deployment behind PgBouncer configures it).
fn lane_db_through(app: &TestApp, bouncer: &Option<PgBouncer>) -> Db {
    match bouncer {
        None => lane_db(app, 1),
        Some(b) => {
            let url = SecretString::from(b.url(&app.db.app_url));
            Db::connect_with(&url, 1, 1, Statements::unnamed()).unwrap()
        }
    }
}

for_each_pooling!(
    reads_pipelined_on_one_lane_see_only_their_own_tenant,
    a_failing_read_leaves_the_reads_pipelined_around_it_intact,
);

fn names(rows: Result<Vec<tokio_postgres::Row>, DbError>) -> Vec<String> {
    rows.expect("the read succeeds")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sql_state(result: Result<Vec<tokio_postgres::Row>, DbError>) -> SqlState {
    match result {
        Err(DbError::Query(e)) => e.code().cloned().expect("a database error"),
        other => panic!("expected a database error, got {other:?}"),
    }
}

/// Two tenants with a product each, named after them.
async fn two_stores(app: &TestApp) -> (TestTenant, TestTenant) {
    let (a, b) = (app.tenant().await, app.tenant().await);
    app.product(&a, json!({"name": "lane-a"})).await;
    app.product(&b, json!({"name": "lane-b"})).await;
    (a, b)
}

async fn reads_pipelined_on_one_lane_see_only_their_own_tenant(pooling: Pooling) {
    let app = TestApp::spawn().await;
    let (bouncer, _) = pooling.configure(&app.db);
    let (a, b) = two_stores(&app).await;
    let db = lane_db_through(&app, &bouncer);
    // Each read right behind the other tenant's transaction on the same connection; every
    // third asks for the other tenant's rows by id, which row-level security must hide.
    let reads = (0..90).map(|i| {
        let db = db.clone();
        let (own, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let asked = if i % 3 == 0 { other.id } else { own.id };
        async move {
            (
                own.id,
                asked,
                db.for_tenant(own.id).read(NAMES, &[&asked]).await,
            )
        }
    });
    for (own, asked, rows) in join_all(reads).await {
        let expected: Vec<String> = match (own == asked, own == a.id) {
            (false, _) => vec![],
            (true, true) => vec!["lane-a".into()],
            (true, false) => vec!["lane-b".into()],
        };
        assert_eq!(names(rows), expected, "tenant {own} asking for {asked}");
    }
}

async fn a_failing_read_leaves_the_reads_pipelined_around_it_intact(pooling: Pooling) {
    let app = TestApp::spawn().await;
    let (bouncer, _) = pooling.configure(&app.db);
    let (a, b) = two_stores(&app).await;
    let db = lane_db_through(&app, &bouncer);
    let failing = "SELECT 1 / (count(*) - count(*))::int FROM products WHERE tenant_id = $1";
    let reads = (0..60).map(|i| {
        let db = db.clone();
        let (tenant, sql) = match i % 3 {
            0 => (a.id, NAMES),
            1 => (b.id, failing),
            _ => (b.id, NAMES),
        };
        async move { (i, db.for_tenant(tenant).read(sql, &[&tenant]).await) }
    });
    for (i, result) in join_all(reads).await {
        match i % 3 {
            0 => assert_eq!(names(result), ["lane-a"]),
            1 => assert_eq!(sql_state(result), SqlState::DIVISION_BY_ZERO),
            _ => assert_eq!(names(result), ["lane-b"]),
        }
    }
}

#[tokio::test]
async fn a_read_cannot_write_or_lock_on_a_lane_or_off_one() {
    let app = TestApp::spawn().await;
    let (a, _) = two_stores(&app).await;
    for lanes in [1, 0] {
        let db = lane_db(&app, lanes).for_tenant(a.id);
        let update = "UPDATE products SET name = 'changed' WHERE tenant_id = $1 RETURNING name";
        let lock = "SELECT name FROM products WHERE tenant_id = $1 FOR UPDATE";
        for sql in [update, lock] {
            assert_eq!(
                sql_state(db.read(sql, &[&a.id]).await),
                SqlState::READ_ONLY_SQL_TRANSACTION,
                "{sql} with {lanes} lanes"
            );
        }
        assert_eq!(names(db.read(NAMES, &[&a.id]).await), ["lane-a"]);
    }
}

/// The backends of the server's read lanes in the test database.
async fn lane_backends(admin: &tokio_postgres::Client, database: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'convcommerce-lane' ORDER BY pid",
            &[&database],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_read_lane_whose_connection_dies_reconnects_without_failing_a_request() {
    let database = private_database().await;
    let app = TestApp::spawn_on(database, |_| {}).await;
    let tenant = app.tenant().await;
    app.product(&tenant, json!({"name": "survivor"})).await;
    let list = || app.get("/api/v1/products").owner_of(&tenant).send();
    list().await.expect(200);

    let admin = connect(&app.db.superuser_url).await;
    let before = lane_backends(&admin, &app.db.database).await;
    assert_eq!(before.len(), 1, "one lane, connected by the first read");
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&before[0]])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    for _ in 0..3 {
        let page = list().await.expect(200);
        assert_eq!(page.body["items"][0]["name"], "survivor");
    }
    let after = lane_backends(&admin, &app.db.database).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new connection replaced the killed one");
}

#[tokio::test]
async fn reads_through_the_api_use_the_lane_and_writes_do_not() {
    let database = private_database().await;
    let app = TestApp::spawn_on(database, |_| {}).await;
    let tenant = app.tenant().await;
    let admin = connect(&app.db.superuser_url).await;
    app.product(&tenant, json!({"name": "written"})).await;
    assert!(
        lane_backends(&admin, &app.db.database).await.is_empty(),
        "a create runs on the pool"
    );
    let page = app
        .get("/api/v1/products")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(page.body["items"][0]["name"], "written");
    assert_eq!(lane_backends(&admin, &app.db.database).await.len(), 1);
    let random = Uuid::now_v7();
    app.get(&format!("/api/v1/products/{random}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");
}
