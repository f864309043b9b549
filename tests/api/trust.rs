//! Progressive trust (SPEC §6): product caps with the quota, the admin override and its lock,
//! promotion, the grace period and demotion, business documents and their review, and the
//! trust document that explains it all.

use chrono::{Duration, Utc};
use convcommerce::clock::{Clock, ManualClock};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::*;

/// Sets `tenant`'s level as a platform admin; returns the trust document.
pub async fn set_level(app: &TestApp, tenant: &TestTenant, level: i64, locked: bool) -> Value {
    app.put(&format!("/api/v1/admin/tenants/{}/trust", tenant.id))
        .user(ADMIN)
        .json(&json!({"level": level, "reason": format!("test: level {level}"), "locked": locked}))
        .send()
        .await
        .expect(200)
        .body
}

/// Recomputes `tenant` now, as a platform admin; returns the trust document.
pub async fn recompute(app: &TestApp, tenant: &TestTenant) -> Value {
    app.post(&format!(
        "/api/v1/admin/tenants/{}/trust/recompute",
        tenant.id
    ))
    .user(ADMIN)
    .send()
    .await
    .expect(200)
    .body
}

/// An RFC 3339 time of an answer.
fn instant(value: &Value) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The tenant's trust activities, oldest first.
pub async fn trust_activities(app: &TestApp, tenant: &TestTenant) -> Vec<Value> {
    let mut items = app
        .get("/api/v1/activities?category=trust&limit=100")
        .owner_of(tenant)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .clone();
    items.reverse();
    items
}

fn product_body(i: usize) -> Value {
    json!({"name": format!("Item {i}"), "price_cents": 100 + i, "currency": "USD"})
}

async fn product_count(app: &TestApp, tenant: &TestTenant) -> i64 {
    app.get("/api/v1/tenant/quotas")
        .owner_of(tenant)
        .send()
        .await
        .expect(200)
        .body["products"]["used"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn product_caps_follow_the_level_and_races_admit_exactly_the_room_left() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.new_tenant().await;
    let creates = (0..20).map(|i| {
        app.post("/api/v1/products")
            .owner_of(&tenant)
            .json(&product_body(i))
            .send()
    });
    let answers = join_all(creates).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 5, "level 0 holds five products");
    let refused = answers.iter().find(|r| r.status == 403).unwrap();
    assert_eq!(refused.code(), "quota_exceeded");
    assert_eq!(
        (
            &refused.body["quota"],
            &refused.body["used"],
            &refused.body["limit"],
            &refused.body["reason"]
        ),
        (
            &json!("products"),
            &json!(5),
            &json!(5),
            &json!("trust_level")
        )
    );
    let quotas = app
        .get("/api/v1/tenant/quotas")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(quotas.body["products"], json!({"used": 5, "limit": 5}));

    // Level 1 raises the cap to 50; below the quota it is still the trust level that binds.
    let doc = set_level(&app, &tenant, 1, true).await;
    assert_eq!(doc["product_cap"], 50);
    let quotas = app
        .get("/api/v1/tenant/quotas")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(quotas.body["products"]["limit"], 50);
    // The quota is the smaller bound: `reason: quota`.
    app.set_limits(&tenant, json!({"max_products": 6})).await;
    app.product(&tenant, json!({})).await;
    let over = app
        .post("/api/v1/products")
        .owner_of(&tenant)
        .json(&product_body(99))
        .send()
        .await
        .expect_problem(403, "quota_exceeded");
    assert_eq!(over.body["reason"], "quota");
    assert_eq!(over.body["limit"], 6);

    // A bulk import is one create of N: two racing batches of two with room for three admit
    // one batch, all or nothing.
    set_level(&app, &tenant, 2, true).await;
    app.set_limits(&tenant, json!({"max_products": 9})).await;
    let batch = |from: usize| {
        app.post("/api/v1/products/bulk")
            .owner_of(&tenant)
            .json(&json!({"products": [product_body(from), product_body(from + 1)]}))
            .send()
    };
    let (a, b) = tokio::join!(batch(100), batch(200));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 403], "{} {}", a.body, b.body);
    let refused = if a.status == 403 { &a } else { &b };
    assert_eq!(refused.body["used"], 8, "{}", refused.body);
    assert_eq!(refused.body["reason"], "quota");
    assert_eq!(product_count(&app, &tenant).await, 8);
}

#[tokio::test]
async fn a_bulk_import_is_all_or_nothing_with_item_field_paths() {
    let app = TestApp::spawn().await;
    let tenant = app.new_tenant().await;
    set_level(&app, &tenant, 2, true).await;
    let mut products: Vec<Value> = (0..5).map(product_body).collect();
    products[2]["price_cents"] = json!(0);
    products[4]["currency"] = json!("XYZ");
    let refused = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&json!({"products": products}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&refused),
        ["products[2].price_cents", "products[4].currency"]
    );
    // A type error names its item too; a sku twice in one batch names the second.
    let mut typed: Vec<Value> = (0..3).map(product_body).collect();
    typed[1]["stock"] = json!("many");
    let refused = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&json!({"products": typed}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&refused), ["products[1].stock"]);
    let mut twice: Vec<Value> = (0..3).map(product_body).collect();
    twice[0]["sku"] = json!("SAME");
    twice[2]["sku"] = json!("SAME");
    let refused = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&json!({"products": twice}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&refused), ["products[2].sku"]);
    for count in [0, 501] {
        let body = json!({"products": (0..count).map(product_body).collect::<Vec<_>>()});
        let refused = app
            .post("/api/v1/products/bulk")
            .owner_of(&tenant)
            .json(&body)
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&refused), ["products"], "{count}");
    }
    // An existing sku and another tenant's media: nothing is created either.
    let other = app.tenant().await;
    let theirs = crate::media::upload(
        &app,
        &other,
        crate::media::file(crate::media::png(8), "x.png", "image/png"),
    )
    .await
    .expect(201);
    app.product(&tenant, json!({"sku": "TAKEN"})).await;
    let mut clash: Vec<Value> = (0..3).map(product_body).collect();
    clash[1]["sku"] = json!("TAKEN");
    let refused = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&json!({"products": clash}))
        .send()
        .await
        .expect_problem(409, "sku_taken");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("products[1].sku")
    );
    let mut foreign: Vec<Value> = (0..3).map(product_body).collect();
    foreign[2]["media_ids"] = json!([theirs.body["id"]]);
    let refused = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&json!({"products": foreign}))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("products[2].media_ids[0]")
    );
    assert_eq!(product_count(&app, &tenant).await, 1);

    // 500 at once, in the order sent, each with its activity.
    app.set_limits(&tenant, json!({"max_products": 501})).await;
    let body = json!({"products": (0..500).map(product_body).collect::<Vec<_>>()});
    let created = app
        .post("/api/v1/products/bulk")
        .owner_of(&tenant)
        .json(&body)
        .send()
        .await
        .expect(201);
    let items = created.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 500);
    assert_eq!(items[0]["name"], "Item 0");
    assert_eq!(items[499]["name"], "Item 499");
    assert_eq!(product_count(&app, &tenant).await, 501);
    let logged = app
        .get("/api/v1/activities?action=product.created&limit=100")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(logged.body["items"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn a_locked_level_holds_and_an_unlocked_one_is_demoted_after_the_grace_period() {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(database().await, Some(clock.clone()), |_| {}).await;
    let tenant = app.new_tenant().await;
    let doc = set_level(&app, &tenant, 2, true).await;
    assert_eq!(
        (doc["level"].as_i64(), doc["locked"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(doc["level_name"], "trusted");
    assert_eq!(doc["reason"], "test: level 2");
    // Its requirements are not met, but the recompute leaves a locked level alone.
    clock.advance(Duration::days(30));
    let doc = recompute(&app, &tenant).await;
    assert_eq!(doc["level"], 2);
    assert!(doc["grace"].is_null());
    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["trust_level"], 2);

    // Unlocked, the unmet requirements start the grace period: still level 2, until it ends.
    set_level(&app, &tenant, 2, false).await;
    let doc = recompute(&app, &tenant).await;
    assert_eq!(doc["level"], 2);
    let grace = &doc["grace"];
    assert!(grace["ends_at"].is_string(), "{doc}");
    let unmet: Vec<&str> = grace["unmet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        unmet.contains(&"email_verified") && unmet.contains(&"registration_verified"),
        "{unmet:?}"
    );
    clock.advance(Duration::days(6));
    assert_eq!(recompute(&app, &tenant).await["level"], 2);
    clock.advance(Duration::days(2));
    let doc = recompute(&app, &tenant).await;
    assert_eq!(doc["level"], 0, "{doc}");
    assert!(doc["grace"].is_null());
    assert!(
        doc["reason"]
            .as_str()
            .unwrap()
            .starts_with("Demoted after the grace period")
    );
    // The cache everywhere follows: the tenant record and the gates see level 0 at once.
    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["trust_level"], 0);

    let actions: Vec<(String, Value)> = trust_activities(&app, &tenant)
        .await
        .into_iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["details"].clone(),
            )
        })
        .collect();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "trust.level_changed",
            "trust.unlocked",
            "trust.grace_started",
            "trust.level_changed"
        ]
    );
    assert_eq!(actions[0].1["from"], 0);
    assert_eq!(actions[0].1["to"], 2);
    assert_eq!(actions[0].1["reason"], "test: level 2");
    assert_eq!(
        (&actions[3].1["from"], &actions[3].1["to"]),
        (&json!(2), &json!(0))
    );
    let activity = &trust_activities(&app, &tenant).await[0];
    assert_eq!(activity["category"], "trust");
    assert_eq!(activity["actor_type"], "system");

    // Overrides are for platform admins only, and validated.
    app.put(&format!("/api/v1/admin/tenants/{}/trust", tenant.id))
        .user(&tenant.owner)
        .json(&json!({"level": 3, "reason": "please"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let bad = app
        .put(&format!("/api/v1/admin/tenants/{}/trust", tenant.id))
        .user(ADMIN)
        .json(&json!({"level": 4, "reason": " "}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["level", "reason"]);
    app.post(&format!(
        "/api/v1/admin/tenants/{}/trust/recompute",
        uuid::Uuid::now_v7()
    ))
    .user(ADMIN)
    .send()
    .await
    .expect_problem(404, "not_found");
}

#[tokio::test]
async fn documents_are_reviewed_by_platform_admins_and_their_media_kept() {
    use convcommerce::db::Db;
    use convcommerce::jobs::cleanup;
    use convcommerce::storage::MediaStore;
    use secrecy::SecretString;

    use crate::media::{file, png, upload};

    let app = TestApp::spawn().await;
    let tenant = app.new_tenant().await;
    let tenant_created_at = app
        .get(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .send()
        .await
        .expect(200)
        .body["created_at"]
        .clone();
    let other = app.new_tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let scan = upload(&app, &tenant, file(png(64), "scan.png", "image/png"))
        .await
        .expect(201)
        .body["id"]
        .clone();
    let theirs = upload(&app, &other, file(png(64), "x.png", "image/png"))
        .await
        .expect(201)
        .body["id"]
        .clone();
    let submit = |media: Value| {
        json!({"kind": "registration", "media_ids": [media],
               "fields": {"registration_number": "12.345.678/0001-90"}})
    };
    let refused = app
        .post("/api/v1/trust/verifications/documents")
        .owner_of(&tenant)
        .json(&submit(theirs))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("media_ids[0]")
    );
    app.post("/api/v1/trust/verifications/documents")
        .user(&staff)
        .tenant(tenant.id)
        .json(&submit(scan.clone()))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let submitted = app
        .post("/api/v1/trust/verifications/documents")
        .owner_of(&tenant)
        .json(&submit(scan.clone()))
        .send()
        .await
        .expect(201);
    assert_eq!(submitted.body["status"], "pending");
    assert_eq!(submitted.body["kind"], "registration");
    // What the POST created is the submission: its time, not the tenant's creation.
    assert_eq!(submitted.body["created_at"], submitted.body["submitted_at"]);
    assert!(instant(&submitted.body["created_at"]) > instant(&tenant_created_at));
    assert_eq!(submitted.body["media_ids"], json!([scan]));
    assert_eq!(
        submitted.body["fields"]["registration_number"],
        "12.345.678/0001-90"
    );
    let id = submitted.body["id"].as_str().unwrap().to_string();
    app.post("/api/v1/trust/verifications/documents")
        .owner_of(&tenant)
        .json(&submit(scan.clone()))
        .send()
        .await
        .expect_problem(409, "invalid_state");

    // Every kind is listed, in a fixed order, the document pending.
    let list = app
        .get("/api/v1/trust/verifications")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    let kinds: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "email",
            "phone",
            "business_info",
            "store_setup",
            "registration",
            "tax_id",
            "address",
            "bank_account"
        ]
    );
    assert_eq!(list.body["items"][4]["status"], "pending");
    assert_eq!(list.body["items"][0]["status"], "unverified");
    assert!(list.body["next_cursor"].is_null());

    // The file stays for the reviewer: it cannot be deleted, and the cleanup keeps it.
    let media_path = format!("/api/v1/media/{}", scan.as_str().unwrap());
    app.delete(&media_path)
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(409, "media_in_use");
    let db = Db::connect(&SecretString::from(app.db.app_url.clone()), 2, 0).unwrap();
    let store = MediaStore::from_config(&app.config).unwrap();
    cleanup::run_at(&db, &store, Utc::now() + Duration::days(3))
        .await
        .unwrap();
    app.get(&media_path)
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);

    // The admins' queue, oldest first, with the tenant.
    let queue = app
        .get("/api/v1/admin/verifications?status=pending&limit=100")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    let queued = queue.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == json!(id))
        .expect("the submission is queued")
        .clone();
    assert_eq!(queued["tenant_id"], json!(tenant.id));
    assert_eq!(queued["media_ids"], json!([scan]));
    app.get("/api/v1/admin/verifications")
        .user(&tenant.owner)
        .send()
        .await
        .expect_problem(403, "forbidden");

    let decide = |verb: &str, body: Value| {
        app.post(&format!("/api/v1/admin/verifications/{id}/{verb}"))
            .user(ADMIN)
            .json(&body)
            .send()
    };
    let bad = decide("reject", json!({}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["reason"]);
    let decide_bare = |verb: &str| {
        app.post(&format!("/api/v1/admin/verifications/{id}/{verb}"))
            .user(ADMIN)
            .send()
    };
    let bare = decide_bare("reject")
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bare), ["reason"]);
    // A body that is not JSON is still refused, and changes nothing.
    app.post(&format!("/api/v1/admin/verifications/{id}/approve"))
        .user(ADMIN)
        .body("text/plain", "yes")
        .send()
        .await
        .expect_problem(415, "unsupported_media_type");
    let (co_owner, _) = app.member(&tenant, "owner").await;
    let (manager, _) = app.member(&tenant, "admin").await;
    let rejected = decide("reject", json!({"reason": "The scan is unreadable."}))
        .await
        .expect(200);
    assert_eq!(rejected.body["status"], "rejected");
    assert_eq!(rejected.body["reason"], "The scan is unreadable.");
    // Every owner is told, with the reason; no one else.
    let told = |sub: String| {
        let (app, id) = (&app, json!(id));
        let tenant_id = tenant.id;
        async move {
            app.get("/api/v1/notifications?category=trust&limit=100")
                .user(&sub)
                .tenant(tenant_id)
                .send()
                .await
                .expect(200)
                .body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["metadata"]["verification_id"] == id)
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    for owner in [tenant.owner.clone(), co_owner] {
        let notices = told(owner).await;
        assert_eq!(notices.len(), 1, "{notices:?}");
        let notice = &notices[0];
        assert_eq!(notice["title"], "Your registration document was rejected");
        assert_eq!(notice["body"], "The scan is unreadable.");
        assert_eq!(notice["priority"], "high");
        assert_eq!(
            notice["metadata"],
            json!({"verification_id": id, "kind": "registration", "status": "rejected"})
        );
    }
    assert!(told(manager).await.is_empty());
    for empty in [json!({}), Value::Null] {
        decide("approve", empty)
            .await
            .expect_problem(409, "invalid_state");
    }
    // The seller sees why, and submits again; this time it is approved.
    let seen = app
        .get("/api/v1/trust/verifications")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["items"][4]["reason"], "The scan is unreadable.");
    let again = app
        .post("/api/v1/trust/verifications/documents")
        .owner_of(&tenant)
        .json(&submit(scan.clone()))
        .send()
        .await
        .expect(201);
    assert_eq!(again.body["id"], json!(id));
    assert_eq!(again.body["created_at"], again.body["submitted_at"]);
    assert!(instant(&again.body["created_at"]) > instant(&submitted.body["created_at"]));
    let listed = app
        .get("/api/v1/trust/verifications")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        listed.body["items"][4]["created_at"],
        again.body["created_at"]
    );
    // Approving needs no reason, and so no body.
    let approved = decide_bare("approve").await.expect(200);
    assert_eq!(approved.body["status"], "verified");
    assert!(approved.body["reason"].is_null());
    decide("reject", json!({"reason": "changed my mind"}))
        .await
        .expect_problem(409, "invalid_state");
    app.post(&format!(
        "/api/v1/admin/verifications/{}/approve",
        uuid::Uuid::now_v7()
    ))
    .user(ADMIN)
    .json(&json!({}))
    .send()
    .await
    .expect_problem(404, "not_found");
    let decided = app
        .get("/api/v1/admin/verifications?status=verified&limit=100")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert!(
        decided.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == json!(id))
    );

    let actions: Vec<String> = trust_activities(&app, &tenant)
        .await
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "verification.submitted",
            "verification.rejected",
            "verification.submitted",
            "verification.approved"
        ]
    );
    drop(db);
}

/// The six digits of the latest code message in `text`.
fn code_in(text: &str) -> String {
    regex::Regex::new(r"\b(\d{6})\b")
        .unwrap()
        .captures_iter(text)
        .last()
        .expect("a code")[1]
        .to_string()
}

/// A delivered, five-star order of `product` in `tenant`.
async fn sold_and_rated(app: &TestApp, tenant: &TestTenant, product: &Value, n: usize) -> String {
    let order = app
        .post("/api/v1/orders")
        .owner_of(tenant)
        .json(
            &json!({"customer": {"name": format!("Buyer {n}"), "phone": format!("+55119{n:08}")},
                      "items": [{"product_id": product["id"], "quantity": 1}], "channel": "web"}),
        )
        .send()
        .await
        .expect(201);
    let id = order.body["id"].as_str().unwrap().to_string();
    for status in ["confirmed", "processing", "shipped", "delivered"] {
        let mut body = json!({"status": status});
        if status == "shipped" {
            body["tracking_number"] = json!(format!("BR{n}"));
            body["carrier"] = json!("Correios");
        }
        app.post(&format!("/api/v1/orders/{id}/transitions"))
            .owner_of(tenant)
            .json(&body)
            .send()
            .await
            .expect(200);
    }
    app.post(&format!("/api/v1/orders/{id}/rating"))
        .owner_of(tenant)
        .json(&json!({"stars": 5, "comment": "Great"}))
        .send()
        .await
        .expect(201);
    id
}

fn requirement<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["next_level"]["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {doc}"))
}

#[tokio::test]
async fn a_seller_climbs_from_level_0_to_3_through_the_api_and_falls_back_after_disputes() {
    use crate::media::{file, png, upload};
    use crate::peers::{SmtpServer, TwilioPeer};

    let smtp = SmtpServer::start("none", None, 0);
    let twilio = TwilioPeer::start().await;
    let clock = ManualClock::new(Utc::now());
    let db = private_database().await;
    let mut peers = smtp.vars("none");
    peers.extend(twilio.vars());
    let app = TestApp::spawn_full(db.clone(), Some(clock.clone()), move |vars| {
        vars.extend(peers);
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.new_tenant().await;

    // Level 0: what level 1 needs, all of it missing.
    let doc = app
        .get("/api/v1/trust")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(
        (doc["level"].as_i64(), doc["level_name"].as_str()),
        (Some(0), Some("unverified"))
    );
    assert_eq!(doc["next_level"]["level"], 1);
    for name in [
        "email_verified",
        "phone_verified",
        "business_info",
        "store_setup",
    ] {
        let r = requirement(&doc, name);
        assert_eq!(
            (&r["met"], &r["current"], &r["required"]),
            (&json!(false), &json!(false), &json!(true))
        );
    }
    assert_eq!(doc["factors"].as_array().unwrap().len(), 9);
    assert_eq!(doc["product_cap"], 5);

    // Email: a code by SMTP; a wrong one is refused, the right one verifies.
    let sent = app
        .post("/api/v1/trust/verifications/email/send")
        .owner_of(&tenant)
        .json(&json!({"email": "owner@story.example"}))
        .send()
        .await
        .expect(200);
    assert_eq!(sent.body["status"], "pending");
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail[0].to, ["owner@story.example"]);
    let code = code_in(&mail[0].subject());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = app
        .post("/api/v1/trust/verifications/email/confirm")
        .owner_of(&tenant)
        .json(&json!({"code": wrong}))
        .send()
        .await
        .expect_problem(422, "code_invalid");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("4 tries left")
    );
    let verified = app
        .post("/api/v1/trust/verifications/email/confirm")
        .owner_of(&tenant)
        .json(&json!({"code": code}))
        .send()
        .await
        .expect(200);
    assert_eq!(verified.body["status"], "verified");
    // Single use.
    app.post("/api/v1/trust/verifications/email/confirm")
        .owner_of(&tenant)
        .json(&json!({"code": code}))
        .send()
        .await
        .expect_problem(409, "code_expired");

    // Phone: a code by SMS through the Twilio peer; confirming it completes level 1.
    app.post("/api/v1/trust/verifications/phone/send")
        .owner_of(&tenant)
        .json(&json!({"phone": "+5511987650000"}))
        .send()
        .await
        .expect(200);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            !twilio.sent().is_empty()
        })
        .await
    );
    let sms = &twilio.sent()[0];
    assert_eq!(sms.form["To"], "+5511987650000");
    let confirmed = app
        .post("/api/v1/trust/verifications/phone/confirm")
        .owner_of(&tenant)
        .json(&json!({"code": code_in(&sms.form["Body"])}))
        .send()
        .await
        .expect(200);
    assert_eq!(confirmed.body["status"], "verified");
    // Both verified, but the seller profile still lacks business information and store setup;
    // saving it completes level 1 at once.
    let doc = app
        .get("/api/v1/trust")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(doc["level"], 0);
    assert_eq!(requirement(&doc, "email_verified")["met"], true);
    assert_eq!(requirement(&doc, "business_info")["met"], false);
    app.put("/api/v1/seller-profile")
        .owner_of(&tenant)
        .json(&json!({
            "store_name": "Story Store", "slug": format!("story-{}", &tenant.id.simple().to_string()[..8]),
            "bio": "Tees", "logo_url": "https://cdn.story.example/logo.png",
            "contact_email": "hello@story.example", "contact_phone": "+5511987650000",
            "business_address": {"line1": "Rua A 1", "city": "Recife", "country": "BR"}
        }))
        .send()
        .await
        .expect(200);

    let doc = app
        .get("/api/v1/trust")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(
        (doc["level"].as_i64(), doc["level_name"].as_str()),
        (Some(1), Some("verified"))
    );
    assert_eq!(doc["product_cap"], 50);
    app.get("/api/v1/analytics/summary")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);

    // Level 2: registration and tax id approved by a platform admin, ten delivered and rated
    // orders, a month of age, a score of 60.
    let scan = upload(&app, &tenant, file(png(64), "doc.png", "image/png"))
        .await
        .expect(201)
        .body["id"]
        .clone();
    let approve = |kind: &'static str| {
        let app = &app;
        let tenant = &tenant;
        let scan = scan.clone();
        async move {
            let submitted = app
                .post("/api/v1/trust/verifications/documents")
                .owner_of(tenant)
                .json(&json!({"kind": kind, "media_ids": [scan], "fields": {"number": "42"}}))
                .send()
                .await
                .expect(201);
            app.post(&format!(
                "/api/v1/admin/verifications/{}/approve",
                submitted.body["id"].as_str().unwrap()
            ))
            .user(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .expect(200);
        }
    };
    approve("registration").await;
    approve("tax_id").await;
    let product = app
        .product(
            &tenant,
            json!({"stock": 1000, "price_cents": 5000, "currency": "BRL"}),
        )
        .await;
    let mut orders = Vec::new();
    for n in 0..12 {
        orders.push(sold_and_rated(&app, &tenant, &product, n).await);
    }
    let doc = recompute(&app, &tenant).await;
    assert_eq!(doc["level"], 1, "a new account waits: {doc}");
    let age = requirement(&doc, "account_age_days");
    assert_eq!((&age["met"], &age["required"]), (&json!(false), &json!(30)));
    clock.advance(Duration::days(31));
    let doc = recompute(&app, &tenant).await;
    assert_eq!(
        (doc["level"].as_i64(), doc["level_name"].as_str()),
        (Some(2), Some("trusted")),
        "{doc}"
    );
    let score = doc["score"].as_i64().unwrap();
    assert!(score >= 60, "{score}");
    app.get("/api/v1/analytics/timeseries")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);

    // Level 3: address and bank account, 25 delivered orders, two months, a score of 75.
    approve("address").await;
    approve("bank_account").await;
    for n in 12..25 {
        orders.push(sold_and_rated(&app, &tenant, &product, n).await);
    }
    assert_eq!(recompute(&app, &tenant).await["level"], 2);
    clock.advance(Duration::days(30));
    let doc = recompute(&app, &tenant).await;
    assert_eq!(
        (doc["level"].as_i64(), doc["level_name"].as_str()),
        (Some(3), Some("premium")),
        "{doc}"
    );
    assert!(doc["next_level"].is_null());
    let before = doc["score"].as_i64().unwrap();
    assert!(before >= 75, "{before}");
    app.post("/api/v1/api-keys")
        .owner_of(&tenant)
        .json(&json!({"name": "ERP", "role": "staff"}))
        .send()
        .await
        .expect(201);

    // Back down: ten delivered orders disputed sink the dispute rate; level 3's requirements
    // fail, the grace period starts (the owner is told), and after it the level drops.
    for id in &orders[..10] {
        app.post(&format!("/api/v1/orders/{id}/transitions"))
            .owner_of(&tenant)
            .json(&json!({"status": "disputed", "reason": "Never arrived"}))
            .send()
            .await
            .expect(200);
    }
    let doc = recompute(&app, &tenant).await;
    assert_eq!(doc["level"], 3);
    let dispute = doc["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "dispute_rate")
        .unwrap();
    assert_eq!(
        (&dispute["value"], &dispute["points"]),
        (&json!(0.4), &json!(0.0))
    );
    assert!(doc["score"].as_i64().unwrap() < 75, "{doc}");
    let unmet: Vec<&str> = doc["grace"]["unmet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(unmet, ["delivered_orders", "score"]);
    clock.advance(Duration::days(8));
    let doc = recompute(&app, &tenant).await;
    assert_eq!(
        (doc["level"].as_i64(), doc["level_name"].as_str()),
        (Some(2), Some("trusted")),
        "{doc}"
    );
    app.get("/api/v1/api-keys")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(403, "feature_not_available");

    // Every level change is in the log, with its reason, and told to the owner.
    let changes: Vec<(i64, i64)> = trust_activities(&app, &tenant)
        .await
        .iter()
        .filter(|a| a["action"] == "trust.level_changed")
        .map(|a| {
            (
                a["details"]["from"].as_i64().unwrap(),
                a["details"]["to"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [(0, 1), (1, 2), (2, 3), (3, 2)]);
    let told = app
        .get("/api/v1/notifications?category=trust&limit=100")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let titles: Vec<&str> = told.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    for expected in [
        "Your trust level is now 1 (verified)",
        "Your trust level is now 2 (trusted)",
        "Your trust level is now 3 (premium)",
        "Your trust level is now 2 (trusted)",
        "Your registration document is verified",
    ] {
        assert!(titles.contains(&expected), "{expected} in {titles:?}");
    }
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("Your trust level 3 (premium) drops on")),
        "{titles:?}"
    );

    app.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn codes_are_hashed_single_use_expire_and_five_wrong_tries_void_them() {
    use crate::peers::SmtpServer;

    let smtp = SmtpServer::start("none", None, 0);
    let clock = ManualClock::new(Utc::now());
    let vars = smtp.vars("none");
    // A database of its own: the cleanup this test runs (and other tests' cleanups, which run
    // as of a later day) would otherwise purge codes in flight.
    let private = private_database().await;
    let app = TestApp::spawn_full(private.clone(), Some(clock.clone()), move |v| {
        v.extend(vars);
        v.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.new_tenant().await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let send = || {
        app.post("/api/v1/trust/verifications/email/send")
            .owner_of(&tenant)
            .json(&json!({"email": "codes@story.example"}))
            .send()
    };
    let confirm = |code: String| {
        app.post("/api/v1/trust/verifications/email/confirm")
            .owner_of(&tenant)
            .json(&json!({"code": code}))
            .send()
    };
    app.post("/api/v1/trust/verifications/email/send")
        .user(&staff)
        .tenant(tenant.id)
        .json(&json!({"email": "codes@story.example"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let bad = app
        .post("/api/v1/trust/verifications/phone/send")
        .owner_of(&tenant)
        .json(&json!({"phone": "12345"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["phone"]);
    confirm("123456".into())
        .await
        .expect_problem(409, "code_expired");
    // A code that is not even six digits is a wrong code like any other.
    confirm("12a4".into())
        .await
        .expect_problem(409, "code_expired");

    let first = send().await.expect(200);
    let expires =
        chrono::DateTime::parse_from_rfc3339(first.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.with_timezone(&Utc),
        clock.now() + Duration::minutes(10)
    );
    let a = code_in(&smtp.wait_for(1).await[0].subject());
    // Stored as a hash only.
    let mut owner = connect(&app.db.owner_url).await;
    let stored: Vec<u8> = tenant_tx(&mut owner, tenant.id)
        .await
        .query_one(
            "SELECT code_hash FROM trust_codes WHERE tenant_id = $1",
            &[&tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&a));
    // A resend within the minute is throttled.
    let throttled = send().await.expect_problem(429, "rate_limited");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // Five wrong tries void the code, whatever their shape: the right one is then too late.
    let wrong = if a == "000000" { "111111" } else { "000000" };
    let tries = [wrong, "12345", "12a456", "1234567", ""];
    for (left, wrong) in (0..5).rev().zip(tries) {
        let refused = confirm(wrong.into())
            .await
            .expect_problem(422, "code_invalid");
        let detail = refused.body["detail"].as_str().unwrap();
        if left > 0 {
            assert!(detail.contains(&format!("{left} tries left")), "{detail}");
        } else {
            assert!(detail.contains("last try"), "{detail}");
        }
    }
    confirm(a).await.expect_problem(409, "code_expired");

    // A code expires after 10 minutes.
    clock.advance(Duration::seconds(61));
    send().await.expect(200);
    let b = code_in(&smtp.wait_for(2).await[1].subject());
    clock.advance(Duration::minutes(10) + Duration::seconds(1));
    confirm(b).await.expect_problem(409, "code_expired");

    // A new code works once.
    clock.advance(Duration::seconds(61));
    send().await.expect(200);
    let c = code_in(&smtp.wait_for(3).await[2].subject());
    confirm(c.clone()).await.expect(200);
    confirm(c).await.expect_problem(409, "code_expired");

    // At most five codes an hour.
    for n in 4..=5 {
        clock.advance(Duration::seconds(61));
        send().await.expect(200);
        smtp.wait_for(n).await;
    }
    clock.advance(Duration::seconds(61));
    let hourly = send().await.expect_problem(429, "rate_limited");
    let retry: u64 = hourly.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry > 60,
        "{retry}: until the first code of the hour is an hour old"
    );

    // The cleanup drops codes after a day: a tenant keeps at most a day of them.
    let db =
        convcommerce::db::Db::connect(&secrecy::SecretString::from(app.db.app_url.clone()), 2, 0)
            .unwrap();
    let store = convcommerce::storage::MediaStore::from_config(&app.config).unwrap();
    let report = convcommerce::jobs::cleanup::run_at(&db, &store, clock.now() + Duration::days(2))
        .await
        .unwrap();
    assert!(report.codes_purged >= 5, "{report:?}");
    let left: i64 = tenant_tx(&mut owner, tenant.id)
        .await
        .query_one(
            "SELECT count(*) FROM trust_codes WHERE tenant_id = $1",
            &[&tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    db.close();
    app.stop().await;
    drop_database(&private).await;
}

#[tokio::test]
async fn existing_tenants_migrate_at_level_two_locked_and_keep_their_products() {
    use convcommerce::db::migrate::MIGRATIONS;

    // The roles exist once the shared database is provisioned; this database is migrated by
    // hand up to 0009, given tenants, then 0010 runs over them.
    database().await;
    let name = format!("convcommerce_mig_{}", uuid::Uuid::now_v7().simple());
    let root = connect(&superuser_url().await).await;
    root.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let mut url = url::Url::parse(&superuser_url().await).unwrap();
    url.set_path(&name);
    let db = connect(url.as_str()).await;
    let (before, trust) = MIGRATIONS.split_at(9);
    assert_eq!(trust[0].name, "0010_trust.sql");
    for m in before {
        db.batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
    let (busy, quiet) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    db.batch_execute(&format!(
        "INSERT INTO tenants (id, name, slug) VALUES ('{busy}', 'Busy', 'busy'), ('{quiet}', 'Quiet', 'quiet');
         INSERT INTO products (tenant_id, id, name, price_cents, currency)
         SELECT '{busy}', gen_random_uuid(), 'P' || i, 100, 'BRL' FROM generate_series(1, 80) AS i;"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!("BEGIN; {} COMMIT;", trust[0].sql))
        .await
        .unwrap();
    for tenant in [busy, quiet] {
        let row = db
            .query_one(
                "SELECT trust_level, trust_locked, trust_reason,
                        (SELECT count(*) FROM trust_verifications v WHERE v.tenant_id = t.id),
                        (quota_bound(t.id, 'products')).cap
                 FROM tenants t WHERE id = $1",
                &[&tenant],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i16>(0), 2);
        assert!(row.get::<_, bool>(1));
        assert!(row.get::<_, String>(2).starts_with("Existing tenant"));
        assert_eq!(row.get::<_, i64>(3), 8, "every kind of verification");
        assert_eq!(row.get::<_, i64>(4), 1000, "no trust cap below the quota");
    }
    // A tenant made afterwards starts at 0, with its verifications.
    let fresh = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO tenants (id, name, slug) VALUES ($1, 'Fresh', 'fresh')",
        &[&fresh],
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "SELECT trust_level, (SELECT count(*) FROM trust_verifications WHERE tenant_id = $1),
                    (quota_bound($1, 'products')).reason
             FROM tenants WHERE id = $1",
            &[&fresh],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i16>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        ),
        (0, 8, "trust_level".to_string())
    );
    drop(db);
    root.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_factor_shows_its_samples_and_gives_neutral_points_below_its_minimum() {
    let app = TestApp::spawn().await;
    let tenant = app.new_tenant().await;
    let mut owner = connect(&app.db.owner_url).await;
    let orders = |count: i64, status: &'static str| {
        let tenant_id = tenant.id;
        let url = app.db.owner_url.clone();
        async move {
            let mut owner = connect(&url).await;
            let tx = tenant_tx(&mut owner, tenant_id).await;
            tx.execute(
                "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents,
                     total_cents, currency, status, created_at)
                 SELECT $1, gen_random_uuid(), 'web', '{\"name\": \"C\"}', 100, 100, 'BRL', $2,
                        now() - interval '10 days'
                 FROM generate_series(1, $3::bigint)",
                &[&tenant_id, &status, &count],
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    let factors = || async {
        let doc = app
            .get("/api/v1/trust")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200)
            .body;
        doc["factors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_string(), f.clone()))
            .collect::<std::collections::HashMap<String, Value>>()
    };
    let check = |factors: &std::collections::HashMap<String, Value>,
                 name: &str,
                 samples: i64,
                 value: Option<f64>,
                 points: f64| {
        let f = &factors[name];
        assert_eq!(f["samples"], samples, "{name}: {f}");
        match value {
            Some(v) => assert!(
                (f["value"].as_f64().unwrap() - v).abs() < 1e-9,
                "{name}: {f}"
            ),
            None => assert!(f["value"].is_null(), "{name}: {f}"),
        }
        assert!(
            (f["points"].as_f64().unwrap() - points).abs() < 1e-6,
            "{name}: {points} points? {f}"
        );
    };

    // Four orders, all cancelled: below the minimums of the rates, which give half their
    // weight however bad the value; the volume has no minimum.
    orders(4, "cancelled").await;
    let seen = factors().await;
    assert_eq!(seen["fulfilment_rate"]["minimum_samples"], 5);
    check(&seen, "fulfilment_rate", 4, Some(0.0), 10.0);
    check(&seen, "cancellation_rate", 4, Some(1.0), 5.0);
    check(&seen, "dispute_rate", 0, None, 7.5);
    check(&seen, "average_rating", 0, None, 7.5);
    check(&seen, "first_response_time", 0, None, 5.0);
    check(&seen, "order_volume", 4, Some(4.0), 0.8);
    check(&seen, "payment_history", 0, Some(0.0), 0.0);
    check(&seen, "compliance_flags", 0, Some(0.0), 5.0);

    // Six more, delivered, five of them rated five stars: the rates that reach their
    // minimums count their values.
    orders(6, "delivered").await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    tx.execute(
        "INSERT INTO order_ratings (tenant_id, order_id, stars)
         SELECT tenant_id, id, 5 FROM orders WHERE tenant_id = $1 AND status = 'delivered'
         LIMIT 5",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let seen = factors().await;
    // 20 × (60 % - 50 %) / (95 % - 50 %), shown to a tenth.
    check(&seen, "fulfilment_rate", 10, Some(0.6), 4.4);
    check(&seen, "cancellation_rate", 10, Some(0.4), 0.0);
    check(&seen, "dispute_rate", 6, Some(0.0), 7.5);
    check(&seen, "average_rating", 5, Some(5.0), 15.0);
    check(&seen, "order_volume", 10, Some(10.0), 2.0);
    check(&seen, "payment_history", 6, Some(6.0), 0.3);
}
