//! SPEC §2 over HTTP: every error, in its order; suspension; caching and its invalidation.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn every_tenancy_error_in_its_order() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let owner = token(&a.owner);

    // 401 comes first, whatever the header says.
    app.get("/api/v1/tenant")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    app.get("/api/v1/tenant")
        .tenant("not-a-uuid")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    app.get("/api/v1/tenant")
        .token("garbage")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    app.get("/api/v1/tenant")
        .header("Authorization", &format!("Basic {owner}"))
        .tenant(a.id)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // Then the header.
    app.get("/api/v1/tenant")
        .token(&owner)
        .send()
        .await
        .expect_problem(400, "tenant_header_missing");
    for bad in ["not-a-uuid", "", "1234", "01a21f0b-75e0-7178-8630"] {
        app.get("/api/v1/tenant")
            .token(&owner)
            .header("X-Tenant-ID", bad)
            .send()
            .await
            .expect_problem(400, "tenant_header_invalid");
    }
    // Unknown tenant and foreign tenant: the same answer.
    let unknown = app
        .get("/api/v1/tenant")
        .token(&owner)
        .tenant(Uuid::now_v7())
        .send()
        .await;
    let foreign = app
        .get("/api/v1/tenant")
        .token(&owner)
        .tenant(b.id)
        .send()
        .await;
    let unknown = unknown.expect_problem(403, "tenant_access_denied");
    let foreign = foreign.expect_problem(403, "tenant_access_denied");
    assert_eq!(unknown.body["detail"], foreign.body["detail"]);
    // A platform admin is no member of a tenant by being an admin.
    app.get("/api/v1/users")
        .user(ADMIN)
        .tenant(a.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
    // The member itself gets through.
    let own = app
        .get("/api/v1/tenant")
        .token(&owner)
        .tenant(a.id)
        .send()
        .await
        .expect(200);
    assert_eq!(own.body["id"], a.id.to_string());
    assert_eq!(own.body["limits"]["requests_per_minute"], 60);
}

#[tokio::test]
async fn a_member_of_one_tenant_cannot_act_in_another() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let (_, b_staff_id) = app.member(&b, "staff").await;
    // A's owner naming B, on every tenant-scoped endpoint.
    for (method, path) in [
        ("GET", "/api/v1/tenant".to_string()),
        ("GET", "/api/v1/users".to_string()),
        ("GET", format!("/api/v1/users/{b_staff_id}")),
        ("PATCH", format!("/api/v1/users/{b_staff_id}")),
        ("DELETE", format!("/api/v1/users/{b_staff_id}")),
    ] {
        app.call(method.parse().unwrap(), &path)
            .user(&a.owner)
            .tenant(b.id)
            .json(&json!({"role": "owner"}))
            .send()
            .await
            .expect_problem(403, "tenant_access_denied");
    }
    // B's user, unchanged.
    let user = app
        .get(&format!("/api/v1/users/{b_staff_id}"))
        .owner_of(&b)
        .send()
        .await
        .expect(200);
    assert_eq!(user.body["role"], "staff");
}

#[tokio::test]
async fn a_suspended_tenant_sees_only_its_status() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.get("/api/v1/users")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);

    app.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect(200);
    app.get("/api/v1/users")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(403, "tenant_suspended");
    let status = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(status.body["status"], "suspended");
    // Outsiders still learn nothing, suspended or not.
    app.get("/api/v1/tenant")
        .user("stranger")
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");

    app.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect(200);
    app.get("/api/v1/users")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
}

fn lookups(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("convcommerce_directory_lookups_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn warm_requests_do_not_look_up_tenant_or_membership() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let call = || app.get("/api/v1/tenant").owner_of(&tenant).send();
    let metrics = || async {
        app.get("/metrics")
            .send()
            .await
            .body
            .as_str()
            .unwrap()
            .to_string()
    };
    call().await.expect(200);
    let warm = lookups(&metrics().await);
    assert!(warm >= 2, "the cold request looked both up");
    for _ in 0..20 {
        call().await.expect(200);
    }
    assert_eq!(
        lookups(&metrics().await),
        warm,
        "warm requests hit the cache only"
    );
}

#[tokio::test]
async fn revocations_reach_other_instances_before_the_cache_expires() {
    let one = TestApp::spawn().await;
    let two = TestApp::spawn_on(one.db.clone(), |vars| {
        vars.insert("TENANT_CACHE_TTL_SECONDS".into(), "3600".into());
    })
    .await;
    let tenant = one.tenant().await;
    let (staff, staff_id) = one.member(&tenant, "staff").await;
    // Warm instance two's caches.
    two.get("/api/v1/users")
        .user(&staff)
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);
    two.get("/api/v1/users")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);

    one.delete(&format!("/api/v1/users/{staff_id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    assert!(
        eventually(Duration::from_secs(5), || async {
            two.get("/api/v1/users")
                .user(&staff)
                .tenant(tenant.id)
                .send()
                .await
                .status
                == 403
        })
        .await,
        "a removed user loses access on every instance"
    );

    one.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect(200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            two.get("/api/v1/users")
                .owner_of(&tenant)
                .send()
                .await
                .code()
                == "tenant_suspended"
        })
        .await,
        "a suspension reaches every instance"
    );
}

#[tokio::test]
async fn random_tenant_ids_cost_the_database_a_bounded_number_of_lookups() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let lookups = || app.metric("convcommerce_directory_lookups_total");
    let before = lookups().await;
    let stranger = format!("stranger-{}", Uuid::now_v7().simple());
    let mut refused = 0;
    for i in 0..1_000 {
        let answer = app
            .get("/api/v1/products")
            .user(&stranger)
            .tenant(Uuid::now_v7())
            .send()
            .await;
        match answer.status.as_u16() {
            403 => assert_eq!(answer.code(), "tenant_access_denied"),
            429 => {
                refused += 1;
                assert_eq!(answer.code(), "rate_limited");
                assert!(answer.header("retry-after").is_some());
            }
            other => panic!("answer {other} to request {i}: {}", answer.body),
        }
        if i % 100 == 0 {
            // The real tenant keeps being served promptly.
            let started = std::time::Instant::now();
            app.get("/api/v1/tenant")
                .owner_of(&tenant)
                .send()
                .await
                .expect(200);
            assert!(started.elapsed() < Duration::from_millis(500));
        }
    }
    let spent = lookups().await - before;
    // 30 per caller per minute (the test may straddle a minute boundary: twice that).
    assert!(spent <= 60.0, "{spent} lookups reached the database");
    assert!(
        refused >= 1_000 - 60,
        "{refused} refused before the database"
    );
    assert!(
        app.metric("convcommerce_directory_lookups_refused_total")
            .await
            >= refused as f64
    );
}

/// Waits, if needed, until the current UTC minute has at least `seconds` left, so that a
/// per-minute budget is spent and checked within one minute.
async fn minute_with_room(seconds: u64) {
    let into = now() % 60;
    if into + seconds >= 60 {
        tokio::time::sleep(Duration::from_secs(60 - into)).await;
    }
}

#[tokio::test]
async fn a_stranger_to_real_tenants_spends_its_own_budget_only() {
    let app = TestApp::spawn().await;
    let mut tenants = vec![];
    for _ in 0..35 {
        tenants.push(app.new_tenant().await);
    }
    let (stranger, other) = (
        format!("stranger-{}", Uuid::now_v7().simple()),
        format!("other-{}", Uuid::now_v7().simple()),
    );
    let lookups = || app.metric(r#"convcommerce_directory_lookups_total{kind="membership"}"#);
    minute_with_room(20).await;
    let before = lookups().await;
    // Every tenant exists, so each request costs a membership lookup that misses.
    let mut answers = vec![];
    for tenant in &tenants {
        let answer = app
            .get("/api/v1/products")
            .user(&stranger)
            .tenant(tenant.id)
            .send()
            .await;
        answers.push((answer.status.as_u16(), answer.code().to_string()));
    }
    let denied = answers
        .iter()
        .filter(|a| *a == &(403, "tenant_access_denied".to_string()))
        .count();
    let refused = answers
        .iter()
        .filter(|a| *a == &(429, "rate_limited".to_string()))
        .count();
    assert_eq!((denied, refused), (30, 5), "{answers:?}");
    assert_eq!(
        lookups().await - before,
        30.0,
        "the refused ones never reached the database"
    );

    // Another caller's budget is its own, and members still get in.
    let last = &tenants[34];
    app.get("/api/v1/products")
        .user(&other)
        .tenant(last.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
    app.get("/api/v1/products")
        .owner_of(last)
        .send()
        .await
        .expect(200);
    app.get("/api/v1/products")
        .user(&stranger)
        .tenant(last.id)
        .send()
        .await
        .expect_problem(429, "rate_limited");
}

#[tokio::test]
async fn readiness_reuses_its_probe_for_a_second() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|vars| {
        vars.insert("REDIS_URL".into(), url);
    })
    .await;
    app.get("/health/ready").send().await.expect(200);
    let pool = || app.metric("convcommerce_db_pool_connections");
    let before = pool().await;
    let probes: Vec<_> = (0..200).map(|_| app.get("/health/ready").send()).collect();
    for answer in futures_util::future::join_all(probes).await {
        answer.expect(200);
    }
    assert!(
        pool().await <= before + 1.0,
        "200 concurrent probes take no more connections"
    );

    // Redis stops right after a probe: an answer that reaches the server within the second
    // after that probe can only be the reused result, 200; a fresh probe would fail. On a
    // machine too loaded to ask again within the second, the round is tried again.
    let mut reused = false;
    for _ in 0..5 {
        // The last result has expired, so the first request of the round probes.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let asked = std::time::Instant::now();
        app.get("/health/ready").send().await.expect(200);
        redis.kill();
        let again = app.get("/health/ready").send().await;
        if asked.elapsed() < Duration::from_millis(1_000) {
            again.expect(200);
            reused = true;
            break;
        }
        redis.restart();
        assert!(
            eventually(Duration::from_secs(5), || async {
                app.get("/health/ready").send().await.status == 200
            })
            .await
        );
    }
    assert!(reused, "a probe was asked again within its second");
    // Then the result expires, and the next probe finds Redis down.
    let down = eventually(Duration::from_secs(4), || async {
        app.get("/health/ready").send().await.status == 503
    })
    .await;
    assert!(down, "a new probe after the second");
    app.get("/health/ready")
        .send()
        .await
        .expect_problem(503, "service_unavailable");
}

#[tokio::test]
async fn an_instance_listens_on_one_connection_to_database_listen_url() {
    let db = database().await;
    let name = format!("listen-{}", Uuid::now_v7().simple());
    let separator = if db.app_url.contains('?') { '&' } else { '?' };
    let listen_url = format!("{}{separator}application_name={name}", db.app_url);
    let app = TestApp::spawn_on(db.clone(), |vars| {
        vars.insert("DATABASE_LISTEN_URL".into(), listen_url);
    })
    .await;
    let superuser = connect(&superuser_url().await).await;
    let listening = || async {
        superuser
            .query(
                "SELECT query FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            listening().await.iter().any(|q| q.starts_with("LISTEN"))
        })
        .await
    );
    // One connection follows both channels: the directory's and the hub's.
    let queries = listening().await;
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert!(
        queries[0].contains("convcommerce_directory"),
        "{}",
        queries[0]
    );
    assert!(queries[0].contains("convcommerce_events"), "{}", queries[0]);
    app.stop().await;
}
