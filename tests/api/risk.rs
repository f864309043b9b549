//! Risk signals (SPEC §6): order velocity against the tenant's own baseline, cancellation and
//! dispute bursts, auth-failure bursts, one customer phone across many tenants (platform code,
//! never shown to a tenant); a review for platform admins, and a critical flag suspends at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use convcommerce::clock::{Clock, ManualClock, SystemClock};
use convcommerce::db::Db;
use convcommerce::jobs::trust::{RecomputeReport, TrustRecompute};
use convcommerce::jobs::{self, Job, Scope};
use convcommerce::metrics::Metrics;
use convcommerce::monitoring::activity::NoSink;
use convcommerce::notify::Notifier;
use convcommerce::tenancy::directory::Directory;
use convcommerce::trust::recompute::Trust;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;
use crate::trust::{recompute, set_level, trust_activities};

/// Inserts `count` orders placed in the last 50 seconds with `status` and customer `phone`,
/// straight in the database (as the owner, with the tenant set).
async fn seed_orders(app: &TestApp, tenant: &TestTenant, count: i64, status: &str, phone: &str) {
    seed_orders_at(app, tenant, count, status, phone, Utc::now()).await;
}

/// [`seed_orders`] placed in the 50 seconds up to `at`.
async fn seed_orders_at(
    app: &TestApp,
    tenant: &TestTenant,
    count: i64,
    status: &str,
    phone: &str,
    at: DateTime<Utc>,
) {
    let mut owner = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    tx.execute(
        "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
             currency, status, created_at)
         SELECT $1, gen_random_uuid(), 'web', jsonb_build_object('name', 'C', 'phone', $3::text),
                100, 100, 'BRL', $2, $5::timestamptz - (i % 50) * interval '1 second'
         FROM generate_series(1, $4::bigint) AS i",
        &[&tenant.id, &status, &phone, &count, &at],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A tenant at level 3, unlocked, that meets every requirement of it (so a recompute keeps it
/// there only while nothing counts against it): its verifications and profile complete, six
/// months old, 30 orders delivered in the last 90 days with five five-star ratings.
async fn premium_in_good_standing(app: &TestApp) -> TestTenant {
    let tenant = app.new_tenant().await;
    app.put("/api/v1/seller-profile")
        .owner_of(&tenant)
        .json(&json!({
            "store_name": "Good Store", "slug": format!("good-{}", tenant.id.simple()),
            "bio": "Tees", "logo_url": "https://cdn.good.example/logo.png",
            "contact_email": "hello@good.example", "contact_phone": "+5511912345678",
            "business_address": {"line1": "Rua Augusta 1500", "city": "São Paulo", "country": "BR"}
        }))
        .send()
        .await
        .expect(200);
    let mut owner = connect(&app.db.owner_url).await;
    owner
        .execute(
            "UPDATE tenants SET created_at = now() - interval '181 days' WHERE id = $1",
            &[&tenant.id],
        )
        .await
        .unwrap();
    let tx = tenant_tx(&mut owner, tenant.id).await;
    tx.execute(
        "UPDATE trust_verifications SET status = 'verified', decided_at = now()
         WHERE tenant_id = $1 AND kind NOT IN ('business_info', 'store_setup')",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
             currency, status, created_at)
         SELECT $1, gen_random_uuid(), 'web', '{\"name\": \"C\", \"phone\": \"+5511977770000\"}',
                100, 100, 'BRL', 'delivered', now() - i * interval '1 day'
         FROM generate_series(5, 34) AS i",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO order_ratings (tenant_id, order_id, stars)
         SELECT tenant_id, id, 5 FROM orders WHERE tenant_id = $1 LIMIT 5",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    crate::trust::set_level(app, &tenant, 3, false).await;
    tenant
}

/// The tenant's entry of `GET /api/v1/admin/risk`, if it is flagged.
async fn risk_of(app: &TestApp, tenant: &TestTenant) -> Option<Value> {
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/admin/risk?limit=100&cursor={c}"),
            None => "/api/v1/admin/risk?limit=100".into(),
        };
        let page = app.get(&path).user(ADMIN).send().await.expect(200).body;
        if let Some(found) = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tenant_id"] == json!(tenant.id))
        {
            return Some(found.clone());
        }
        cursor = page["next_cursor"].as_str().map(String::from);
        cursor.as_ref()?;
    }
}

fn signal<'a>(risk: &'a Value, name: &str) -> &'a Value {
    risk["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {risk}"))
}

#[tokio::test]
async fn an_order_burst_far_above_the_baseline_suspends_at_once_and_says_why() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    seed_orders(&app, &tenant, 250, "pending", "+5511911110001").await;
    recompute(&app, &tenant).await;

    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["status"], "suspended");
    let why = seen.body["status_reason"].as_str().unwrap();
    assert!(why.contains("250 orders in the last hour"), "{why}");
    // The seller can read the trust document, and nothing else.
    app.get("/api/v1/trust")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    app.get("/api/v1/products")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(403, "tenant_suspended");
    let risk = risk_of(&app, &tenant).await.expect("flagged");
    assert_eq!(risk["risk_level"], "critical");
    assert_eq!(risk["status"], "suspended");
    let velocity = signal(&risk, "order_velocity");
    assert_eq!(velocity["severity"], "critical");
    assert_eq!(velocity["value"], 250.0);
    assert!(
        risk["review_reason"]
            .as_str()
            .unwrap()
            .contains("order_velocity")
    );

    // An admin reactivates it; the review stays open until an admin sets its level.
    app.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect(200);
    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["status"], "active");
    assert!(seen.body["status_reason"].is_null());
    let activities = trust_activities(&app, &tenant).await;
    let suspended = activities
        .iter()
        .find(|a| a["action"] == "trust.suspended")
        .expect("an activity");
    assert_eq!(suspended["details"]["reason"], json!(why));
    set_level(&app, &tenant, 3, true).await;
    let risk = risk_of(&app, &tenant)
        .await
        .expect("still flagged by its signals");
    assert!(risk["review_opened_at"].is_null());
}

#[tokio::test]
async fn a_seller_with_a_busy_baseline_is_not_flagged_for_a_busy_hour() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let mut owner = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    // A week of 40 orders an hour, then 60 in the last hour.
    tx.execute(
        "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
             currency, status, created_at)
         SELECT $1, gen_random_uuid(), 'web', '{\"name\": \"C\", \"phone\": \"+5511900000000\"}',
                100, 100, 'BRL', 'delivered', now() - interval '1 hour' - i * interval '15 minutes' / 10
         FROM generate_series(1, 6720) AS i",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seed_orders(&app, &tenant, 60, "pending", "+5511900000000").await;
    recompute(&app, &tenant).await;
    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["status"], "active");
    assert!(risk_of(&app, &tenant).await.is_none());
}

#[tokio::test]
async fn disputes_cancellations_and_failed_logins_open_a_review_the_tenant_never_sees() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.tenant().await;
    seed_orders(&app, &tenant, 12, "cancelled", "+5511922220001").await;
    // Six orders disputed through the API (their status changes are logged).
    let product = app.product(&tenant, json!({"stock": 100})).await;
    for _ in 0..6 {
        let order = app
            .post("/api/v1/orders")
            .owner_of(&tenant)
            .json(
                &json!({"customer": {"name": "Ana", "phone": "+5511922220002"},
                          "items": [{"product_id": product["id"], "quantity": 1}],
                          "channel": "web"}),
            )
            .send()
            .await
            .expect(201);
        let id = order.body["id"].as_str().unwrap();
        for status in ["confirmed", "processing", "shipped", "disputed"] {
            let mut body = json!({"status": status});
            if status == "shipped" {
                body["tracking_number"] = json!("T");
                body["carrier"] = json!("C");
            }
            app.post(&format!("/api/v1/orders/{id}/transitions"))
                .owner_of(&tenant)
                .json(&body)
                .send()
                .await
                .expect(200);
        }
    }
    // 100 failed logins against the tenant, recorded in its log by the batch writer.
    for _ in 0..100 {
        app.get("/api/v1/products")
            .token("not-a-token")
            .tenant(tenant.id)
            .send()
            .await
            .expect(401);
    }
    let logged = eventually(Duration::from_secs(10), || async {
        let page = app
            .get("/api/v1/activities?action=auth.failed&limit=100")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
        page.body["items"].as_array().unwrap().len() == 100
    })
    .await;
    assert!(logged, "the failures are in the tenant's log");

    let doc = recompute(&app, &tenant).await;
    let risk = risk_of(&app, &tenant).await.expect("flagged");
    assert_eq!(risk["risk_level"], "high");
    assert_eq!(signal(&risk, "cancellation_burst")["value"], 12.0);
    assert_eq!(signal(&risk, "dispute_burst")["value"], 6.0);
    assert_eq!(signal(&risk, "auth_failure_burst")["severity"], "medium");
    assert!(risk["review_opened_at"].is_string());
    assert_eq!(risk["status"], "active", "high is reviewed, not suspended");
    // The seller's document counts the flag against compliance, but names no signal.
    let text = doc.to_string();
    for hidden in ["dispute_burst", "cancellation_burst", "auth_failure_burst"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    let compliance = doc["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "compliance_flags")
        .unwrap();
    assert_eq!(compliance["value"], 1.0);
    // The risk list is for platform admins.
    app.get("/api/v1/admin/risk")
        .user(&tenant.owner)
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.get("/api/v1/admin/risk?limit=0")
        .user(ADMIN)
        .send()
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn one_customer_phone_across_many_tenants_is_found_by_the_platform_pass_only() {
    let db = private_database().await;
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let mut shoppers = Vec::new();
    for _ in 0..4 {
        let tenant = app.tenant().await;
        seed_orders(&app, &tenant, 2, "pending", "+5511933330000").await;
        shoppers.push(tenant);
    }
    let alone = app.tenant().await;
    seed_orders(&app, &alone, 2, "pending", "+5511944440000").await;

    // A one-tenant recompute cannot see other tenants: nothing found.
    recompute(&app, &shoppers[0]).await;
    assert!(risk_of(&app, &shoppers[0]).await.is_none());

    // The cluster job's pass compares every tenant's recent customer phones.
    let pool = Db::connect(&SecretString::from(db.app_url.clone()), 2, 0).unwrap();
    let metrics = Arc::new(Metrics::default());
    let directory = Directory::new(pool.clone(), metrics, Duration::from_secs(30));
    let job = TrustRecompute {
        db: pool.clone(),
        trust: Trust::new(
            pool.clone(),
            Arc::new(SystemClock),
            Duration::from_secs(7 * 86_400),
            directory,
            Arc::new(NoSink),
            Notifier::offline(Arc::new(SystemClock)),
        ),
        clock: Arc::new(SystemClock),
    };
    let report = job.run_once().await.unwrap();
    assert_eq!((report.tenants, report.failed), (5, 0));
    for tenant in &shoppers {
        let risk = risk_of(&app, tenant).await.expect("flagged");
        let shared = signal(&risk, "shared_customer_phone");
        assert_eq!(
            (&shared["value"], &shared["severity"]),
            (&json!(3.0), &json!("medium"))
        );
        assert!(risk["review_opened_at"].is_null(), "medium opens no review");
        // Never in what the tenant reads.
        let doc = app
            .get("/api/v1/trust")
            .owner_of(tenant)
            .send()
            .await
            .expect(200);
        let text = doc.body.to_string();
        for hidden in ["shared", "+5511933330000", "customer phone"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        for activity in trust_activities(&app, tenant).await {
            assert!(!activity.to_string().contains("shared"), "{activity}");
        }
    }
    assert!(risk_of(&app, &alone).await.is_none());
    // A later one-tenant recompute keeps the pass's finding.
    recompute(&app, &shoppers[1]).await;
    let risk = risk_of(&app, &shoppers[1]).await.expect("still flagged");
    signal(&risk, "shared_customer_phone");

    pool.close();
    app.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn a_score_drop_opens_a_review() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let mut owner = connect(&app.db.owner_url).await;
    let tx = tenant_tx(&mut owner, tenant.id).await;
    tx.execute(
        "INSERT INTO orders (tenant_id, id, channel, customer, subtotal_cents, total_cents,
             currency, status, created_at)
         SELECT $1, gen_random_uuid(), 'web', '{\"name\": \"C\", \"phone\": \"+5511955550000\"}',
                100, 100, 'BRL', 'delivered', now() - interval '10 days'
         FROM generate_series(1, 20)",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let good = recompute(&app, &tenant).await["score"].as_i64().unwrap();
    assert!(risk_of(&app, &tenant).await.is_none());
    let tx = tenant_tx(&mut owner, tenant.id).await;
    tx.execute(
        "UPDATE orders SET status = 'cancelled' WHERE tenant_id = $1",
        &[&tenant.id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let bad = recompute(&app, &tenant).await["score"].as_i64().unwrap();
    assert!(good - bad >= 20, "{good} -> {bad}");
    let risk = risk_of(&app, &tenant).await.expect("a review");
    assert_eq!(
        risk["review_reason"],
        format!("The trust score dropped from {good} to {bad}.")
    );
    assert_eq!(risk["risk_level"], "none");
    assert_eq!(risk["score"], bad);
}

#[tokio::test]
async fn failed_authentications_by_strangers_never_lower_a_tenants_standing() {
    use futures_util::future::join_all;

    let app = TestApp::spawn().await;
    let tenant = premium_in_good_standing(&app).await;
    let before = recompute(&app, &tenant).await;
    assert_eq!(before["level"], 3, "{before}");
    assert!(before["grace"].is_null(), "{before}");
    assert!(risk_of(&app, &tenant).await.is_none());

    // A stranger sends 1,050 garbage API keys that name the tenant, 25 at a time.
    let garbage = format!("cck_{}{}", "A".repeat(43), tenant.id.simple());
    for _ in 0..42 {
        let calls = (0..25).map(|_| app.get("/api/v1/products").token(&garbage).send());
        for answer in join_all(calls).await {
            answer.expect_problem(401, "unauthorized");
        }
    }
    // Each is recorded in the tenant's log (SPEC §7), by the batch writer.
    let mut owner = connect(&app.db.owner_url).await;
    let mut logged = 0;
    for _ in 0..100 {
        logged = tenant_tx(&mut owner, tenant.id)
            .await
            .query_one(
                "SELECT count(*) FROM activities WHERE tenant_id = $1 AND action = 'auth.failed'",
                &[&tenant.id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if logged == 1050 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logged, 1050);

    // Platform admins see the burst; the tenant's level, score, review and grace are as before.
    let after = recompute(&app, &tenant).await;
    let risk = risk_of(&app, &tenant).await.expect("the signal is listed");
    let burst = signal(&risk, "auth_failure_burst");
    assert_eq!(
        (&burst["severity"], &burst["value"]),
        (&json!("high"), &json!(1050.0))
    );
    assert!(risk["review_opened_at"].is_null(), "{risk}");
    assert!(risk["review_reason"].is_null(), "{risk}");
    assert_eq!(risk["status"], "active");
    assert_eq!(
        (&after["level"], &after["score"], &after["grace"]),
        (&before["level"], &before["score"], &before["grace"]),
        "{after}"
    );
    let compliance = after["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "compliance_flags")
        .unwrap();
    assert_eq!(compliance["value"], 0.0);
    let no_review = after["factors"].to_string();
    assert!(!no_review.contains("auth_failure"), "{no_review}");
    let actions: Vec<Value> = trust_activities(&app, &tenant)
        .await
        .into_iter()
        .map(|a| a["action"].clone())
        .collect();
    assert_eq!(
        actions,
        [json!("trust.level_changed")],
        "only the fixture's"
    );
    // Recomputed again (the job runs every few minutes), nothing accumulates.
    let again = recompute(&app, &tenant).await;
    assert_eq!(
        (&again["level"], &again["score"], &again["grace"]),
        (&before["level"], &before["score"], &before["grace"])
    );
    assert!(risk_of(&app, &tenant).await.unwrap()["review_opened_at"].is_null());
}

#[tokio::test]
async fn an_admins_reactivation_sticks_until_new_evidence_arrives() {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(database().await, Some(clock.clone()), |_| {}).await;
    let tenant = app.tenant().await;
    let status = || async {
        app.get("/api/v1/tenant")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200)
            .body
    };
    // Read straight from the log: a suspended tenant's members cannot list activities.
    let suspensions = || async {
        let mut owner = connect(&app.db.owner_url).await;
        tenant_tx(&mut owner, tenant.id)
            .await
            .query_one(
                "SELECT count(*) FROM activities
                 WHERE tenant_id = $1 AND action = 'trust.suspended'",
                &[&tenant.id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    seed_orders_at(&app, &tenant, 250, "pending", "+5511966660001", clock.now()).await;
    recompute(&app, &tenant).await;
    assert_eq!(status().await["status"], "suspended");

    // An admin looks and reactivates it. The burst is still in its one-hour window, for
    // every recompute of the next hour, yet the tenant stays active.
    clock.advance(chrono::Duration::minutes(1));
    app.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect(200);
    for _ in 0..3 {
        recompute(&app, &tenant).await;
        assert_eq!(status().await["status"], "active");
        clock.advance(chrono::Duration::minutes(10));
    }
    let risk = risk_of(&app, &tenant).await.expect("still listed");
    assert_eq!(signal(&risk, "order_velocity")["severity"], "critical");
    assert_eq!(risk["status"], "active");
    assert_eq!(suspensions().await, 1);
    // Evidence newer than the reactivation suspends it again, and says so.
    seed_orders_at(&app, &tenant, 250, "pending", "+5511966660002", clock.now()).await;
    recompute(&app, &tenant).await;
    let seen = status().await;
    assert_eq!(seen["status"], "suspended");
    let why = seen["status_reason"].as_str().unwrap();
    assert!(
        why.contains("250 orders") && why.contains("since the reactivation"),
        "{why}"
    );
    assert_eq!(suspensions().await, 2);
}

/// Whether the tenant has an open review, and its entry of the risk list.
async fn review(app: &TestApp, tenant: &TestTenant) -> (bool, Value) {
    let risk = risk_of(app, tenant).await.expect("listed");
    (risk["review_opened_at"].is_string(), risk)
}

/// The trust recompute job of the server on `db`, reading `clock`, as a second instance would.
fn recompute_job(
    db: &convcommerce::db::bootstrap::Provisioned,
    clock: &ManualClock,
) -> (Db, TrustRecompute) {
    let pool = Db::connect(&SecretString::from(db.app_url.clone()), 2, 0).unwrap();
    let metrics = Arc::new(Metrics::default());
    let directory = Directory::new(pool.clone(), metrics, Duration::from_secs(30));
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let job = TrustRecompute {
        db: pool.clone(),
        trust: Trust::new(
            pool.clone(),
            clock.clone(),
            Duration::from_secs(7 * 86_400),
            directory,
            Arc::new(NoSink),
            Notifier::offline(clock.clone()),
        ),
        clock,
    };
    (pool, job)
}

#[tokio::test]
async fn an_admins_override_closes_the_review_and_sticks_until_new_evidence_arrives() {
    let db = private_database().await;
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(db.clone(), Some(clock.clone()), |_| {}).await;
    let (pool, job) = recompute_job(&db, &clock);
    // One tenant with a cancellation burst; one whose customer phone ordered at ten others.
    let cancelling = app.tenant().await;
    seed_orders_at(
        &app,
        &cancelling,
        12,
        "cancelled",
        "+5511977000001",
        clock.now(),
    )
    .await;
    let sharing = app.tenant().await;
    seed_orders_at(&app, &sharing, 1, "pending", "+5511977000002", clock.now()).await;
    for _ in 0..10 {
        let other = app.tenant().await;
        seed_orders_at(&app, &other, 1, "pending", "+5511977000002", clock.now()).await;
    }
    job.run_once().await.unwrap();
    let (open, risk) = review(&app, &cancelling).await;
    assert!(open, "{risk}");
    assert!(
        risk["review_reason"]
            .as_str()
            .unwrap()
            .contains("cancellation_burst"),
        "{risk}"
    );
    let (open, risk) = review(&app, &sharing).await;
    assert!(open, "{risk}");
    assert_eq!(signal(&risk, "shared_customer_phone")["severity"], "high");

    // An admin looks at both and sets their levels: the reviews close...
    clock.advance(chrono::Duration::minutes(1));
    for (tenant, locked) in [(&cancelling, false), (&sharing, true)] {
        let doc = app
            .put(&format!("/api/v1/admin/tenants/{}/trust", tenant.id))
            .user(ADMIN)
            .json(&json!({"level": 2, "reason": "Checked with the seller", "locked": locked}))
            .send()
            .await
            .expect(200)
            .body;
        assert_eq!(doc["level"], 2);
        assert!(!review(&app, tenant).await.0);
    }
    // ...and stay closed while the bursts they dealt with are still in their windows: the
    // job's passes and a one-tenant recompute open none.
    for _ in 0..3 {
        clock.advance(chrono::Duration::minutes(10));
        job.run_once().await.unwrap();
        recompute(&app, &cancelling).await;
        recompute(&app, &sharing).await;
        for tenant in [&cancelling, &sharing] {
            let (open, risk) = review(&app, tenant).await;
            assert!(!open, "{risk}");
        }
    }
    let (_, risk) = review(&app, &cancelling).await;
    assert_eq!(
        signal(&risk, "cancellation_burst")["value"],
        12.0,
        "still listed"
    );
    let (_, risk) = review(&app, &sharing).await;
    assert_eq!(signal(&risk, "shared_customer_phone")["value"], 10.0);

    // Evidence newer than the override opens a review again: a new burst of cancellations,
    // the shared phone ordering again.
    seed_orders_at(
        &app,
        &cancelling,
        10,
        "cancelled",
        "+5511977000003",
        clock.now(),
    )
    .await;
    seed_orders_at(&app, &sharing, 1, "pending", "+5511977000002", clock.now()).await;
    job.run_once().await.unwrap();
    let (open, risk) = review(&app, &cancelling).await;
    assert!(open, "{risk}");
    assert!(
        risk["review_reason"]
            .as_str()
            .unwrap()
            .contains("10 of the 10 orders"),
        "counted since the override: {risk}"
    );
    assert_eq!(signal(&risk, "cancellation_burst")["value"], 22.0);
    let (open, risk) = review(&app, &sharing).await;
    assert!(open, "{risk}");
    assert!(
        risk["review_reason"]
            .as_str()
            .unwrap()
            .contains("shared_customer_phone"),
        "{risk}"
    );

    pool.close();
    app.stop().await;
    drop_database(&db).await;
}

/// The trust recompute, counting its passes and how many run at once.
struct Counted {
    job: TrustRecompute,
    running: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
    passes: Arc<AtomicU32>,
}

impl Job for Counted {
    const NAME: &'static str = TrustRecompute::NAME;
    type Report = RecomputeReport;

    async fn run_once(&self) -> anyhow::Result<RecomputeReport> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let report = self.job.run_once().await;
        // Long enough that the other instance's tick falls inside the pass.
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.passes.fetch_add(1, Ordering::SeqCst);
        report
    }
}

#[tokio::test]
async fn two_instances_racing_the_recompute_run_one_pass_at_a_time() {
    let db = private_database().await;
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_full(db.clone(), Some(clock.clone()), |_| {}).await;
    let tenants = [app.tenant().await, app.tenant().await];
    let (running, most, passes) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let stop = CancellationToken::new();
    let interval = Duration::from_millis(600);
    // Two instances, each with its own pool, ticking at the same instants.
    let mut instances = Vec::new();
    for _ in 0..2 {
        let (pool, job) = recompute_job(&db, &clock);
        let counted = Counted {
            job,
            running: running.clone(),
            most: most.clone(),
            passes: passes.clone(),
        };
        let runner = jobs::spawn(
            counted,
            Scope::Cluster,
            interval,
            pool.clone(),
            Arc::new(Metrics::default()),
            stop.clone(),
        );
        instances.push((pool, runner));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.cancel();
    for (pool, runner) in instances {
        runner.await.unwrap();
        pool.close();
    }
    // Three ticks on each instance: one pass per tick, never two at once.
    assert_eq!(most.load(Ordering::SeqCst), 1);
    let ran = passes.load(Ordering::SeqCst);
    assert!((1..=3).contains(&ran), "{ran} passes");
    let owner = connect(&app.db.owner_url).await;
    for tenant in &tenants {
        let computed: Option<DateTime<Utc>> = owner
            .query_one(
                "SELECT trust_computed_at FROM tenants WHERE id = $1",
                &[&tenant.id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(computed.is_some(), "the passes recomputed every tenant");
    }
    app.stop().await;
    drop_database(&db).await;
}
