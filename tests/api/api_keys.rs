//! API keys (SPEC §2, §6): shown once, stored as a hash, role-bound (key management
//! included), expiring, revocable on every instance within a second, counted in the tenant's
//! rate limits, logged as `actor_type: api_key`, never on `/api/v1/admin/*`.

use std::time::Duration;

use chrono::Utc;
use convcommerce::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::*;

/// Makes a key with `role` as the tenant's owner; returns the answer's body.
async fn make_key(app: &TestApp, tenant: &TestTenant, role: &str, expires: Option<&str>) -> Value {
    app.post("/api/v1/api-keys")
        .owner_of(tenant)
        .json(&json!({"name": format!("{role} key"), "role": role, "expires_at": expires}))
        .send()
        .await
        .expect(201)
        .body
}

fn secret(key: &Value) -> String {
    key["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_key_acts_for_its_tenant_with_its_role() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    let key = make_key(&app, &tenant, "staff", None).await;
    let token = secret(&key);
    assert!(token.starts_with("cck_"));
    assert_eq!(key["prefix"], &token[..12]);
    assert_eq!(key["role"], "staff");
    assert!(key["expires_at"].is_null());
    // Shown once: the list has no secret, and the database only the hash.
    let listed = app
        .get("/api/v1/api-keys")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(listed.body["items"][0]["id"], key["id"]);
    assert!(listed.body["items"][0].get("key").is_none());
    let mut owner = connect(&app.db.owner_url).await;
    let stored = tenant_tx(&mut owner, tenant.id)
        .await
        .query_one(
            "SELECT prefix, key_hash FROM api_keys WHERE id = $1",
            &[&key["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap();
    let hash: Vec<u8> = stored.get(1);
    assert_eq!(hash, convcommerce::auth::api_key::hash(&token).to_vec());
    assert!(!String::from_utf8_lossy(&hash).contains(&token[12..]));

    // With or without X-Tenant-ID; another tenant's id is refused as for members.
    app.get("/api/v1/products")
        .token(&token)
        .send()
        .await
        .expect(200);
    app.get("/api/v1/products")
        .token(&token)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    app.get("/api/v1/products")
        .token(&token)
        .tenant(other.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
    app.get("/api/v1/products")
        .token(&token)
        .header("X-Tenant-ID", "not-a-uuid")
        .send()
        .await
        .expect_problem(400, "tenant_header_invalid");
    // The role binds: staff may add products, not change the seller profile.
    let created = app
        .post("/api/v1/products")
        .token(&token)
        .json(&json!({"name": "By key", "price_cents": 100, "currency": "USD"}))
        .send()
        .await
        .expect(201);
    app.put("/api/v1/seller-profile")
        .token(&token)
        .json(&json!({"store_name": "Nope", "slug": "nope"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    // A staff key cannot manage keys, and no key is ever a platform admin.
    app.get("/api/v1/api-keys")
        .token(&token)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let admin_key = secret(&make_key(&app, &tenant, "admin", None).await);
    app.get("/api/v1/admin/tenants")
        .token(&admin_key)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // Forged keys: a changed secret, another tenant's id in a real key's place.
    let mut forged = token.clone();
    forged.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
    app.get("/api/v1/products")
        .token(&forged)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    let moved = format!("{}{}", &token[..47], other.id.simple());
    app.get("/api/v1/products")
        .token(&moved)
        .send()
        .await
        .expect_problem(401, "unauthorized");

    // The activity log names the key.
    let logged = app
        .get("/api/v1/activities?action=product.created")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let entry = &logged.body["items"][0];
    assert_eq!(entry["resource_id"], created.body["id"]);
    assert_eq!(entry["actor_type"], "api_key");
    assert_eq!(entry["actor"], key["id"]);
    let activity = |id: Value| {
        let app = &app;
        let tenant = &tenant;
        async move {
            app.get(&format!(
                "/api/v1/activities?actor={}&action=request",
                id.as_str().unwrap()
            ))
            .owner_of(tenant)
            .send()
            .await
            .expect(200)
            .body["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            activity(key["id"].clone()).await > 0
        })
        .await,
        "a key's reads are logged with the key as actor"
    );

    // An admin may not make an owner key; names and expiries are checked.
    let (admin, _) = app.member(&tenant, "admin").await;
    app.post("/api/v1/api-keys")
        .user(&admin)
        .tenant(tenant.id)
        .json(&json!({"name": "Root", "role": "owner"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let bad = app
        .post("/api/v1/api-keys")
        .owner_of(&tenant)
        .json(&json!({"name": " ", "role": "staff", "expires_at": "2001-01-01T00:00:00Z"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["name", "expires_at"]);
}

#[tokio::test]
async fn owner_and_admin_keys_manage_keys_as_their_role_allows() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    let admin = make_key(&app, &tenant, "admin", None).await;
    let admin_key = secret(&admin);
    let staff = make_key(&app, &tenant, "staff", None).await;
    let theirs = make_key(&app, &other, "staff", None).await;
    let with = |call: Call, key: &str| call.token(key);

    // Staff keys manage nothing; that is a member's rule too.
    let staff_key = secret(&staff);
    with(app.get("/api/v1/api-keys"), &staff_key)
        .send()
        .await
        .expect_problem(403, "forbidden");
    with(app.post("/api/v1/api-keys"), &staff_key)
        .json(&json!({"name": "More", "role": "staff"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    with(
        app.delete(&format!(
            "/api/v1/api-keys/{}",
            admin["id"].as_str().unwrap()
        )),
        &staff_key,
    )
    .send()
    .await
    .expect_problem(403, "forbidden");

    // An admin key lists and makes keys up to its own role, recorded as their creator.
    let listed = with(app.get("/api/v1/api-keys?limit=100"), &admin_key)
        .send()
        .await
        .expect(200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    with(app.post("/api/v1/api-keys"), &admin_key)
        .json(&json!({"name": "Root", "role": "owner"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let made = with(app.post("/api/v1/api-keys"), &admin_key)
        .json(&json!({"name": "Made by a key", "role": "admin"}))
        .send()
        .await
        .expect(201);
    assert_eq!(made.body["created_by"], admin["id"]);
    assert_eq!(made.body["created_by_type"], "api_key");
    assert_eq!(admin["created_by_type"], "user");
    let listed = with(app.get("/api/v1/api-keys"), &admin_key)
        .send()
        .await
        .expect(200);
    assert_eq!(listed.body["items"][0]["id"], made.body["id"]);
    assert_eq!(listed.body["items"][0]["created_by"], admin["id"]);
    let made_key = secret(&made.body);
    with(app.get("/api/v1/products"), &made_key)
        .send()
        .await
        .expect(200);

    // It revokes keys of its own tenant only: another tenant's key is not found, and naming
    // that tenant is refused.
    let theirs_path = format!("/api/v1/api-keys/{}", theirs["id"].as_str().unwrap());
    with(app.delete(&theirs_path), &admin_key)
        .send()
        .await
        .expect_problem(404, "not_found");
    with(app.delete(&theirs_path), &admin_key)
        .tenant(other.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
    with(app.get("/api/v1/products"), &secret(&theirs))
        .send()
        .await
        .expect(200);
    with(
        app.delete(&format!(
            "/api/v1/api-keys/{}",
            staff["id"].as_str().unwrap()
        )),
        &admin_key,
    )
    .send()
    .await
    .expect(204);
    with(app.get("/api/v1/products"), &staff_key)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // The activities name the key that acted.
    let logged = app
        .get("/api/v1/activities?resource_type=api_key")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let by_key: Vec<(&str, &Value)> = logged.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["actor_type"] == "api_key")
        .map(|a| (a["action"].as_str().unwrap(), &a["actor"]))
        .collect();
    assert_eq!(
        by_key,
        [
            ("api_key.revoked", &admin["id"]),
            ("api_key.created", &admin["id"])
        ]
    );
    // A key may revoke itself; it stops at once.
    with(
        app.delete(&format!(
            "/api/v1/api-keys/{}",
            made.body["id"].as_str().unwrap()
        )),
        &made_key,
    )
    .send()
    .await
    .expect(204);
    with(app.get("/api/v1/products"), &made_key)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // An owner key may make an owner key.
    let owner_key = secret(&make_key(&app, &tenant, "owner", None).await);
    let root = with(app.post("/api/v1/api-keys"), &owner_key)
        .json(&json!({"name": "Root", "role": "owner"}))
        .send()
        .await
        .expect(201);
    assert_eq!(root.body["role"], "owner");
}

#[tokio::test]
async fn keys_expire_and_need_level_three() {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(database().await, Some(clock.clone()), |_| {}).await;
    let tenant = app.tenant().await;
    let soon = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let key = secret(&make_key(&app, &tenant, "staff", Some(&soon)).await);
    app.get("/api/v1/products")
        .token(&key)
        .send()
        .await
        .expect(200);
    clock.advance(chrono::Duration::hours(2));
    app.get("/api/v1/products")
        .token(&key)
        .send()
        .await
        .expect_problem(401, "unauthorized");

    // A tenant demoted below level 3 keeps its keys but cannot use them.
    let lasting = secret(&make_key(&app, &tenant, "staff", None).await);
    crate::trust::set_level(&app, &tenant, 2, true).await;
    let refused = app
        .get("/api/v1/products")
        .token(&lasting)
        .send()
        .await
        .expect_problem(403, "feature_not_available");
    assert_eq!(refused.body["feature"], "api_keys");
    crate::trust::set_level(&app, &tenant, 3, true).await;
    app.get("/api/v1/products")
        .token(&lasting)
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn a_revoked_key_stops_on_every_instance_within_a_second() {
    let db = database().await;
    let a = TestApp::spawn_on(db.clone(), |_| {}).await;
    let b = TestApp::spawn_on(db, |_| {}).await;
    let tenant = a.tenant().await;
    let made = make_key(&a, &tenant, "staff", None).await;
    let key = secret(&made);
    // Both instances have the key cached.
    a.get("/api/v1/products")
        .token(&key)
        .send()
        .await
        .expect(200);
    b.get("/api/v1/products")
        .token(&key)
        .send()
        .await
        .expect(200);
    a.delete(&format!(
        "/api/v1/api-keys/{}",
        made["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .send()
    .await
    .expect(204);
    a.get("/api/v1/products")
        .token(&key)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    let started = std::time::Instant::now();
    let refused = eventually(Duration::from_secs(1), || async {
        b.get("/api/v1/products").token(&key).send().await.status == 401
    })
    .await;
    assert!(
        refused,
        "instance B still accepts the key after {:?}",
        started.elapsed()
    );
    a.delete(&format!(
        "/api/v1/api-keys/{}",
        made["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .send()
    .await
    .expect_problem(404, "not_found");
}

#[tokio::test]
async fn keys_count_in_the_tenants_rate_limits() {
    use chrono::TimeZone;
    // A stopped clock in the middle of a minute: the calls share one window.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 10, 12, 30, 30).unwrap());
    let app = TestApp::spawn_full(database().await, Some(clock), |_| {}).await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"requests_per_minute": 6}))
        .await;
    let key = secret(&make_key(&app, &tenant, "staff", None).await);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let call = app.get("/api/v1/products");
        let call = if i % 2 == 0 {
            call.token(&key)
        } else {
            call.owner_of(&tenant)
        };
        statuses.push(call.send().await.status.as_u16());
    }
    // The key's creation took one request of the six; keys and members share the windows.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let limited = app.get("/api/v1/products").token(&key).send().await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-limit-minute"), Some("6"));
    assert_eq!(limited.code(), "rate_limited");
}

#[tokio::test]
async fn owner_and_admin_keys_manage_members_by_the_rules_members_follow() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let owner_key = secret(&make_key(&app, &tenant, "owner", None).await);
    let admin_key = secret(&make_key(&app, &tenant, "admin", None).await);
    let staff_key = secret(&make_key(&app, &tenant, "staff", None).await);
    let (_, first) = app.member(&tenant, "staff").await;
    let (_, second) = app.member(&tenant, "staff").await;
    let (_, manager) = app.member(&tenant, "admin").await;
    let (_, co_owner) = app.member(&tenant, "owner").await;
    let user = |id: uuid::Uuid| format!("/api/v1/users/{id}");
    let role_of = |id: uuid::Uuid| {
        let app = &app;
        let tenant = &tenant;
        async move {
            app.get(&format!("/api/v1/users/{id}"))
                .owner_of(tenant)
                .send()
                .await
                .expect(200)
                .body["role"]
                .clone()
        }
    };

    // `key` may neither give `id` the role `role` nor remove it.
    let refused = |id: uuid::Uuid, key: &str, role: &'static str| {
        let (app, key) = (&app, key.to_string());
        async move {
            app.patch(&format!("/api/v1/users/{id}"))
                .token(&key)
                .json(&json!({"role": role}))
                .send()
                .await
                .expect_problem(403, "forbidden");
            app.delete(&format!("/api/v1/users/{id}"))
                .token(&key)
                .send()
                .await
                .expect_problem(403, "forbidden");
        }
    };
    // An owner key changes and removes a staff member, and may change an owner.
    let changed = app
        .patch(&user(first))
        .token(&owner_key)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect(200);
    assert_eq!(changed.body["role"], "admin");
    app.patch(&user(co_owner))
        .token(&owner_key)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect(200);
    app.delete(&user(first))
        .token(&owner_key)
        .send()
        .await
        .expect(204);
    app.get(&user(first))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");

    // An admin key changes and removes staff, but touches no owner, nor makes one.
    app.patch(&user(second))
        .token(&admin_key)
        .json(&json!({"email": "second@keys.example"}))
        .send()
        .await
        .expect(200);
    app.patch(&user(second))
        .token(&admin_key)
        .json(&json!({"role": "owner"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let tenant_owner = app.owner_id(&tenant).await;
    refused(tenant_owner, &admin_key, "staff").await;
    assert_eq!(role_of(tenant_owner).await, "owner");
    assert_eq!(role_of(second).await, "staff");

    // A staff key manages no one.
    refused(manager, &staff_key, "staff").await;
    assert_eq!(role_of(manager).await, "admin");

    // The key's changes are logged as the key's.
    let logged = app
        .get("/api/v1/activities?action=user.deleted")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body["items"][0]
        .clone();
    assert_eq!(logged["actor_type"], "api_key");

    // A key revoked just before the change (its row gone while this instance still holds it
    // in cache, as between another instance's revocation and its NOTIFY) changes nothing: the
    // change reads the key's role in its own transaction.
    let revoked = make_key(&app, &tenant, "admin", None).await;
    let revoked_key = secret(&revoked);
    app.get("/api/v1/users")
        .token(&revoked_key)
        .send()
        .await
        .expect(200);
    let mut db_owner = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut db_owner, tenant.id).await;
    tx.execute(
        "DELETE FROM api_keys WHERE id = $1",
        &[&revoked["id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The row lock needs an UPDATE grant, on `tenant_id` only: the server's role still
    // changes nothing of a key.
    let mut server = connect(&app.db.app_url).await;
    let tx = tenant_tx(&mut server, tenant.id).await;
    let renamed = tx
        .execute("UPDATE api_keys SET name = 'renamed'", &[])
        .await
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_string();
    assert!(renamed.contains("permission denied"), "{renamed}");
    drop(tx);
    let tx = tenant_tx(&mut server, tenant.id).await;
    let moved = tx
        .execute("UPDATE api_keys SET tenant_id = gen_random_uuid()", &[])
        .await
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_string();
    assert!(moved.contains("row-level security"), "{moved}");
    drop(tx);
    refused(second, &revoked_key, "admin").await;
    assert_eq!(role_of(second).await, "staff");
    // Revoked through the API, the key is refused before anything is read.
    app.delete(&format!(
        "/api/v1/api-keys/{}",
        make_key(&app, &tenant, "owner", None).await["id"]
            .as_str()
            .unwrap()
    ))
    .token(&owner_key)
    .send()
    .await
    .expect(204);
    let gone = secret(&make_key(&app, &tenant, "owner", None).await);
    let gone_id = app
        .get("/api/v1/api-keys?limit=1")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body["items"][0]["id"]
        .clone();
    app.delete(&format!("/api/v1/api-keys/{}", gone_id.as_str().unwrap()))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    app.delete(&user(second))
        .token(&gone)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(role_of(second).await, "staff");
}
