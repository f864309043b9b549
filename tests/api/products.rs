//! Products: validation, unique skus under concurrency, filters, pagination, isolation, and
//! the search index at 20,000 products.

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use convcommerce::commerce::products::model::{ProductFilter, ProductStatus};
use convcommerce::commerce::products::store::list_statement;
use convcommerce::extract::PageRequest;

use crate::helpers::*;

#[tokio::test]
async fn members_create_read_change_and_delete_products() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let created = app
        .post("/api/v1/products")
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({"name": "  Tee ", "price_cents": 8990, "currency": "brl", "sku": "TEE-1"}))
        .send()
        .await
        .expect(201);
    let p = &created.body;
    assert_eq!(p["name"], "Tee");
    assert_eq!(p["currency"], "BRL");
    assert_eq!(p["status"], "draft", "products start as drafts");
    assert_eq!(p["stock"], 0);
    assert_eq!(p["media_ids"], json!([]));
    let path = format!("/api/v1/products/{}", p["id"].as_str().unwrap());

    let changed = app
        .patch(&path)
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({"price_cents": 7990, "status": "active", "description": "Organic"}))
        .send()
        .await
        .expect(200);
    assert_eq!(changed.body["price_cents"], 7990);
    assert_eq!(changed.body["status"], "active");
    assert_eq!(changed.body["sku"], "TEE-1", "fields not sent are kept");
    let cleared = app
        .patch(&path)
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({"description": null, "sku": null}))
        .send()
        .await
        .expect(200);
    assert!(cleared.body["description"].is_null() && cleared.body["sku"].is_null());
    assert_eq!(cleared.body["price_cents"], 7990);

    let read = app
        .get(&path)
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    assert_eq!(read.body["id"], p["id"]);
    app.delete(&path)
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(204);
    app.get(&path)
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.delete(&path)
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn invalid_products_name_their_fields_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let bad = app
        .post("/api/v1/products")
        .owner_of(&tenant)
        .json(
            &json!({"name": "", "price_cents": 0, "currency": "XYZ", "sku": "has space",
                      "stock": -1, "media_ids": [Uuid::nil(), Uuid::nil()]}),
        )
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&bad),
        [
            "name",
            "price_cents",
            "currency",
            "sku",
            "stock",
            "media_ids[1]"
        ]
    );
    let long = app
        .post("/api/v1/products")
        .owner_of(&tenant)
        .json(&json!({"name": "x".repeat(201), "price_cents": -5, "currency": "USD"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&long), ["name", "price_cents"]);
    for (body, field) in [
        (
            json!({"name": "a", "price_cents": 1.5, "currency": "USD"}),
            "price_cents",
        ),
        (
            json!({"name": "a", "price_cents": 1, "currency": "USD", "status": "sold"}),
            "status",
        ),
        (
            json!({"name": "a", "price_cents": 1, "currency": "USD", "tenant_id": Uuid::nil()}),
            "tenant_id",
        ),
    ] {
        let r = app
            .post("/api/v1/products")
            .owner_of(&tenant)
            .json(&body)
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&r), [field], "{body}");
    }

    let product = app.product(&tenant, json!({"name": "Kept"})).await;
    let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let r = app
        .patch(&path)
        .owner_of(&tenant)
        .json(&json!({"name": " ", "price_cents": 100, "currency": "usd1"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["name", "currency"]);
    // Stock is bounded on a change as on a create, also beyond what a 32-bit integer holds.
    for stock in [json!(1_000_000_001), json!(3_000_000_000_i64), json!(-1)] {
        let r = app
            .patch(&path)
            .owner_of(&tenant)
            .json(&json!({"stock": stock, "price_cents": 2000}))
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&r), ["stock"], "{stock}");
    }
    app.patch(&path)
        .owner_of(&tenant)
        .json(&json!({"stock": 1_000_000_000}))
        .send()
        .await
        .expect(200);
    let list = app
        .get("/api/v1/products")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["name"], "Kept");
    assert_eq!(
        list.body["items"][0]["price_cents"], 1000,
        "the failed PATCHes changed nothing"
    );
    assert_eq!(list.body["items"][0]["stock"], 1_000_000_000);
}

#[tokio::test]
async fn one_sku_per_tenant_even_under_concurrency() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.tenant().await, app.tenant().await);
    let create = |sku: &str, name: String| {
        app.post("/api/v1/products")
            .owner_of(&tenant)
            .json(&json!({"name": name, "price_cents": 100, "currency": "USD", "sku": sku}))
            .send()
    };
    let results = join_all((0..8).map(|i| create("RACE-1", format!("racer {i}")))).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let taken = results
        .iter()
        .filter(|r| r.status == 409 && r.code() == "sku_taken")
        .count();
    assert_eq!((created, taken), (1, 7));

    // Another tenant may use the same sku.
    app.product(&other, json!({"sku": "RACE-1"})).await;
    // A change to a taken sku is refused too.
    let second = app.product(&tenant, json!({"sku": "RACE-2"})).await;
    app.patch(&format!(
        "/api/v1/products/{}",
        second["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .json(&json!({"sku": "RACE-1"}))
    .send()
    .await
    .expect_problem(409, "sku_taken");
}

async fn list(app: &TestApp, tenant: &TestTenant, query: &str) -> Vec<String> {
    let r = app
        .get(&format!("/api/v1/products{query}"))
        .owner_of(tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    ids(&r)
}

#[tokio::test]
async fn products_filter_by_text_status_and_price_and_page_newest_first() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let mut made: Vec<Value> = vec![];
    for (name, sku, price, status) in [
        ("Blue Tee", "TEE-BLU", 1000, "active"),
        ("Red Tee", "TEE-RED", 2000, "draft"),
        ("Blue Mug", "MUG-BLU", 3000, "active"),
        ("50% off_sale", "SALE-1", 4000, "archived"),
    ] {
        made.push(
            app.product(
                &tenant,
                json!({"name": name, "sku": sku, "price_cents": price, "status": status}),
            )
            .await,
        );
    }
    let id = |i: usize| made[i]["id"].as_str().unwrap().to_string();
    assert_eq!(list(&app, &tenant, "").await, [id(3), id(2), id(1), id(0)]);
    assert_eq!(list(&app, &tenant, "?q=blue").await, [id(2), id(0)]);
    assert_eq!(
        list(&app, &tenant, "?q=tee-r").await,
        [id(1)],
        "sku matches"
    );
    assert_eq!(list(&app, &tenant, "?q=%25").await, [id(3)], "% is literal");
    assert_eq!(list(&app, &tenant, "?q=f_s").await, [id(3)], "_ is literal");
    assert!(list(&app, &tenant, "?q=f%25s").await.is_empty());
    assert_eq!(list(&app, &tenant, "?status=active").await, [id(2), id(0)]);
    assert_eq!(
        list(&app, &tenant, "?min_price=2000&max_price=3000").await,
        [id(2), id(1)]
    );
    assert_eq!(
        list(&app, &tenant, "?q=tee&status=active&max_price=1000").await,
        [id(0)]
    );

    let first = app
        .get("/api/v1/products?limit=3")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&first), [id(3), id(2), id(1)]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .get(&format!("/api/v1/products?limit=3&cursor={cursor}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&second), [id(0)]);
    assert!(second.body["next_cursor"].is_null());

    for (query, problem) in [
        ("?cursor=nope", (400, "invalid_cursor")),
        ("?limit=0", (422, "validation_failed")),
        ("?min_price=-1", (422, "validation_failed")),
        ("?min_price=10&max_price=5", (422, "validation_failed")),
    ] {
        app.get(&format!("/api/v1/products{query}"))
            .owner_of(&tenant)
            .send()
            .await
            .expect_problem(problem.0, problem.1);
    }
}

#[tokio::test]
async fn another_tenants_product_is_not_found() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let theirs = app
        .product(&b, json!({"name": "Theirs", "sku": "B-1"}))
        .await;
    let path = format!("/api/v1/products/{}", theirs["id"].as_str().unwrap());
    app.get(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.patch(&path)
        .owner_of(&a)
        .json(&json!({"name": "Mine now"}))
        .send()
        .await
        .expect_problem(404, "not_found");
    app.delete(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(list(&app, &a, "?q=Theirs").await.is_empty());
    let still = app.get(&path).owner_of(&b).send().await.expect(200);
    assert_eq!(still.body["name"], "Theirs");
}

/// The product search's plans (see [`search_plans`]).
async fn product_search_plans(app_url: &str, tenant: Uuid, q: &str) -> [String; 2] {
    let filter = ProductFilter {
        q: Some(q.into()),
        status: Some(ProductStatus::Active),
        min_price: None,
        max_price: None,
        page: PageRequest {
            limit: 20,
            after: None,
        },
    };
    let statement = list_statement(tenant, &filter);
    let literals = format!(
        "'{tenant}', '{q}', '%{q}%', 'active', {}",
        filter.page.limit + 1
    );
    search_plans(app_url, tenant, &statement, &literals).await
}

#[tokio::test]
async fn product_search_uses_the_trigram_index_at_twenty_thousand_products() {
    let db = private_database().await;
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let tenant = app.tenant().await;
    let neighbour = app.tenant().await;
    for t in [&tenant, &neighbour] {
        app.set_limits(t, json!({"max_products": 100_000})).await;
    }
    let owner = connect(&db.owner_url).await;
    // Seeded as the owner with the tenant set (row-level security applies to it too).
    for (t, count) in [(tenant.id, 20_000), (neighbour.id, 1_000)] {
        owner
            .batch_execute(&format!(
                "BEGIN;
                 SELECT set_config('my.tenant_id', '{t}', true);
                 INSERT INTO products (tenant_id, id, name, price_cents, currency, sku, status)
                 SELECT '{t}', gen_random_uuid(), 'P' || i, 100 + i, 'USD', NULL, 'active'
                 FROM generate_series(1, {count}) AS i;
                 COMMIT;"
            ))
            .await
            .unwrap();
    }
    app.product(&tenant, json!({"name": "Ipê print tee", "sku": "IPE-M"}))
        .await;
    owner.batch_execute("ANALYZE products").await.unwrap();

    for plan in product_search_plans(&db.app_url, tenant.id, "ipê print").await {
        assert!(plan.contains("product_search_terms_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    // Over HTTP, the same search answers with the product.
    let found = list(&app, &tenant, "?q=ip%C3%AA%20print&status=active").await;
    assert_eq!(found.len(), 1);

    app.stop().await;
    drop(owner);
    drop_database(&db).await;
}

#[tokio::test]
async fn a_bulk_import_of_500_products_may_pass_the_one_mib_of_other_bodies() {
    use convcommerce::commerce::products::model::BULK_BODY_LIMIT;

    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    // 500 products with 1,500-character descriptions of two-byte letters: about 1.5 MB.
    let description = "é".repeat(1500);
    let products: Vec<Value> = (0..500)
        .map(|i| {
            json!({"name": format!("Long {i}"), "description": description,
                   "price_cents": 100 + i, "currency": "BRL", "sku": format!("LONG-{i}")})
        })
        .collect();
    let body = serde_json::to_vec(&json!({"products": products})).unwrap();
    assert!(body.len() > 1024 * 1024, "{}", body.len());
    let created = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .body("application/json", body)
        .send()
        .await
        .expect(201);
    let items = created.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 500);
    assert_eq!(items[499]["sku"], "LONG-499");
    assert_eq!(items[499]["description"], json!(description));

    // The larger limit is the bulk import's alone: one product's body stays within 1 MiB.
    let padded = format!(
        r#"{{"name": "Padded", "price_cents": 100, "currency": "BRL"{}}}"#,
        " ".repeat(1024 * 1024)
    );
    app.post("/api/v1/products")
        .owner_of(&tenant)
        .body("application/json", padded)
        .send()
        .await
        .expect_problem(413, "payload_too_large");
    // And the bulk import has one: a byte over it is refused, nothing created.
    let over = format!(r#"{{"products": []{}}}"#, " ".repeat(BULK_BODY_LIMIT));
    app.post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .body("application/json", over)
        .send()
        .await
        .expect_problem(413, "payload_too_large");
    let used = app
        .get("/api/v1/tenant/quotas")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body["products"]["used"]
        .clone();
    assert_eq!(used, 500);
}
