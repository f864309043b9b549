//! Row-level security at the database and through the server's pool and read lanes.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;
use crate::pooler::{Pooling, for_each_pooling};

/// Inserts a product for `tenant` as the application role, with the tenant set.
async fn insert_product(app_url: &str, tenant: Uuid, name: &str) {
    let mut client = connect(app_url).await;
    let tx = tenant_tx(&mut client, tenant).await;
    tx.execute(
        "INSERT INTO products (tenant_id, id, name, price_cents, currency) VALUES ($1, $2, $3, 100, 'USD')",
        &[&tenant, &Uuid::now_v7(), &name],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_seed_example_holds_at_the_database() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    insert_product(&app.db.app_url, a.id, "a-product").await;
    insert_product(&app.db.app_url, b.id, "b-product").await;

    let mut client = connect(&app.db.app_url).await;
    for tenant in [a.id, b.id] {
        let tx = tenant_tx(&mut client, tenant).await;
        let rows = tx
            .query(
                "SELECT tenant_id FROM products WHERE tenant_id IN ($1, $2)",
                &[&a.id, &b.id],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "only the tenant's own product is visible");
        assert_eq!(rows[0].get::<_, Uuid>(0), tenant);
        tx.commit().await.unwrap();
    }

    // No tenant set: nothing at all, not even with an explicit filter.
    let none = client
        .query(
            "SELECT count(*) FROM products WHERE tenant_id IN ($1, $2)",
            &[&a.id, &b.id],
        )
        .await
        .unwrap();
    assert_eq!(none[0].get::<_, i64>(0), 0);
    let users = client
        .query("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(users[0].get::<_, i64>(0), 0);

    // The setting does not outlive its transaction.
    let tx = tenant_tx(&mut client, a.id).await;
    tx.commit().await.unwrap();
    let after = client
        .query("SELECT count(*) FROM products", &[])
        .await
        .unwrap();
    assert_eq!(after[0].get::<_, i64>(0), 0);

    // WITH CHECK: writing B's row while A is set is refused, as is moving a row to B.
    let tx = tenant_tx(&mut client, a.id).await;
    let err = tx
        .execute(
            "INSERT INTO products (tenant_id, id, name, price_cents, currency) VALUES ($1, $2, 'x', 1, 'USD')",
            &[&b.id, &Uuid::now_v7()],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    drop(tx);
    let tx = tenant_tx(&mut client, a.id).await;
    let err = tx
        .execute(
            "UPDATE products SET tenant_id = $1 WHERE tenant_id = $2",
            &[&b.id, &a.id],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn the_app_role_cannot_alter_policies_or_read_migrations() {
    let db = database().await;
    let client = connect(&db.app_url).await;
    for statement in [
        "ALTER TABLE products DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE products NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON users",
        "SELECT * FROM schema_migrations",
        "CREATE TABLE sneaky (id int)",
        "DELETE FROM tenants",
        "UPDATE sms_routes SET tenant = tenant",
    ] {
        let err = client.batch_execute(statement).await;
        assert!(err.is_err(), "{statement} must be refused");
    }
}

fn subjects(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u["external_id"].as_str().unwrap().to_string())
        .collect()
}

for_each_pooling!(
    interleaved_requests_over_a_tiny_pool_never_leak,
    interleaved_requests_over_one_read_lane_never_leak,
);

async fn interleaved_requests_over_a_tiny_pool_never_leak(pooling: Pooling) {
    interleaved_requests_never_leak("0", pooling).await;
}

/// The same through one read lane: every request's transaction pipelined on one connection.
async fn interleaved_requests_over_one_read_lane_never_leak(pooling: Pooling) {
    interleaved_requests_never_leak("1", pooling).await;
}

async fn interleaved_requests_never_leak(lanes: &str, pooling: Pooling) {
    let db = database().await;
    let (_bouncer, through) = pooling.configure(&db);
    let app = TestApp::spawn_on(db, |vars| {
        through(vars);
        vars.insert("DB_POOL_SIZE".into(), "1".into());
        vars.insert("DB_LANES".into(), lanes.into());
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let mut a_members = vec![a.owner.clone()];
    let mut b_members = vec![b.owner.clone()];
    for _ in 0..3 {
        a_members.push(app.member(&a, "staff").await.0);
        b_members.push(app.member(&b, "staff").await.0);
    }

    // Abandoned requests (client gives up mid-flight) must not leave a tenant behind on
    // the connection.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_micros(300))
        .build()
        .unwrap();
    let abandoned = (0..40).map(|i| {
        let (tenant, owner) = if i % 2 == 0 {
            (&a, &a.owner)
        } else {
            (&b, &b.owner)
        };
        impatient
            .get(format!("{}/api/v1/users", app.base))
            .bearer_auth(token(owner))
            .header("X-Tenant-ID", tenant.id.to_string())
            .send()
    });
    join_all(abandoned).await;

    // 200 requests, 25 in flight at a time: enough to interleave both tenants on the one
    // connection, few enough that none waits past the pool's 800 ms (a 503 is no leak, but
    // proves nothing either) on a loaded machine.
    let mut answers = Vec::new();
    for wave in 0..8 {
        let calls = (0..25).map(|i| {
            let tenant = if (wave * 25 + i) % 2 == 0 { &a } else { &b };
            let call = app.get("/api/v1/users?limit=100").owner_of(tenant);
            async move { (tenant.id, call.send().await) }
        });
        answers.extend(join_all(calls).await);
    }
    for (tenant, response) in answers {
        let response = response.expect(200);
        let mut seen = subjects(&response.body);
        seen.sort();
        let mut expected = if tenant == a.id {
            a_members.clone()
        } else {
            b_members.clone()
        };
        expected.sort();
        assert_eq!(seen, expected, "tenant {tenant} saw exactly its own users");
    }
}

/// SPEC §3, for Citus: `tenant_id` is in every tenant table's primary key, every unique
/// constraint and unique index, and both sides of every foreign key between tenant tables
/// (the rule co-location needs). A tenant table is one with a `tenant_id` column.
#[tokio::test]
async fn every_key_of_a_tenant_table_includes_tenant_id() {
    let db = database().await;
    let client = connect(&db.owner_url).await;
    let tenant_tables: Vec<String> = client
        .query(
            "SELECT c.relname FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
             WHERE c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tenant_tables.len() >= 10, "{tenant_tables:?}");
    // Keys (constraints and unique indexes) of tenant tables that leave tenant_id out; for a
    // foreign key, also its referenced side when that is a tenant table.
    let faults: Vec<String> = client
        .query(
            "WITH tenant_tables AS (
                 SELECT c.oid, a.attnum FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                 WHERE c.relkind IN ('r', 'p'))
             SELECT format('%s: %s %s', k.conrelid::regclass, k.contype, k.conname)
             FROM pg_constraint k JOIN tenant_tables t ON t.oid = k.conrelid
             WHERE k.contype IN ('p', 'u', 'f')
               AND (NOT t.attnum = ANY (k.conkey)
                    OR (k.contype = 'f' AND EXISTS (
                            SELECT 1 FROM tenant_tables r
                            WHERE r.oid = k.confrelid AND NOT r.attnum = ANY (k.confkey))))
             UNION ALL
             SELECT format('%s: unique index %s', i.indrelid::regclass, i.indexrelid::regclass)
             FROM pg_index i JOIN tenant_tables t ON t.oid = i.indrelid
             WHERE i.indisunique AND NOT t.attnum = ANY (i.indkey::int2[])
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(faults.is_empty(), "keys without tenant_id: {faults:#?}");
}
