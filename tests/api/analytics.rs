//! Analytics (SPEC §6): revenue, orders, average order value, top products and conversion, per
//! day in the tenant's time zone, computed under row-level security; their plans at 100,000
//! orders.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

async fn place(app: &TestApp, tenant: &TestTenant, product: &Value, quantity: i64) -> String {
    app.post("/api/v1/orders")
        .owner_of(tenant)
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511955550000"},
                      "items": [{"product_id": product["id"], "quantity": quantity}],
                      "channel": "whatsapp"}),
        )
        .send()
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn move_to(app: &TestApp, tenant: &TestTenant, order: &str, path: &[&str]) {
    for status in path {
        let mut body = json!({"status": status});
        if *status == "shipped" {
            body["tracking_number"] = json!("TR1");
            body["carrier"] = json!("Post");
        }
        app.post(&format!("/api/v1/orders/{order}/transitions"))
            .owner_of(tenant)
            .json(&body)
            .send()
            .await
            .expect(200);
    }
}

async fn say(app: &TestApp, tenant: &TestTenant, handle: &str, sender: &str, order: Option<&str>) {
    app.post("/api/v1/conversations/messages")
        .owner_of(tenant)
        .json(
            &json!({"customer_handle": handle, "channel": "whatsapp", "sender_type": sender,
                      "message": "hi", "order_id": order}),
        )
        .send()
        .await
        .expect(201);
}

#[tokio::test]
async fn the_summary_counts_sales_and_conversations_of_the_tenant() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.tenant().await;
    let neighbour = app.tenant().await;
    let tee = app
        .product(
            &tenant,
            json!({"name": "Tee", "price_cents": 1000, "currency": "BRL", "stock": 100}),
        )
        .await;
    let mug = app
        .product(
            &tenant,
            json!({"name": "Mug", "price_cents": 2500, "currency": "BRL", "stock": 100}),
        )
        .await;
    let cap = app
        .product(
            &tenant,
            json!({"name": "Cap", "price_cents": 700, "currency": "USD", "stock": 100}),
        )
        .await;
    let kept = place(&app, &tenant, &tee, 2).await;
    let delivered = place(&app, &tenant, &mug, 1).await;
    move_to(
        &app,
        &tenant,
        &delivered,
        &["confirmed", "processing", "shipped", "delivered"],
    )
    .await;
    let cancelled = place(&app, &tenant, &tee, 1).await;
    move_to(&app, &tenant, &cancelled, &["cancelled"]).await;
    let dollars = place(&app, &tenant, &cap, 3).await;
    move_to(&app, &tenant, &dollars, &["confirmed"]).await;
    let disputed = place(&app, &tenant, &mug, 1).await;
    move_to(
        &app,
        &tenant,
        &disputed,
        &["confirmed", "processing", "shipped", "disputed"],
    )
    .await;
    // The neighbour's sales are not ours.
    let theirs = app
        .product(
            &neighbour,
            json!({"currency": "BRL", "price_cents": 99_999}),
        )
        .await;
    place(&app, &neighbour, &theirs, 1).await;
    // Two threads where a customer wrote, one of them turned into an order; a merchant-only
    // thread is no conversation.
    say(&app, &tenant, "+5511900000001", "customer", None).await;
    say(&app, &tenant, "+5511900000001", "merchant", Some(&kept)).await;
    say(&app, &tenant, "+5511900000002", "customer", None).await;
    say(&app, &tenant, "+5511900000003", "merchant", Some(&dollars)).await;

    let summary = app
        .get("/api/v1/analytics/summary")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(summary["orders"], 5);
    assert_eq!(
        summary["orders_by_status"],
        json!({"pending": 1, "confirmed": 1, "processing": 0, "shipped": 0, "delivered": 1,
               "cancelled": 1, "disputed": 1})
    );
    assert_eq!(
        summary["revenue"],
        json!([
            {"currency": "BRL", "amount_cents": 4500, "orders": 2, "average_order_cents": 2250},
            {"currency": "USD", "amount_cents": 2100, "orders": 1, "average_order_cents": 2100}
        ])
    );
    let top: Vec<(&str, i64, i64)> = summary["top_products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["quantity"].as_i64().unwrap(),
                p["revenue_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top, [("Mug", 1, 2500), ("Cap", 3, 2100), ("Tee", 2, 2000)]);
    assert_eq!(
        summary["conversations"],
        json!({"threads": 2, "converted": 1, "rate": 0.5})
    );
    assert_eq!(summary["timezone"], "UTC");
    // A range with nothing in it.
    let empty = app
        .get("/api/v1/analytics/summary?since=2020-01-01T00:00:00Z&until=2020-02-01T00:00:00Z")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(empty["orders"], 0);
    assert_eq!(empty["revenue"], json!([]));
    assert!(empty["conversations"]["rate"].is_null());
}

#[tokio::test]
async fn days_are_the_tenants_days() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.put("/api/v1/tenant/settings")
        .owner_of(&tenant)
        .json(&json!({"timezone": "America/Sao_Paulo", "auto_confirm_orders": false}))
        .send()
        .await
        .expect(200);
    // 02:00 UTC on March 10th is still March 9th in São Paulo (UTC-3).
    let mut owner = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    for (at, cents, status) in [
        ("2026-03-10T02:00:00Z", 999_i64, "delivered"),
        ("2026-03-10T12:00:00Z", 500, "pending"),
        ("2026-03-10T13:00:00Z", 400, "cancelled"),
        ("2026-03-23T12:00:00Z", 300, "shipped"),
    ] {
        tx.execute(
            "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
                 currency, status, created_at)
             VALUES ($1, $2, 'web', '{\"name\": \"A\", \"phone\": \"+5511900000000\"}', $3, $3,
                 'BRL', $4, $5::text::timestamptz)",
            &[&tenant.id, &Uuid::now_v7(), &cents, &status, &at],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let series = |query: &str| {
        let app = &app;
        let tenant = &tenant;
        let path = format!("/api/v1/analytics/timeseries?{query}");
        async move {
            app.get(&path)
                .owner_of(tenant)
                .send()
                .await
                .expect(200)
                .body
        }
    };
    let days = series("since=2026-03-09T00:00:00-03:00&until=2026-03-11T00:00:00-03:00").await;
    assert_eq!(days["timezone"], "America/Sao_Paulo");
    assert_eq!(days["interval"], "day");
    assert_eq!(
        days["points"],
        json!([
            {"date": "2026-03-09", "start": "2026-03-09T03:00:00Z", "orders": 1,
             "revenue": [{"currency": "BRL", "amount_cents": 999}]},
            {"date": "2026-03-10", "start": "2026-03-10T03:00:00Z", "orders": 2,
             "revenue": [{"currency": "BRL", "amount_cents": 500}]}
        ])
    );
    let weeks = series("since=2026-03-09T03:00:00Z&until=2026-03-30T03:00:00Z&interval=week").await;
    let points = weeks["points"].as_array().unwrap();
    let dates: Vec<&str> = points.iter().map(|p| p["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-03-09", "2026-03-16", "2026-03-23"]);
    let orders: Vec<i64> = points
        .iter()
        .map(|p| p["orders"].as_i64().unwrap())
        .collect();
    assert_eq!(orders, [3, 0, 1]);
    let months =
        series("since=2026-02-15T00:00:00Z&until=2026-04-01T03:00:00Z&interval=month").await;
    let dates: Vec<&str> = months["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["date"].as_str().unwrap())
        .collect();
    assert_eq!(dates, ["2026-02-01", "2026-03-01"]);
    assert_eq!(months["points"][1]["orders"], 4);
    // The summary of São Paulo's March 9th holds the early order only.
    let day = app
        .get("/api/v1/analytics/summary?since=2026-03-09T03:00:00Z&until=2026-03-10T03:00:00Z")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(day["orders"], 1);
    let too_long = app
        .get("/api/v1/analytics/timeseries?since=2025-01-01T00:00:00Z&until=2026-03-01T00:00:00Z")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&too_long), ["until"]);
}

/// `EXPLAIN ANALYZE` of `sql` as the application role in `tenant`: the plan's text and its
/// execution time in milliseconds (the best of three runs, the cache warm).
async fn explain(
    app_url: &str,
    tenant: Uuid,
    sql: &str,
    extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (String, f64) {
    let mut client = connect(app_url).await;
    let tx = tenant_tx(&mut client, tenant).await;
    let until = chrono::Utc::now();
    let since = until - chrono::Duration::days(30);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &since, &until];
    params.extend_from_slice(extra);
    let mut best = f64::MAX;
    let mut plan = String::new();
    for _ in 0..3 {
        let rows = tx
            .query(&format!("EXPLAIN (ANALYZE, FORMAT TEXT) {sql}"), &params)
            .await
            .unwrap();
        plan = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n");
        let ms: f64 = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Execution Time: "))
            .and_then(|t| t.trim_end_matches(" ms").parse().ok())
            .unwrap();
        best = best.min(ms);
    }
    (plan, best)
}

#[tokio::test]
/// The plans (indexes only, no sequential scan) are asserted; the execution times are printed
/// (`--no-capture`), a figure rather than a timed assertion.
async fn analytics_read_indexes_at_a_hundred_thousand_orders() {
    use convcommerce::commerce::analytics::store::{
        CONVERSION, ORDERS_BY_STATUS, series_sql, top_products_sql,
    };

    let db = private_database().await;
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let tenant = app.tenant().await;
    let neighbour = app.tenant().await;
    let owner = connect(&db.owner_url).await;
    // A year of orders (about 270 a day), each with a line, and a year of messages, for the
    // tenant; a neighbour with a few of its own. (Order search terms are not needed here: the
    // database is the test's own, so their trigger is off while seeding.)
    owner
        .batch_execute("ALTER TABLE orders DISABLE TRIGGER orders_search_terms_insert")
        .await
        .unwrap();
    for (t, count) in [(tenant.id, 100_000), (neighbour.id, 5_000)] {
        owner
            .batch_execute(&format!(
                "BEGIN;
                 SELECT set_config('my.tenant_id', '{t}', true);
                 INSERT INTO products (tenant_id, id, name, price_cents, currency)
                 SELECT '{t}', ('00000000-0000-7000-8000-' || lpad(p::text, 12, '0'))::uuid,
                        'Product ' || p, 1000 + p, 'BRL'
                 FROM generate_series(1, 50) AS p;
                 INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
                     currency, status, created_at)
                 SELECT '{t}', gen_random_uuid(), 'web',
                        jsonb_build_object('name', 'C' || i, 'phone', '+55119' || lpad(i::text, 8, '0')),
                        1000 + i % 50, 1000 + i % 50, 'BRL',
                        (ARRAY['pending','confirmed','delivered','delivered','cancelled'])[1 + i % 5],
                        now() - (i % 365) * interval '1 day' - (i % 1440) * interval '1 minute'
                 FROM generate_series(1, {count}) AS i;
                 INSERT INTO order_items (tenant_id, order_id, position, product_id, name, quantity,
                     unit_price_cents, placed_at)
                 SELECT o.tenant_id, o.id, 0,
                        ('00000000-0000-7000-8000-' || lpad((1 + o.total_cents % 50)::text, 12, '0'))::uuid,
                        'Product', 1, o.total_cents, o.created_at
                 FROM orders o WHERE o.tenant_id = '{t}';
                 INSERT INTO conversation_threads (tenant_id, id, customer_handle, channel, last_message_id)
                 SELECT '{t}', ('00000000-0000-7000-9000-' || lpad(h::text, 12, '0'))::uuid,
                        'h' || h, 'whatsapp', gen_random_uuid()
                 FROM generate_series(1, 2000) AS h;
                 INSERT INTO conversation_history (tenant_id, id, thread_id, customer_handle, channel,
                     sender_type, message, created_at)
                 SELECT '{t}', gen_random_uuid(),
                        ('00000000-0000-7000-9000-' || lpad((1 + i % 2000)::text, 12, '0'))::uuid,
                        'h' || (1 + i % 2000), 'whatsapp',
                        (ARRAY['customer','merchant'])[1 + i % 2], 'hi',
                        now() - (i % 365) * interval '1 day'
                 FROM generate_series(1, {count} / 2) AS i;
                 COMMIT;"
            ))
            .await
            .unwrap();
    }
    for table in ["orders", "order_items", "conversation_history"] {
        owner
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }

    let (plan, ms) = explain(&db.app_url, tenant.id, ORDERS_BY_STATUS, &[]).await;
    assert!(
        plan.contains("orders_tenant_created_idx") && !plan.contains("Seq Scan"),
        "{plan}"
    );
    eprintln!("orders by status: {ms:.1} ms");
    let (plan, ms) = explain(&db.app_url, tenant.id, &top_products_sql(), &[]).await;
    assert!(
        plan.contains("orders_tenant_created_idx")
            && plan.contains("order_items_placed_idx")
            && !plan.contains("Seq Scan"),
        "{plan}"
    );
    eprintln!("top products: {ms:.1} ms");
    let (plan, ms) = explain(&db.app_url, tenant.id, CONVERSION, &[]).await;
    assert!(
        plan.contains("conversation_history_created_idx") && !plan.contains("Seq Scan"),
        "{plan}"
    );
    eprintln!("conversion: {ms:.1} ms");
    let (plan, ms) = explain(
        &db.app_url,
        tenant.id,
        &series_sql(),
        &[&"day", &"America/Sao_Paulo"],
    )
    .await;
    assert!(
        plan.contains("orders_tenant_created_idx") && !plan.contains("Seq Scan"),
        "{plan}"
    );
    eprintln!("time series: {ms:.1} ms");

    // Over HTTP, the default 30 days hold about a twelfth of the year.
    let summary = app
        .get("/api/v1/analytics/summary")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    let orders = summary["orders"].as_i64().unwrap();
    assert!((7_000..=9_500).contains(&orders), "{orders}");
    assert_eq!(summary["top_products"].as_array().unwrap().len(), 5);
    app.stop().await;
    drop(owner);
    drop_database(&db).await;
}
