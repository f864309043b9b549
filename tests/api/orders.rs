//! Orders: server-side totals, stock reservation under concurrency, the state machine,
//! cancellation, ratings, filters and isolation.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::pooler::{Pooling, for_each_pooling};

/// The server on the shared database, directly or through PgBouncer.
async fn spawn_through(pooling: Pooling) -> (TestApp, Option<crate::pooler::PgBouncer>) {
    let db = database().await;
    let (bouncer, through) = pooling.configure(&db);
    (TestApp::spawn_on(db, through).await, bouncer)
}

for_each_pooling!(
    two_buyers_of_the_last_unit_one_succeeds,
    cancelling_releases_stock_once_even_when_raced,
);

fn customer() -> Value {
    json!({"name": "Maria Souza", "phone": "+55 11 91234-5678", "email": "Maria@Example.com"})
}

fn order_body(items: Value) -> Value {
    json!({"customer": customer(), "items": items, "channel": "whatsapp"})
}

fn id(value: &Value) -> &str {
    value["id"].as_str().unwrap()
}

async fn place(app: &TestApp, tenant: &TestTenant, body: &Value) -> Response {
    app.post("/api/v1/orders")
        .owner_of(tenant)
        .json(body)
        .send()
        .await
}

async fn stock(app: &TestApp, tenant: &TestTenant, product: &Value) -> i64 {
    app.get(&format!("/api/v1/products/{}", id(product)))
        .owner_of(tenant)
        .send()
        .await
        .expect(200)
        .body["stock"]
        .as_i64()
        .unwrap()
}

async fn move_to(app: &TestApp, tenant: &TestTenant, order: &str, status: &str) -> Response {
    app.post(&format!("/api/v1/orders/{order}/transitions"))
        .owner_of(tenant)
        .json(&json!({"status": status}))
        .send()
        .await
}

#[tokio::test]
async fn totals_come_from_product_prices_frozen_at_order_time() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let tee = app
        .product(&tenant, json!({"name": "Tee", "sku": "TEE", "price_cents": 8990, "currency": "BRL", "stock": 5}))
        .await;
    let mug = app
        .product(
            &tenant,
            json!({"name": "Mug", "price_cents": 2500, "currency": "BRL", "stock": 3}),
        )
        .await;
    let created = app
        .post("/api/v1/orders")
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({
            "customer": customer(),
            "items": [{"product_id": id(&tee), "quantity": 2}, {"product_id": id(&mug), "quantity": 3}],
            "channel": "instagram",
            "notes": "Gift wrap"
        }))
        .send()
        .await
        .expect(201);
    let order = &created.body;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["currency"], "BRL");
    assert_eq!(order["subtotal_cents"], 2 * 8990 + 3 * 2500);
    assert_eq!(order["total_cents"], order["subtotal_cents"]);
    assert_eq!(order["customer"]["phone"], "+5511912345678");
    assert_eq!(order["customer"]["email"], "maria@example.com");
    assert_eq!(order["items"][0]["unit_price_cents"], 8990);
    assert_eq!(order["items"][0]["line_total_cents"], 2 * 8990);
    assert_eq!(order["items"][0]["sku"], "TEE");
    assert_eq!(order["items"][1]["name"], "Mug");
    assert!(order["rating"].is_null());
    assert_eq!(stock(&app, &tenant, &tee).await, 3);
    assert_eq!(stock(&app, &tenant, &mug).await, 0);

    // A later price change does not touch the order; a deleted product keeps its line.
    app.patch(&format!("/api/v1/products/{}", id(&tee)))
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({"price_cents": 1}))
        .send()
        .await
        .expect(200);
    app.delete(&format!("/api/v1/products/{}", id(&mug)))
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(204);
    let read = app
        .get(&format!("/api/v1/orders/{}", id(order)))
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body["items"][0]["unit_price_cents"], 8990);
    assert_eq!(read.body["subtotal_cents"], order["subtotal_cents"]);
    assert!(read.body["items"][1]["product_id"].is_null());
    assert_eq!(read.body["items"][1]["name"], "Mug");
    // Cancelling releases what still exists.
    move_to(&app, &tenant, id(order), "cancelled")
        .await
        .expect(200);
    assert_eq!(stock(&app, &tenant, &tee).await, 5);
}

#[tokio::test]
async fn clients_cannot_send_prices_and_invalid_orders_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let p = app.product(&tenant, json!({"stock": 5})).await;
    let item = json!({"product_id": id(&p), "quantity": 1});
    for (body, field) in [
        (
            order_body(json!([{"product_id": id(&p), "quantity": 1, "unit_price_cents": 1}])),
            "items[0].unit_price_cents",
        ),
        (
            {
                let mut b = order_body(json!([item]));
                b["total_cents"] = json!(1);
                b
            },
            "total_cents",
        ),
    ] {
        let r = place(&app, &tenant, &body)
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field"),
            "{field}: {}",
            r.body
        );
    }
    let bad = place(
        &app,
        &tenant,
        &json!({
            "customer": {"name": "", "phone": "11 91234-5678", "email": "nope"},
            "items": [{"product_id": id(&p), "quantity": 0}, {"product_id": id(&p), "quantity": 1}],
            "channel": "whatsapp"
        }),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&bad),
        [
            "customer.name",
            "customer.phone",
            "customer.email",
            "items[0].quantity",
            "items[1].product_id"
        ]
    );
    let empty = place(&app, &tenant, &order_body(json!([])))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&empty), ["items"]);
    let channel = place(
        &app,
        &tenant,
        &json!({"customer": customer(), "items": [item], "channel": "fax"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&channel), ["channel"]);

    // One currency per order; only active products.
    let euro = app.product(&tenant, json!({"currency": "EUR"})).await;
    let draft = app.product(&tenant, json!({"status": "draft"})).await;
    let mixed = place(
        &app,
        &tenant,
        &order_body(json!([item, {"product_id": id(&euro), "quantity": 1}, {"product_id": id(&draft), "quantity": 1}])),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&mixed),
        ["items[1].product_id", "items[2].product_id"]
    );

    let too_many = place(
        &app,
        &tenant,
        &order_body(json!([{"product_id": id(&p), "quantity": 6}])),
    )
    .await
    .expect_problem(409, "insufficient_stock");
    assert!(
        too_many.body["detail"]
            .as_str()
            .unwrap()
            .contains("items[0]")
    );

    assert_eq!(stock(&app, &tenant, &p).await, 5, "nothing was reserved");
    let orders = app
        .get("/api/v1/orders")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert!(orders.body["items"].as_array().unwrap().is_empty());
}

async fn two_buyers_of_the_last_unit_one_succeeds(pooling: Pooling) {
    let (app, _bouncer) = spawn_through(pooling).await;
    let tenant = app.tenant().await;
    let last = app.product(&tenant, json!({"stock": 1})).await;
    let other = app.product(&tenant, json!({"stock": 100})).await;
    // Lines in both orders of product ids, so the locking order is exercised too.
    let bodies: Vec<Value> = (0..6)
        .map(|i| {
            let mut items = vec![
                json!({"product_id": id(&last), "quantity": 1}),
                json!({"product_id": id(&other), "quantity": 1}),
            ];
            if i % 2 == 1 {
                items.reverse();
            }
            order_body(Value::Array(items))
        })
        .collect();
    let results = join_all(bodies.iter().map(|b| place(&app, &tenant, b))).await;
    let ok = results.iter().filter(|r| r.status == 201).count();
    let refused = results
        .iter()
        .filter(|r| r.status == 409 && r.code() == "insufficient_stock")
        .count();
    assert_eq!((ok, refused), (1, 5));
    assert_eq!(stock(&app, &tenant, &last).await, 0);
    assert_eq!(stock(&app, &tenant, &other).await, 99);
}

#[tokio::test]
async fn the_state_machine_refuses_every_illegal_move() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    // Dozens of calls: more than the default 60 a minute.
    app.set_limits(&tenant, json!({"requests_per_minute": 10_000}))
        .await;
    let p = app.product(&tenant, json!({"stock": 1000})).await;
    let all = [
        "pending",
        "confirmed",
        "processing",
        "shipped",
        "delivered",
        "cancelled",
        "disputed",
    ];
    // How to reach each status from pending.
    let paths: [(&str, &[&str]); 7] = [
        ("pending", &[]),
        ("confirmed", &["confirmed"]),
        ("processing", &["confirmed", "processing"]),
        ("shipped", &["confirmed", "processing", "shipped"]),
        (
            "delivered",
            &["confirmed", "processing", "shipped", "delivered"],
        ),
        ("cancelled", &["cancelled"]),
        (
            "disputed",
            &["confirmed", "processing", "shipped", "disputed"],
        ),
    ];
    let legal = [
        ("pending", "confirmed"),
        ("pending", "cancelled"),
        ("confirmed", "processing"),
        ("confirmed", "cancelled"),
        ("processing", "shipped"),
        ("processing", "cancelled"),
        ("shipped", "delivered"),
        ("shipped", "disputed"),
        ("delivered", "disputed"),
    ];
    let item = json!([{"product_id": id(&p), "quantity": 1}]);
    for (from, path) in paths {
        let order = place(&app, &tenant, &order_body(item.clone()))
            .await
            .expect(201)
            .body;
        for step in path {
            move_to(&app, &tenant, id(&order), step).await.expect(200);
        }
        for to in all {
            if legal.contains(&(from, to)) {
                continue;
            }
            let r = move_to(&app, &tenant, id(&order), to)
                .await
                .expect_problem(409, "invalid_transition");
            assert!(
                r.body["detail"].as_str().unwrap().contains(from),
                "{from} -> {to}"
            );
        }
        let now = app
            .get(&format!("/api/v1/orders/{}", id(&order)))
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
        assert_eq!(now.body["status"], from, "refused moves changed nothing");
    }
    // Shipping details travel with `shipped` only; reasons with cancel and dispute only.
    let order = place(&app, &tenant, &order_body(item.clone()))
        .await
        .expect(201)
        .body;
    let transition = |body: Value| {
        app.post(&format!("/api/v1/orders/{}/transitions", id(&order)))
            .owner_of(&tenant)
            .json(&body)
            .send()
    };
    let r = transition(json!({"status": "confirmed", "tracking_number": "X1", "reason": "why"}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["tracking_number", "reason"]);
    transition(json!({"status": "confirmed"})).await.expect(200);
    transition(json!({"status": "processing"}))
        .await
        .expect(200);
    let shipped =
        transition(json!({"status": "shipped", "tracking_number": "BR1", "carrier": "Correios"}))
            .await
            .expect(200);
    assert_eq!(shipped.body["tracking_number"], "BR1");
    assert_eq!(shipped.body["carrier"], "Correios");
    let disputed = transition(json!({"status": "disputed", "reason": "Box arrived empty"}))
        .await
        .expect(200);
    assert_eq!(disputed.body["status_reason"], "Box arrived empty");
    assert_eq!(disputed.body["tracking_number"], "BR1");
}

async fn cancelling_releases_stock_once_even_when_raced(pooling: Pooling) {
    let (app, _bouncer) = spawn_through(pooling).await;
    let tenant = app.tenant().await;
    let p = app.product(&tenant, json!({"stock": 10})).await;
    let order = place(
        &app,
        &tenant,
        &order_body(json!([{"product_id": id(&p), "quantity": 4}])),
    )
    .await
    .expect(201)
    .body;
    assert_eq!(stock(&app, &tenant, &p).await, 6);
    let results = join_all((0..4).map(|_| move_to(&app, &tenant, id(&order), "cancelled"))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(stock(&app, &tenant, &p).await, 10);
}

#[tokio::test]
async fn a_delivered_order_is_rated_once() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let p = app.product(&tenant, json!({"stock": 5})).await;
    let order = place(
        &app,
        &tenant,
        &order_body(json!([{"product_id": id(&p), "quantity": 1}])),
    )
    .await
    .expect(201)
    .body;
    let rate = |body: Value| {
        app.post(&format!("/api/v1/orders/{}/rating", id(&order)))
            .owner_of(&tenant)
            .json(&body)
            .send()
    };
    rate(json!({"stars": 5}))
        .await
        .expect_problem(409, "invalid_state");
    for step in ["confirmed", "processing", "shipped", "delivered"] {
        move_to(&app, &tenant, id(&order), step).await.expect(200);
    }
    let bad = rate(json!({"stars": 6, "comment": "x".repeat(2001)}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["stars", "comment"]);
    let rated = rate(json!({"stars": 4, "comment": "Lovely"}))
        .await
        .expect(201);
    assert_eq!(rated.body["stars"], 4);
    rate(json!({"stars": 1}))
        .await
        .expect_problem(409, "already_rated");
    // Still rateable-once after a dispute: the rating stays as given.
    move_to(&app, &tenant, id(&order), "disputed")
        .await
        .expect(200);
    let read = app
        .get(&format!("/api/v1/orders/{}", id(&order)))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body["rating"]["stars"], 4);
    assert_eq!(read.body["rating"]["comment"], "Lovely");
    assert!(read.body["delivered_at"].is_string());
}

#[tokio::test]
async fn another_tenants_orders_and_products_are_not_found() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let mine = app.product(&a, json!({"stock": 5})).await;
    let theirs = app.product(&b, json!({"stock": 5})).await;
    let r = place(
        &app,
        &a,
        &order_body(json!([{"product_id": id(&mine), "quantity": 1}, {"product_id": id(&theirs), "quantity": 1}])),
    )
    .await
    .expect_problem(404, "not_found");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("items[1].product_id"),
        "{}",
        r.body
    );
    assert_eq!(stock(&app, &a, &mine).await, 5);
    assert_eq!(stock(&app, &b, &theirs).await, 5);

    let order = place(
        &app,
        &b,
        &order_body(json!([{"product_id": id(&theirs), "quantity": 1}])),
    )
    .await
    .expect(201)
    .body;
    let path = format!("/api/v1/orders/{}", id(&order));
    app.get(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    move_to(&app, &a, id(&order), "cancelled")
        .await
        .expect_problem(404, "not_found");
    app.post(&format!("{path}/rating"))
        .owner_of(&a)
        .json(&json!({"stars": 1}))
        .send()
        .await
        .expect_problem(404, "not_found");
    let list = app
        .get("/api/v1/orders")
        .owner_of(&a)
        .send()
        .await
        .expect(200);
    assert!(ids(&list).is_empty());
    let still = app.get(&path).owner_of(&b).send().await.expect(200);
    assert_eq!(still.body["status"], "pending");
}

#[tokio::test]
async fn orders_filter_and_page_newest_first() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let p = app.product(&tenant, json!({"stock": 100})).await;
    let item = json!([{"product_id": id(&p), "quantity": 1}]);
    let mut made = vec![];
    for (name, channel) in [
        ("Ana Lima", "whatsapp"),
        ("Bruno Dias", "web"),
        ("Carla Lima", "web"),
    ] {
        let body = json!({"customer": {"name": name, "phone": "+5511900000000"}, "items": item, "channel": channel});
        made.push(id(&place(&app, &tenant, &body).await.expect(201).body).to_string());
    }
    move_to(&app, &tenant, &made[0], "confirmed")
        .await
        .expect(200);
    let list = |query: String| {
        let call = app.get(&format!("/api/v1/orders{query}")).owner_of(&tenant);
        async move { ids(&call.send().await.expect(200)) }
    };
    assert_eq!(
        list(String::new()).await,
        [made[2].clone(), made[1].clone(), made[0].clone()]
    );
    assert_eq!(list("?status=confirmed".into()).await, [made[0].clone()]);
    assert_eq!(
        list("?channel=web".into()).await,
        [made[2].clone(), made[1].clone()]
    );
    assert_eq!(
        list("?q=lima".into()).await,
        [made[2].clone(), made[0].clone()]
    );
    assert_eq!(list("?q=lima&channel=web".into()).await, [made[2].clone()]);
    let future = "2999-01-01T00:00:00Z";
    assert!(list(format!("?since={future}")).await.is_empty());
    assert_eq!(list(format!("?until={future}&limit=100")).await.len(), 3);
    let first = app
        .get("/api/v1/orders?limit=2")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&first), [made[2].clone(), made[1].clone()]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    assert_eq!(
        list(format!("?limit=2&cursor={cursor}")).await,
        [made[0].clone()]
    );
    app.get("/api/v1/orders?since=2999-01-01T00:00:00Z&until=2000-01-01T00:00:00Z")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    app.get("/api/v1/orders?cursor=zzz")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(400, "invalid_cursor");
}

/// The order search's plans (see [`search_plans`]).
async fn order_search_plans(app_url: &str, tenant: uuid::Uuid, q: &str) -> [String; 2] {
    use convcommerce::commerce::orders::model::OrderFilter;
    use convcommerce::commerce::orders::store::list_statement;
    use convcommerce::extract::PageRequest;

    let filter = OrderFilter {
        status: None,
        channel: None,
        since: None,
        until: None,
        q: Some(q.into()),
        page: PageRequest {
            limit: 20,
            after: None,
        },
    };
    let statement = list_statement(tenant, &filter);
    let literals = format!("'{tenant}', '{q}', '%{q}%', {}", filter.page.limit + 1);
    search_plans(app_url, tenant, &statement, &literals).await
}

#[tokio::test]
async fn order_search_uses_the_trigram_index_at_a_hundred_thousand_orders() {
    let db = private_database().await;
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let tenant = app.tenant().await;
    let neighbour = app.tenant().await;
    let owner = connect(&db.owner_url).await;
    // Seeded as the owner with the tenant set (row-level security applies to it too); the
    // search terms come from the same trigger the server's inserts fire.
    for (t, count) in [(tenant.id, 100_000), (neighbour.id, 1_000)] {
        owner
            .batch_execute(&format!(
                "BEGIN;
                 SELECT set_config('my.tenant_id', '{t}', true);
                 INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents,
                     total_cents, currency)
                 SELECT '{t}', gen_random_uuid(), 'web',
                        jsonb_build_object('name', 'Cliente ' || i, 'phone', '+55119' || lpad(i::text, 8, '0')),
                        100, 100, 'BRL'
                 FROM generate_series(1, {count}) AS i;
                 COMMIT;"
            ))
            .await
            .unwrap();
    }
    let product = app.product(&tenant, json!({})).await;
    place(
        &app,
        &tenant,
        &json!({"customer": {"name": "Joana Quitéria", "phone": "+5521998877665"},
                "items": [{"product_id": id(&product), "quantity": 1}], "channel": "whatsapp"}),
    )
    .await
    .expect(201);
    owner
        .batch_execute("ANALYZE orders; ANALYZE order_search_terms")
        .await
        .unwrap();

    for plan in order_search_plans(&db.app_url, tenant.id, "quitéria").await {
        assert!(plan.contains("order_search_terms_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
    // Over HTTP, by name and by phone.
    for q in ["Quit%C3%A9ria", "552199887"] {
        let found = app
            .get(&format!("/api/v1/orders?q={q}"))
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
        assert_eq!(found.body["items"].as_array().unwrap().len(), 1, "{q}");
    }
    // The neighbour's orders are not found, though they match.
    let theirs = app
        .get("/api/v1/orders?q=Cliente%201")
        .owner_of(&neighbour)
        .send()
        .await
        .expect(200);
    assert!(!theirs.body["items"].as_array().unwrap().is_empty());

    app.stop().await;
    drop(owner);
    drop_database(&db).await;
}
