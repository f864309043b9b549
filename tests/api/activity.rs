//! The activity log (SPEC §7): data changes in their own transaction, everything else through
//! the batch writer; append-only for the server's role; owners and admins read it.

use std::time::Duration;

use chrono::Utc;
use convcommerce::jobs::cleanup;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cleanup::job_parts;
use crate::helpers::*;

async fn activities(app: &TestApp, tenant: &TestTenant, query: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/activities{query}"))
        .owner_of(tenant)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Rows of `tenant`'s activities matching `condition`, counted past the API (as the migration
/// role, with the tenant set: the table forces row-level security on its owner too).
async fn stored(app: &TestApp, tenant: Uuid, condition: &str) -> i64 {
    let mut client = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut client, tenant).await;
    tx.query_one(
        &format!("SELECT count(*) FROM activities WHERE tenant_id = $1 AND {condition}"),
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

/// Polls until `query` finds at least one activity (the writer is about a second behind).
async fn eventually(app: &TestApp, tenant: &TestTenant, query: &str) -> Vec<Value> {
    for _ in 0..40 {
        let found = activities(app, tenant, query).await;
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no activity for {query} within 4 s");
}

#[tokio::test]
async fn a_product_create_is_logged_by_the_time_its_201_arrives() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let product = app.product(&tenant, json!({"sku": "LOG-1"})).await;
    let id = product["id"].as_str().unwrap();
    let found = activities(&app, &tenant, "?action=product.created").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let a = &found[0];
    assert_eq!(a["category"], "data");
    assert_eq!(a["actor_type"], "user");
    assert_eq!(a["resource_type"], "product");
    assert_eq!(a["resource_id"], id);
    assert_eq!(a["status"], 201);
    assert_eq!(a["method"], "POST");
    assert_eq!(a["route"], "/api/v1/products");
    assert_eq!(a["tenant_id"], tenant.id.to_string());
    assert!(a["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(a["ip"], "127.0.0.1");
    // The create wrote its activity, so it wrote no `request` row besides.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let requests = activities(&app, &tenant, "?action=request").await;
    assert!(
        requests.iter().all(|r| r["route"] != "/api/v1/products"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_failed_change_leaves_no_data_activity() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let product = app
        .product(&tenant, json!({"sku": "DUP-1", "stock": 1}))
        .await;
    app.post("/api/v1/products")
        .owner_of(&tenant)
        .json(&json!({"name": "Again", "price_cents": 100, "currency": "USD", "sku": "DUP-1"}))
        .send()
        .await
        .expect_problem(409, "sku_taken");
    app.post("/api/v1/orders")
        .owner_of(&tenant)
        .json(&json!({"channel": "whatsapp",
                      "customer": {"name": "Ana", "phone": "+15550001111"},
                      "items": [{"product_id": product["id"], "quantity": 5}]}))
        .send()
        .await
        .expect_problem(409, "insufficient_stock");
    assert_eq!(activities(&app, &tenant, "?category=data").await.len(), 1);
    // The failures are still requests, written by the batch writer with their status.
    let failed = eventually(&app, &tenant, "?status=409").await;
    assert!(failed.iter().all(|a| a["action"] == "request"));
}

/// The one data activity of `action` on `resource_id`, asserted to exist by the time the
/// change's response arrived.
async fn one_change(app: &TestApp, tenant: &TestTenant, action: &str, resource_id: &str) -> Value {
    let found = activities(
        app,
        tenant,
        &format!("?action={action}&resource_id={resource_id}"),
    )
    .await;
    assert_eq!(found.len(), 1, "{action} on {resource_id}: {found:?}");
    assert_eq!(found[0]["category"], "data");
    found[0].clone()
}

#[tokio::test]
async fn every_data_change_is_logged_in_its_own_transaction() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let owner = |call: Call| call.owner_of(&tenant);

    // Members: added, changed (the role's from and to), a refused change, removed.
    let user = owner(app.post("/api/v1/users"))
        .json(&json!({"external_id": "act-staff", "email": "staff@act.example", "role": "staff"}))
        .send()
        .await
        .expect(201)
        .body;
    let user_id = user["id"].as_str().unwrap();
    let created = one_change(&app, &tenant, "user.created", user_id).await;
    assert_eq!(
        (
            created["resource_type"].as_str(),
            created["status"].as_i64()
        ),
        (Some("user"), Some(201))
    );
    owner(app.patch(&format!("/api/v1/users/{user_id}")))
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect(200);
    let updated = one_change(&app, &tenant, "user.updated", user_id).await;
    assert_eq!(
        updated["details"],
        json!({"changed": ["role"], "from": "staff", "to": "admin"})
    );
    owner(app.patch(&format!("/api/v1/users/{user_id}")))
        .json(&json!({"email": format!("{}@test.example", tenant.owner)}))
        .send()
        .await
        .expect_problem(409, "email_taken");
    owner(app.delete(&format!("/api/v1/users/{user_id}")))
        .send()
        .await
        .expect(204);
    one_change(&app, &tenant, "user.deleted", user_id).await;
    assert_eq!(stored(&app, tenant.id, "action = 'user.updated'").await, 1);

    // The one-per-tenant documents: their resource is the tenant.
    owner(app.put("/api/v1/seller-profile"))
        .json(&json!({"store_name": "Act", "slug": "act-store"}))
        .send()
        .await
        .expect(200);
    one_change(
        &app,
        &tenant,
        "seller_profile.updated",
        &tenant.id.to_string(),
    )
    .await;
    owner(app.put("/api/v1/ai-config"))
        .json(
            &json!({"bot_name": "Ana", "style_tone": "friendly", "auto_reply_enabled": false,
                      "languages": ["en"], "system_prompt": "Be brief."}),
        )
        .send()
        .await
        .expect(200);
    one_change(&app, &tenant, "ai_config.updated", &tenant.id.to_string()).await;

    // A message, with its thread in the details; one naming another tenant's order is refused.
    let message = owner(app.post("/api/v1/conversations/messages"))
        .json(
            &json!({"customer_handle": "+15550002222", "channel": "whatsapp",
                      "sender_type": "customer", "message": "Hi"}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let posted = one_change(
        &app,
        &tenant,
        "conversation.message_posted",
        message["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(posted["details"]["thread_id"], message["thread_id"]);
    assert_eq!(posted["status"], 201);
    owner(app.post("/api/v1/conversations/messages"))
        .json(
            &json!({"customer_handle": "+15550002222", "channel": "whatsapp",
                      "sender_type": "customer", "message": "Hi", "order_id": Uuid::now_v7()}),
        )
        .send()
        .await
        .expect_problem(404, "not_found");

    // Media: uploaded and deleted.
    let media = crate::media::upload(
        &app,
        &tenant,
        crate::media::file(crate::media::png(64), "a.png", "image/png"),
    )
    .await
    .expect(201)
    .body;
    let media_id = media["id"].as_str().unwrap();
    let uploaded = one_change(&app, &tenant, "media.uploaded", media_id).await;
    assert_eq!(uploaded["details"]["size_bytes"], media["size_bytes"]);
    owner(app.delete(&format!("/api/v1/media/{media_id}")))
        .send()
        .await
        .expect(204);
    one_change(&app, &tenant, "media.deleted", media_id).await;

    // A rating: refused before delivery, then recorded once.
    let product = app
        .product(&tenant, json!({"sku": "ACT-R", "stock": 5}))
        .await;
    let order = owner(app.post("/api/v1/orders"))
        .json(
            &json!({"channel": "web", "customer": {"name": "Ana", "phone": "+15550001111"},
                      "items": [{"product_id": product["id"], "quantity": 1}]}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let order_id = order["id"].as_str().unwrap();
    let rate =
        || owner(app.post(&format!("/api/v1/orders/{order_id}/rating"))).json(&json!({"stars": 4}));
    rate().send().await.expect_problem(409, "invalid_state");
    for status in ["confirmed", "processing", "shipped", "delivered"] {
        owner(app.post(&format!("/api/v1/orders/{order_id}/transitions")))
            .json(&json!({"status": status}))
            .send()
            .await
            .expect(200);
    }
    rate().send().await.expect(201);
    let rated = one_change(&app, &tenant, "order.rated", order_id).await;
    assert_eq!(rated["details"], json!({"stars": 4}));

    // The refused changes left no data activity: exactly one per change above.
    assert_eq!(
        stored(
            &app,
            tenant.id,
            "category = 'data' AND action NOT LIKE 'product.%' AND action NOT LIKE 'order.%'"
        )
        .await,
        8
    );
}

#[tokio::test]
async fn rule_and_alert_changes_are_logged_in_their_own_transaction() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let owner = |call: Call| call.owner_of(&tenant);
    const RULES: &str = "/api/v1/monitoring/rules";

    // A rule: created, changed, disabled, enabled, deleted; each its one data activity.
    let rule = owner(app.post(RULES))
        .json(
            &json!({"name": "Big orders", "severity": "low", "cooldown_seconds": 60,
                      "condition": {"field": "action", "op": "eq", "value": "product.created"}}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let id = rule["id"].as_str().unwrap();
    let created = one_change(&app, &tenant, "rule.created", id).await;
    assert_eq!(
        (
            &created["resource_type"],
            &created["status"],
            &created["method"]
        ),
        (&json!("rule"), &json!(201), &json!("POST"))
    );
    assert_eq!(
        created["details"],
        json!({"name": "Big orders", "severity": "low", "enabled": true})
    );
    let mut body = rule.clone();
    for field in ["id", "builtin", "key", "created_at", "updated_at"] {
        body.as_object_mut().unwrap().remove(field);
    }
    body["severity"] = json!("high");
    body["name"] = json!("Any product");
    owner(app.put(&format!("{RULES}/{id}")))
        .json(&body)
        .send()
        .await
        .expect(200);
    let updated = one_change(&app, &tenant, "rule.updated", id).await;
    assert_eq!(updated["details"]["changed"], json!(["name", "severity"]));
    body["enabled"] = json!(false);
    owner(app.put(&format!("{RULES}/{id}")))
        .json(&body)
        .send()
        .await
        .expect(200);
    let disabled = one_change(&app, &tenant, "rule.disabled", id).await;
    assert_eq!(disabled["details"]["changed"], json!(["enabled"]));
    body["enabled"] = json!(true);
    owner(app.put(&format!("{RULES}/{id}")))
        .json(&body)
        .send()
        .await
        .expect(200);
    one_change(&app, &tenant, "rule.enabled", id).await;

    // An alert of that rule: acknowledged, resolved.
    app.product(&tenant, json!({"sku": "ALERT-1"})).await;
    let mut alert = Value::Null;
    for _ in 0..50 {
        let page = owner(app.get("/api/v1/monitoring/alerts"))
            .send()
            .await
            .expect(200)
            .body;
        if let Some(found) = page["items"].as_array().unwrap().first() {
            alert = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert_id = alert["id"].as_str().expect("the rule fired");
    owner(app.post(&format!("/api/v1/monitoring/alerts/{alert_id}/acknowledge")))
        .send()
        .await
        .expect(200);
    let acknowledged = one_change(&app, &tenant, "alert.acknowledged", alert_id).await;
    assert_eq!(
        (&acknowledged["resource_type"], &acknowledged["details"]),
        (
            &json!("alert"),
            &json!({"rule_id": id, "severity": "high", "from": "firing", "to": "acknowledged"})
        )
    );
    owner(app.post(&format!("/api/v1/monitoring/alerts/{alert_id}/resolve")))
        .send()
        .await
        .expect(200);
    let resolved = one_change(&app, &tenant, "alert.resolved", alert_id).await;
    assert_eq!(resolved["details"]["from"], "acknowledged");
    owner(app.delete(&format!("{RULES}/{id}")))
        .send()
        .await
        .expect(204);
    let deleted = one_change(&app, &tenant, "rule.deleted", id).await;
    assert_eq!(
        (&deleted["status"], &deleted["details"]),
        (&json!(204), &json!({"name": "Any product"}))
    );
    // Firing is no data change: the alert wrote no activity of its own.
    assert_eq!(stored(&app, tenant.id, "action LIKE 'alert.%'").await, 2);

    // Built-ins change too, and say which.
    let builtin = app
        .get(&format!("{RULES}?limit=100"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "destructive_delete")
        .unwrap()
        .clone();
    let builtin_id = builtin["id"].as_str().unwrap();
    let mut body = builtin.clone();
    for field in ["id", "builtin", "key", "created_at", "updated_at"] {
        body.as_object_mut().unwrap().remove(field);
    }
    body["enabled"] = json!(false);
    owner(app.put(&format!("{RULES}/{builtin_id}")))
        .json(&body)
        .send()
        .await
        .expect(200);
    let off = one_change(&app, &tenant, "rule.disabled", builtin_id).await;
    assert_eq!(off["details"]["key"], "destructive_delete");

    // Refused changes write none: an invalid rule, a built-in's fixed field, a built-in's
    // delete, a staff member's change, a resolved alert resolved again, an unknown alert.
    owner(app.post(RULES))
        .json(&json!({"name": "Bad", "severity": "low",
                      "condition": {"field": "action", "op": "nope", "value": 1}}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    body["name"] = json!("Renamed");
    owner(app.put(&format!("{RULES}/{builtin_id}")))
        .json(&body)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    owner(app.delete(&format!("{RULES}/{builtin_id}")))
        .send()
        .await
        .expect_problem(409, "invalid_state");
    let (staff, _) = app.member(&tenant, "staff").await;
    app.delete(&format!("{RULES}/{builtin_id}"))
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(403, "forbidden");
    owner(app.post(&format!("/api/v1/monitoring/alerts/{alert_id}/resolve")))
        .send()
        .await
        .expect_problem(409, "invalid_state");
    owner(app.post(&format!(
        "/api/v1/monitoring/alerts/{}/acknowledge",
        Uuid::now_v7()
    )))
    .send()
    .await
    .expect_problem(404, "not_found");
    assert_eq!(
        stored(
            &app,
            tenant.id,
            "category = 'data' AND (action LIKE 'rule.%' OR action LIKE 'alert.%')"
        )
        .await,
        8
    );
}

#[tokio::test]
async fn reads_reach_the_log_through_the_writer() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.get("/api/v1/products")
        .owner_of(&tenant)
        .header("user-agent", "activity-test/1")
        .header("x-request-id", "read-123")
        .send()
        .await
        .expect(200);
    let found = eventually(&app, &tenant, "?action=request").await;
    let read = found
        .iter()
        .find(|a| a["request_id"] == "read-123")
        .expect("the read's activity");
    assert_eq!(read["category"], "request");
    assert_eq!(read["route"], "/api/v1/products");
    assert_eq!(read["status"], 200);
    assert_eq!(read["user_agent"], "activity-test/1");
    assert!(read["latency_ms"].as_i64().is_some());
}

#[tokio::test]
async fn a_401_is_logged_for_an_existing_tenant_only() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let stranger = Uuid::now_v7();
    for id in [tenant.id, stranger] {
        app.get("/api/v1/products")
            .token("forged.token.value")
            .tenant(id)
            .send()
            .await
            .expect_problem(401, "unauthorized");
    }
    let failed = eventually(&app, &tenant, "?category=auth").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["action"], "auth.failed");
    assert_eq!(failed[0]["status"], 401);
    assert_eq!(failed[0]["actor"], Value::Null);
    assert_eq!(stored(&app, stranger, "true").await, 0);
}

#[tokio::test]
async fn a_rate_limited_request_is_logged_as_security() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"requests_per_minute": 2}))
        .await;
    let mut refused = false;
    for _ in 0..4 {
        let r = app.get("/api/v1/tenant").owner_of(&tenant).send().await;
        refused |= r.status == 429;
    }
    assert!(refused);
    // The owner is limited too, so the log is read past the API.
    for _ in 0..40 {
        if stored(&app, tenant.id, "category = 'security'").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored(&app, tenant.id, "category = 'security'").await > 0);
    assert_eq!(
        stored(
            &app,
            tenant.id,
            "category = 'security' AND NOT (action = 'rate_limited' AND status = 429)"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_server_role_cannot_update_or_delete_activities() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.product(&tenant, json!({})).await;
    let mut client = connect(&app.db.app_url).await;
    for sql in [
        "UPDATE activities SET action = 'forged' WHERE tenant_id = $1",
        "DELETE FROM activities WHERE tenant_id = $1",
    ] {
        let tx = tenant_tx(&mut client, tenant.id).await;
        let err = tx.execute(sql, &[&tenant.id]).await.unwrap_err();
        assert_eq!(
            err.as_db_error().unwrap().code().code(),
            "42501",
            "{sql}: {err}"
        );
    }
    assert_eq!(activities(&app, &tenant, "?category=data").await.len(), 1);
}

#[tokio::test]
async fn tenants_see_only_their_own_activities() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let product = app.product(&b, json!({})).await;
    let b_actor = activities(&app, &b, "?category=data").await[0]["actor"].clone();
    assert!(activities(&app, &a, "?category=data").await.is_empty());
    for query in [
        format!("?actor={}", b_actor.as_str().unwrap()),
        format!("?resource_id={}", product["id"].as_str().unwrap()),
    ] {
        assert!(activities(&app, &a, &query).await.is_empty(), "{query}");
    }
    // B's own log answers the same filters.
    assert_eq!(
        activities(
            &app,
            &b,
            &format!("?resource_id={}", product["id"].as_str().unwrap())
        )
        .await
        .len(),
        1
    );
}

#[tokio::test]
async fn staff_may_not_read_the_log() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    app.get("/api/v1/activities")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let (admin, _) = app.member(&tenant, "admin").await;
    app.get("/api/v1/activities")
        .user(&admin)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn pages_are_newest_first_and_stable() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    for i in 0..5 {
        app.product(&tenant, json!({"name": format!("P{i}")})).await;
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?category=data&limit=2&cursor={c}"),
            None => "?category=data&limit=2".to_string(),
        };
        let page = app
            .get(&format!("/api/v1/activities{query}"))
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
        // A new change after the first page does not shift the pages that follow.
        if cursor.is_none() {
            app.product(&tenant, json!({"name": "late"})).await;
        }
        seen.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
}

#[tokio::test]
async fn status_resource_type_since_and_until_filter() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let stamp = |at: chrono::DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let before = app.product(&tenant, json!({"sku": "FILTER-A"})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = app.product(&tenant, json!({"sku": "FILTER-B"})).await;
    let (_, user) = app.member(&tenant, "staff").await;
    app.get(&format!("/api/v1/products/{}", Uuid::now_v7()))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");

    // status: the 404 (through the writer), and only it.
    let missing = eventually(&app, &tenant, "?status=404").await;
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        (&missing[0]["action"], &missing[0]["route"]),
        (&json!("request"), &json!("/api/v1/products/{id}"))
    );
    let created = activities(&app, &tenant, "?status=201&category=data").await;
    assert_eq!(created.len(), 3, "two products and a member: {created:?}");
    // resource_type.
    let users = activities(&app, &tenant, "?resource_type=user").await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["resource_id"], json!(user));
    assert_eq!(
        activities(&app, &tenant, "?resource_type=product")
            .await
            .len(),
        2
    );
    // since (inclusive) and until (exclusive) around the instant between the two creates.
    let since = activities(
        &app,
        &tenant,
        &format!("?action=product.created&since={}", stamp(middle)),
    )
    .await;
    assert_eq!(resources(&since), [after["id"].clone()]);
    let until = activities(
        &app,
        &tenant,
        &format!("?action=product.created&until={}", stamp(middle)),
    )
    .await;
    assert_eq!(resources(&until), [before["id"].clone()]);
    let both = activities(
        &app,
        &tenant,
        &format!(
            "?resource_type=product&since={}&until={}",
            stamp(middle),
            stamp(Utc::now() + chrono::Duration::minutes(1))
        ),
    )
    .await;
    assert_eq!(resources(&both), [after["id"].clone()]);
    let empty = activities(
        &app,
        &tenant,
        &format!(
            "?since={}",
            stamp(Utc::now() + chrono::Duration::minutes(1))
        ),
    )
    .await;
    assert!(empty.is_empty(), "{empty:?}");
}

/// The `resource_id`s of a page of activities.
fn resources(page: &[Value]) -> Vec<Value> {
    page.iter().map(|a| a["resource_id"].clone()).collect()
}

#[tokio::test]
async fn bad_filters_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let bad = app
        .get("/api/v1/activities?category=nope&actor=x&resource_id=1&status=700&since=yesterday&limit=0")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    let mut fields = error_fields(&bad);
    fields.sort();
    assert_eq!(
        fields,
        [
            "actor",
            "category",
            "limit",
            "resource_id",
            "since",
            "status"
        ]
    );
    app.get("/api/v1/activities?cursor=forged")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(400, "invalid_cursor");
}

#[tokio::test]
async fn shutdown_writes_what_the_writer_holds() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    for _ in 0..3 {
        app.get("/api/v1/tenant")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
    }
    let owner_url = app.db.owner_url.clone();
    app.stop().await;
    let mut client = connect(&owner_url).await;
    let tx = tenant_tx(&mut client, tenant.id).await;
    let rows: i64 = tx
        .query_one(
            "SELECT count(*) FROM activities WHERE tenant_id = $1 AND route = '/api/v1/tenant'",
            &[&tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "the writer flushed after the drain");
}

#[tokio::test]
async fn a_full_buffer_counts_the_drop() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("ACTIVITY_BUFFER".into(), "1".into());
    })
    .await;
    let tenant = app.tenant().await;
    let reads = (0..30).map(|_| app.get("/api/v1/tenant").owner_of(&tenant).send());
    futures_util::future::join_all(reads).await;
    assert!(app.metric("convcommerce_activity_dropped_total").await >= 1.0);
}

#[tokio::test]
async fn old_activities_are_purged_after_the_retention() {
    let app = TestApp::spawn_on(private_database().await, |_| {}).await;
    let (short, long) = (app.tenant().await, app.tenant().await);
    app.set_limits(&short, json!({"activity_retention_days": 1}))
        .await;
    app.product(&short, json!({})).await;
    app.product(&long, json!({})).await;
    let (db, store) = job_parts(&app);
    let report = cleanup::run_at(&db, &store, Utc::now() + chrono::Duration::days(2))
        .await
        .unwrap();
    assert!(report.activities_purged >= 1);
    assert!(activities(&app, &short, "?category=data").await.is_empty());
    assert_eq!(activities(&app, &long, "?category=data").await.len(), 1);
    let recent = cleanup::run_at(&db, &store, Utc::now()).await.unwrap();
    assert_eq!(recent.activities_purged, 0, "recent rows stay");
}

/// Notifications' data changes (the tenant's settings, a member's preferences, templates,
/// a send) each write their data activity in the change's transaction; refused ones none.
#[tokio::test]
async fn notification_changes_are_logged_in_their_own_transaction() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let owner = |call: Call| call.owner_of(&tenant);
    let base = "/api/v1/notifications";

    let channels =
        json!({"urgent": ["in_app", "email"], "high": ["in_app"], "medium": [], "low": []});
    owner(app.put(&format!("{base}/settings")))
        .json(&json!({"channels": channels}))
        .send()
        .await
        .expect(200);
    let settings = one_change(
        &app,
        &tenant,
        "notification_settings.updated",
        &tenant.id.to_string(),
    )
    .await;
    assert_eq!(settings["details"]["channels"], channels);
    owner(app.put(&format!("{base}/settings")))
        .json(&json!({"channels": {"urgent": ["sms", "sms"], "high": [], "medium": [], "low": []}}))
        .send()
        .await
        .expect_problem(422, "validation_failed");

    owner(app.put(&format!("{base}/preferences")))
        .json(&json!({"opt_outs": [{"channel": "sms"}], "quiet_hours": null, "locale": "pt_br"}))
        .send()
        .await
        .expect(200);
    let me = app.owner_id(&tenant).await.to_string();
    let preferences = one_change(&app, &tenant, "notification_preferences.updated", &me).await;
    assert_eq!(preferences["actor"], me.as_str());
    assert_eq!(preferences["details"]["locale"], "pt-BR");
    owner(app.put(&format!("{base}/preferences")))
        .json(&json!({"opt_outs": [], "quiet_hours": null, "locale": "pt-"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");

    let template = owner(app.post(&format!("{base}/templates")))
        .json(&json!({"key": "order.created", "channel": "sms", "locale": "pt", "body": "{{ title }}"}))
        .send()
        .await
        .expect(201)
        .body;
    let template_id = template["id"].as_str().unwrap();
    let created = one_change(&app, &tenant, "notification_template.created", template_id).await;
    assert_eq!(
        created["details"],
        json!({"key": "order.created", "channel": "sms", "locale": "pt"})
    );
    assert_eq!(created["status"], 201);
    owner(app.post(&format!("{base}/templates")))
        .json(&json!({"key": "order.created", "channel": "sms", "locale": "pt", "body": "x"}))
        .send()
        .await
        .expect_problem(409, "template_exists");
    owner(app.put(&format!("{base}/templates/{template_id}")))
        .json(&json!({"key": "order.created", "channel": "sms", "locale": "pt-BR", "body": "{{ body }}"}))
        .send()
        .await
        .expect(200);
    let updated = one_change(&app, &tenant, "notification_template.updated", template_id).await;
    assert_eq!(updated["details"]["locale"], "pt-BR");
    owner(app.delete(&format!("{base}/templates/{template_id}")))
        .send()
        .await
        .expect(204);
    one_change(&app, &tenant, "notification_template.deleted", template_id).await;
    owner(app.delete(&format!("{base}/templates/{template_id}")))
        .send()
        .await
        .expect_problem(404, "not_found");

    let sent = owner(app.post(base))
        .json(&json!({"title": "Hi", "body": "b", "priority": "high", "category": "ops"}))
        .send()
        .await
        .expect(201)
        .body;
    let first = sent["notification_ids"][0].as_str().unwrap();
    let logged = one_change(&app, &tenant, "notification.sent", first).await;
    assert_eq!(logged["status"], 201);
    assert_eq!(logged["resource_type"], "notification");
    assert_eq!(
        logged["details"],
        json!({"notification_ids": sent["notification_ids"], "priority": "high", "category": "ops"})
    );
    owner(app.post(base))
        .json(&json!({"title": "Hi", "body": "b", "priority": "high",
                      "recipients": {"user_ids": [Uuid::now_v7()]}}))
        .send()
        .await
        .expect_problem(422, "validation_failed");

    // Exactly one data activity per change above; the refused ones wrote none.
    assert_eq!(
        stored(
            &app,
            tenant.id,
            "category = 'data' AND action LIKE 'notification%'"
        )
        .await,
        6
    );
}
