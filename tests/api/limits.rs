//! Rate limits (in-process and Redis, across instances), their headers, fairness, usage
//! tracking and its flush, and quotas.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use convcommerce::clock::ManualClock;
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::*;

/// A clock stopped in the middle of a minute, so bursts never straddle a window boundary.
fn mid_minute() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 10, 12, 30, 30).unwrap())
}

async fn app_with_clock(clock: &ManualClock) -> TestApp {
    TestApp::spawn_full(database().await, Some(clock.clone()), |_| {}).await
}

fn count(responses: &[Response], status: u16) -> usize {
    responses
        .iter()
        .filter(|r| r.status.as_u16() == status)
        .count()
}

#[tokio::test]
async fn every_tenant_scoped_response_carries_the_headers() {
    let clock = mid_minute();
    let app = app_with_clock(&clock).await;
    let tenant = app.tenant().await;
    let first = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(first.header("x-ratelimit-limit-minute"), Some("60"));
    assert_eq!(first.header("x-ratelimit-remaining-minute"), Some("59"));
    assert_eq!(first.header("x-ratelimit-reset-minute"), Some("30"));
    assert_eq!(first.header("x-ratelimit-limit-hour"), Some("1000"));
    assert_eq!(first.header("x-ratelimit-remaining-hour"), Some("999"));
    assert_eq!(first.header("x-ratelimit-reset-hour"), Some("1770"));
    assert_eq!(first.header("x-ratelimit-limit-day"), Some("10000"));
    assert_eq!(first.header("x-ratelimit-remaining-day"), Some("9999"));
    assert_eq!(first.header("x-ratelimit-reset-day"), Some("41370"));
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""minute";q=60;w=60, "hour";q=1000;w=3600, "day";q=10000;w=86400"#)
    );
    assert_eq!(
        first.header("ratelimit"),
        Some(r#""minute";r=59;t=30, "hour";r=999;t=1770, "day";r=9999;t=41370"#)
    );
    // An error inside a tenant-scoped handler carries them too.
    let missing = app
        .get(&format!("/api/v1/users/{}", uuid::Uuid::now_v7()))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(missing.header("x-ratelimit-remaining-minute"), Some("58"));
    // Strangers naming the tenant neither see nor spend its limits.
    for _ in 0..5 {
        let denied = app
            .get("/api/v1/tenant")
            .user("stranger")
            .tenant(tenant.id)
            .send()
            .await;
        assert_eq!(denied.status, 403);
        assert!(denied.header("x-ratelimit-remaining-minute").is_none());
    }
    let after = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(after.header("x-ratelimit-remaining-minute"), Some("57"));
}

#[tokio::test]
async fn a_concurrent_burst_admits_exactly_the_limit() {
    let clock = mid_minute();
    let app = app_with_clock(&clock).await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"requests_per_minute": 10}))
        .await;
    let burst = (0..50).map(|_| app.get("/api/v1/tenant").owner_of(&tenant).send());
    let responses = join_all(burst).await;
    assert_eq!(count(&responses, 200), 10);
    assert_eq!(count(&responses, 429), 40);
    let refused = responses.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(refused.code(), "rate_limited");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(refused.header("x-ratelimit-remaining-minute"), Some("0"));
    assert_eq!(refused.body["window"], "minute");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("per minute")
    );
}

#[tokio::test]
async fn a_refused_request_counts_in_no_window() {
    let clock = mid_minute();
    let app = app_with_clock(&clock).await;
    let tenant = app.tenant().await;
    app.set_limits(
        &tenant,
        json!({"requests_per_minute": 3, "requests_per_hour": 5}),
    )
    .await;
    let call = || app.get("/api/v1/tenant").owner_of(&tenant).send();
    for _ in 0..3 {
        call().await.expect(200);
    }
    for _ in 0..4 {
        let refused = call().await.expect_problem(429, "rate_limited");
        assert_eq!(
            refused.header("x-ratelimit-remaining-hour"),
            Some("2"),
            "refusals cost nothing"
        );
    }
    clock.advance(chrono::Duration::seconds(60));
    call().await.expect(200);
    let last = call().await.expect(200);
    assert_eq!(last.header("x-ratelimit-remaining-hour"), Some("0"));
    assert_eq!(last.header("x-ratelimit-remaining-day"), Some("9995"));
    let hour = call().await.expect_problem(429, "rate_limited");
    assert_eq!(hour.body["window"], "hour");
    assert!(hour.body["detail"].as_str().unwrap().contains("per hour"));
    assert_eq!(
        hour.header("retry-after"),
        Some("1710"),
        "until the hour ends"
    );
}

/// The tenant's usage buckets of `granularity` in the database (as the app role).
async fn read_buckets(
    app_url: &str,
    tenant: &TestTenant,
    granularity: &str,
) -> Vec<(chrono::DateTime<Utc>, i64)> {
    let mut client = connect(app_url).await;
    let tx = tenant_tx(&mut client, tenant.id).await;
    let rows = tx
        .query(
            "SELECT bucket_start, requests FROM api_usage WHERE tenant_id = $1 AND granularity = $2 ORDER BY 1",
            &[&tenant.id, &granularity],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn the_day_resets_at_utc_midnight() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 10, 23, 59, 30).unwrap());
    let app = app_with_clock(&clock).await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"requests_per_day": 2}))
        .await;
    let call = || app.get("/api/v1/tenant").owner_of(&tenant).send();
    call().await.expect(200);
    call().await.expect(200);
    let refused = call().await.expect_problem(429, "rate_limited");
    assert_eq!(refused.body["window"], "day");
    assert_eq!(refused.header("retry-after"), Some("30"));
    clock.set(Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 1).unwrap());
    let next_day = call().await.expect(200);
    assert_eq!(next_day.header("x-ratelimit-remaining-day"), Some("1"));

    let db = app.db.clone();
    app.stop().await;
    let days = read_buckets(&db.app_url, &tenant, "day").await;
    assert_eq!(
        days,
        vec![
            (Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap(), 2),
            (Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0).unwrap(), 1)
        ]
    );
}

#[tokio::test]
async fn every_admitted_request_is_counted_after_shutdown() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("USAGE_FLUSH_MILLISECONDS".into(), "3600000".into());
    })
    .await;
    let tenant = app.tenant().await;
    let calls = (0..25).map(|_| app.get("/api/v1/tenant").owner_of(&tenant).send());
    assert_eq!(count(&join_all(calls).await, 200), 25);
    let db = app.db.clone();
    app.stop().await;
    let mut totals = vec![];
    for granularity in ["minute", "hour", "day"] {
        let rows = read_buckets(&db.app_url, &tenant, granularity).await;
        totals.push(rows.iter().map(|(_, n)| n).sum::<i64>());
    }
    assert_eq!(
        totals,
        [25, 25, 25],
        "the final flush wrote every admitted request"
    );
}

#[tokio::test]
async fn usage_shows_live_counters_and_flushed_history() {
    let clock = mid_minute();
    let app = TestApp::spawn_full(database().await, Some(clock.clone()), |vars| {
        vars.insert("USAGE_FLUSH_MILLISECONDS".into(), "50".into());
    })
    .await;
    let tenant = app.tenant().await;
    for _ in 0..4 {
        app.get("/api/v1/tenant")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
    }
    let mut usage = app
        .get("/api/v1/tenant/usage")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        usage.body["minute"]["used"], 5,
        "the usage call counts itself"
    );
    assert_eq!(usage.body["minute"]["remaining"], 55);
    assert_eq!(usage.body["minute"]["reset_seconds"], 30);
    assert_eq!(usage.body["day"]["limit"], 10000);
    for _ in 0..100 {
        if usage.body["history"]["minute"][0]["requests"]
            .as_i64()
            .unwrap_or(0)
            >= 5
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        usage = app
            .get("/api/v1/tenant/usage")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
    }
    let minute = &usage.body["history"]["minute"][0];
    assert_eq!(minute["start"], "2026-03-10T12:30:00Z");
    assert!(minute["requests"].as_i64().unwrap() >= 5, "{}", usage.body);
    assert_eq!(
        usage.body["history"]["day"][0]["start"],
        "2026-03-10T00:00:00Z"
    );

    // Platform admins read any tenant's usage; members of another tenant cannot.
    let admin_view = app
        .get(&format!("/api/v1/admin/tenants/{}/usage", tenant.id))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert!(admin_view.body["minute"]["used"].as_u64().unwrap() >= 6);
    let other = app.tenant().await;
    app.get(&format!("/api/v1/admin/tenants/{}/usage", tenant.id))
        .user(&other.owner)
        .send()
        .await
        .expect_problem(403, "forbidden");
}

#[tokio::test]
async fn a_hammering_tenant_does_not_starve_another() {
    let clock = mid_minute();
    let app = app_with_clock(&clock).await;
    let (noisy, quiet) = (app.tenant().await, app.tenant().await);
    app.set_limits(&noisy, json!({"requests_per_minute": 5}))
        .await;
    // Warm both tenants' cache entries until a round costs no lookup (the limit change's
    // NOTIFY echo may evict the noisy tenant once more); each round in a fresh minute.
    for _ in 0..50 {
        clock.advance(chrono::Duration::seconds(60));
        let before = app.metric("convcommerce_directory_lookups_total").await;
        for tenant in [&noisy, &quiet] {
            app.get("/api/v1/tenant")
                .owner_of(tenant)
                .send()
                .await
                .expect(200);
        }
        if app.metric("convcommerce_directory_lookups_total").await == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(chrono::Duration::seconds(60));
    let lookups_before = app.metric("convcommerce_directory_lookups_total").await;

    let hammer = (0..50).map(|_| app.get("/api/v1/users").owner_of(&noisy).send());
    let polite = (0..20).map(|_| app.get("/api/v1/users").owner_of(&quiet).send());
    let (hammered, served) = tokio::join!(join_all(hammer), join_all(polite));
    assert_eq!(count(&hammered, 200), 5);
    assert_eq!(count(&hammered, 429), 45);
    assert_eq!(
        count(&served, 200),
        20,
        "the other tenant is served in full"
    );
    assert_eq!(
        app.metric("convcommerce_directory_lookups_total").await,
        lookups_before,
        "refusals cost no database lookups"
    );
    assert_eq!(
        app.metric("convcommerce_rate_limit_decisions_total{kind=\"refused\"}")
            .await,
        45.0
    );
}

#[tokio::test]
async fn redis_keeps_the_limit_exact_across_two_instances() {
    let redis = RedisServer::start();
    let clock = mid_minute();
    let db = database().await;
    let url = redis.url();
    let with_redis = |vars: &mut std::collections::BTreeMap<String, String>| {
        vars.insert("REDIS_URL".into(), url.clone());
    };
    let one = TestApp::spawn_full(db.clone(), Some(clock.clone()), with_redis).await;
    let two = TestApp::spawn_full(db, Some(clock.clone()), with_redis).await;
    let tenant = one.tenant().await;
    one.set_limits(&tenant, json!({"requests_per_minute": 10}))
        .await;
    let burst = (0..60).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        app.get("/api/v1/tenant").owner_of(&tenant).send()
    });
    let responses = join_all(burst).await;
    assert_eq!(
        count(&responses, 200),
        10,
        "ten admitted between both instances"
    );
    assert_eq!(count(&responses, 429), 50);
    for app in [&one, &two] {
        app.get("/health/ready").send().await.expect(200);
        assert_eq!(
            app.metric("convcommerce_rate_limit_fallbacks_total").await,
            0.0
        );
    }
}

#[tokio::test]
async fn a_redis_outage_falls_back_and_recovers() {
    let mut redis = RedisServer::start();
    let clock = mid_minute();
    let url = redis.url();
    let app = TestApp::spawn_full(database().await, Some(clock.clone()), |vars| {
        vars.insert("REDIS_URL".into(), url);
    })
    .await;
    let tenant = app.tenant().await;
    let call = || app.get("/api/v1/tenant").owner_of(&tenant).send();
    let shared = call().await.expect(200);
    assert_eq!(shared.header("x-ratelimit-remaining-minute"), Some("59"));

    redis.kill();
    for _ in 0..10 {
        let response = call().await.expect(200);
        assert!(response.header("x-ratelimit-remaining-minute").is_some());
    }
    assert!(app.metric("convcommerce_rate_limit_fallbacks_total").await >= 10.0);
    assert_eq!(
        app.metric("convcommerce_rate_limit_redis_healthy").await,
        0.0
    );
    app.get("/health/ready")
        .send()
        .await
        .expect_problem(503, "service_unavailable");

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        call().await.expect(200);
        if app.metric("convcommerce_rate_limit_redis_healthy").await == 1.0 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "decisions go back to Redis once it answers");
    let back = call().await.expect(200);
    // The restarted Redis is empty: its count starts again from this request.
    assert!(
        back.header("x-ratelimit-remaining-minute")
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 55
    );
    // Readiness reuses a probe for a second.
    assert!(
        eventually(Duration::from_secs(3), || async {
            app.get("/health/ready").send().await.status == 200
        })
        .await
    );
}

#[tokio::test]
async fn concurrent_creates_admit_exactly_the_room_left() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"max_users": 4})).await;
    let creates = (0..50).map(|i| {
        app.post("/api/v1/users").owner_of(&tenant).json(&json!({
            "external_id": format!("racer-{i}"), "email": format!("racer-{i}@x.example"), "role": "staff"
        })).send()
    });
    let responses = join_all(creates).await;
    assert_eq!(
        count(&responses, 201),
        3,
        "the owner plus three fill a quota of four"
    );
    let refused = responses.iter().find(|r| r.status == 403).unwrap();
    assert_eq!(refused.code(), "quota_exceeded");
    assert_eq!(refused.body["quota"], "users");
    assert_eq!(refused.body["used"], 4);
    assert_eq!(refused.body["limit"], 4);

    let quotas = app
        .get("/api/v1/tenant/quotas")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(quotas.body["users"], json!({"used": 4, "limit": 4}));
    assert_eq!(quotas.body["products"], json!({"used": 0, "limit": 1000}));
    assert_eq!(quotas.body["storage_bytes"]["limit"], 1073741824);

    // Deleting frees room.
    let victim = responses.iter().find(|r| r.status == 201).unwrap().body["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.delete(&format!("/api/v1/users/{victim}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(204);
    app.post("/api/v1/users")
        .owner_of(&tenant)
        .json(&json!({"external_id": "late", "email": "late@x.example", "role": "staff"}))
        .send()
        .await
        .expect(201);
    let admin_view = app
        .get(&format!("/api/v1/admin/tenants/{}/quotas", tenant.id))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_eq!(admin_view.body["users"]["used"], 4);
}

#[tokio::test]
async fn the_product_quota_holds_at_the_database() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.set_limits(&tenant, json!({"max_products": 2})).await;
    let mut client = connect(&app.db.app_url).await;
    let insert = "INSERT INTO products (tenant_id, id, name, price_cents, currency) VALUES ($1, $2, 'p', 100, 'USD')";
    let tx = tenant_tx(&mut client, tenant.id).await;
    for _ in 0..2 {
        tx.execute(insert, &[&tenant.id, &uuid::Uuid::now_v7()])
            .await
            .unwrap();
    }
    let err = tx
        .execute(insert, &[&tenant.id, &uuid::Uuid::now_v7()])
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.constraint(), Some("quota_products"));
    assert_eq!(
        db_err.code(),
        &tokio_postgres::error::SqlState::CHECK_VIOLATION
    );
}

#[tokio::test]
async fn the_database_defaults_match_the_services() {
    let db = database().await;
    let client = connect(&db.app_url).await;
    let d = convcommerce::limits::Limits::DEFAULT;
    for (name, expected) in [
        ("requests_per_minute", d.requests_per_minute),
        ("requests_per_hour", d.requests_per_hour),
        ("requests_per_day", d.requests_per_day),
        ("max_products", d.max_products),
        ("max_users", d.max_users),
        ("max_storage_bytes", d.max_storage_bytes),
        ("conversation_retention_days", d.conversation_retention_days),
    ] {
        let row = client
            .query_one(
                "SELECT tenant_limit($1, $2)",
                &[&uuid::Uuid::now_v7(), &name],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), expected, "{name}");
    }
}

#[tokio::test]
async fn a_limit_change_reaches_every_instance_within_seconds() {
    let one = TestApp::spawn().await;
    let two = TestApp::spawn_on(one.db.clone(), |vars| {
        vars.insert("TENANT_CACHE_TTL_SECONDS".into(), "3600".into());
    })
    .await;
    let tenant = one.tenant().await;
    let limit = |app: &TestApp| {
        let call = app.get("/api/v1/tenant").owner_of(&tenant).send();
        async move {
            call.await
                .expect(200)
                .header("x-ratelimit-limit-minute")
                .map(str::to_string)
        }
    };
    assert_eq!(
        limit(&two).await.as_deref(),
        Some("60"),
        "instance two caches the tenant"
    );
    one.set_limits(&tenant, json!({"requests_per_minute": 500}))
        .await;
    let mut seen = None;
    for _ in 0..100 {
        seen = limit(&two).await;
        if seen.as_deref() == Some("500") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen.as_deref(),
        Some("500"),
        "well before the one-hour cache expiry"
    );
}
