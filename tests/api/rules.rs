//! Monitoring rules and alerts: CRUD and validation over HTTP, built-ins, the dry run, and the
//! engine driven through the library with hand-built events (two engines on one database).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use convcommerce::db::Db;
use convcommerce::monitoring::rules::engine::Engine;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestTenant, error_fields};

const RULES: &str = "/api/v1/monitoring/rules";
const ALERTS: &str = "/api/v1/monitoring/alerts";

fn engine(app: &TestApp) -> Engine {
    let db = Db::connect(&app.db.app_url.clone().into(), 4, 0).expect("a pool");
    Engine::new(db, Arc::new(()))
}

fn event(at: DateTime<Utc>, fields: Value) -> Map<String, Value> {
    let mut e = fields.as_object().unwrap().clone();
    e.insert("id".into(), json!(Uuid::now_v7().to_string()));
    e.insert("created_at".into(), json!(at.to_rfc3339()));
    e
}

async fn rules(app: &TestApp, t: &TestTenant) -> Vec<Value> {
    app.get(&format!("{RULES}?limit=100"))
        .owner_of(t)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn alerts(app: &TestApp, t: &TestTenant, query: &str) -> Vec<Value> {
    app.get(&format!("{ALERTS}?limit=100{query}"))
        .owner_of(t)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn create(app: &TestApp, t: &TestTenant, body: Value) -> Value {
    app.post(RULES)
        .owner_of(t)
        .json(&body)
        .send()
        .await
        .expect(201)
        .body
}

#[tokio::test]
async fn every_tenant_starts_with_the_five_builtins() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let mut keys: Vec<String> = rules(&app, &t)
        .await
        .iter()
        .inspect(|r| assert_eq!(r["builtin"], true, "{r}"))
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "auth_failure_burst",
            "destructive_delete",
            "rate_limit_hammering",
            "request_volume_anomaly",
            "server_error_burst"
        ]
    );
}

#[tokio::test]
async fn a_builtin_takes_its_own_body_back_and_changes_only_what_it_may() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let builtin = rules(&app, &t)
        .await
        .into_iter()
        .find(|r| r["key"] == "auth_failure_burst")
        .unwrap();
    let path = format!("{RULES}/{}", builtin["id"].as_str().unwrap());
    assert_eq!(builtin["cooldown_seconds"], 21600, "high: 6 h");
    let same = app
        .put(&path)
        .owner_of(&t)
        .json(&builtin)
        .send()
        .await
        .expect(200);
    assert_eq!(same.body["condition"], builtin["condition"]);

    let mut changed = builtin.clone();
    changed["enabled"] = json!(false);
    changed["severity"] = json!("critical");
    changed["cooldown_seconds"] = json!(600);
    changed["channels"] = json!(["in_app", "email"]);
    let saved = app
        .put(&path)
        .owner_of(&t)
        .json(&changed)
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body["enabled"], false);
    assert_eq!(saved.body["severity"], "critical");
    assert_eq!(saved.body["cooldown_seconds"], 600);

    for (field, value) in [
        (
            "condition",
            json!({"field": "action", "op": "eq", "value": "x"}),
        ),
        (
            "threshold",
            json!({"count": 1, "window_seconds": 60, "group_by": []}),
        ),
        ("name", json!("Renamed")),
    ] {
        let mut bad = saved.body.clone();
        bad[field] = value;
        let answer = app
            .put(&path)
            .owner_of(&t)
            .json(&bad)
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&answer), [field]);
    }
    app.delete(&path)
        .owner_of(&t)
        .send()
        .await
        .expect_problem(409, "invalid_state");
    let kept = app.get(&path).owner_of(&t).send().await.expect(200);
    assert_eq!(kept.body, saved.body, "nothing changed");
}

#[tokio::test]
async fn custom_rules_round_trip_with_the_effective_cooldown() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let body = json!({
        "name": "Night deletes",
        "severity": "medium",
        "condition": {"all": [
            {"field": "method", "op": "eq", "value": "DELETE"},
            {"field": "details.count", "op": "gte", "value": 10}
        ]},
        "threshold": {"count": 3, "window_seconds": 600, "group_by": ["actor"]},
        "schedule": {"timezone": "America/Sao_Paulo",
                     "windows": [{"days": ["mon", "fri"], "start": "22:00", "end": "06:00"}]},
        "recipients": {"roles": ["owner"]}
    });
    let rule = create(&app, &t, body.clone()).await;
    assert_eq!(rule["builtin"], false);
    assert_eq!(rule["key"], Value::Null);
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["cooldown_seconds"], 43200, "medium: 12 h");
    for field in ["condition", "threshold", "schedule", "recipients"] {
        assert_eq!(rule[field], body[field], "{field} read back as written");
    }
    let path = format!("{RULES}/{}", rule["id"].as_str().unwrap());
    let mut put = rule.clone();
    put["name"] = json!("Late deletes");
    put["condition"] = json!({"field": "method", "op": "eq", "value": "DELETE"});
    let saved = app
        .put(&path)
        .owner_of(&t)
        .json(&put)
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body["name"], "Late deletes");
    assert_eq!(saved.body["cooldown_seconds"], 43200);
    app.delete(&path).owner_of(&t).send().await.expect(204);
    app.get(&path)
        .owner_of(&t)
        .send()
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn an_invalid_rule_is_422_at_the_path_of_its_fault_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let leaf = json!({"field": "action", "op": "eq", "value": "x"});
    let base = json!({"name": "r", "severity": "low", "condition": leaf});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let cases = [
        (
            with(
                "condition",
                json!({"all": [leaf, {"field": "action", "op": "like", "value": "x"}]}),
            ),
            "condition.all[1].op",
        ),
        (
            with(
                "condition",
                json!({"any": [{"field": "status", "op": "gte", "value": "500"}]}),
            ),
            "condition.any[0].value",
        ),
        (
            with(
                "condition",
                json!({"field": "password", "op": "eq", "value": "x"}),
            ),
            "condition.field",
        ),
        (
            with(
                "condition",
                json!({"field": "route", "op": "regex", "value": "(a"}),
            ),
            "condition.value",
        ),
        (
            with(
                "condition",
                json!({"field": "route", "op": "regex", "value": "\\w{500}\\w{500}\\w{500}"}),
            ),
            "condition.value",
        ),
        (
            with("threshold", json!({"count": 2, "window_seconds": 604801})),
            "threshold.window_seconds",
        ),
        (
            with("threshold", json!({"count": 0, "window_seconds": 60})),
            "threshold.count",
        ),
        (
            with(
                "threshold",
                json!({"count": 2, "window_seconds": 60, "group_by": ["ip", "nope"]}),
            ),
            "threshold.group_by[1]",
        ),
        (
            with(
                "schedule",
                json!({"timezone": "UTC", "windows": [{"days": ["mon"], "start": "24:00", "end": "01:00"}]}),
            ),
            "schedule.windows[0].start",
        ),
        (
            with(
                "schedule",
                json!({"timezone": "Nowhere/City", "windows": [{"days": ["mon"], "start": "01:00", "end": "02:00"}]}),
            ),
            "schedule.timezone",
        ),
        (with("cooldown_seconds", json!(0)), "cooldown_seconds"),
        (with("severity", json!("severe")), "severity"),
        (
            with("recipients", json!({"user_ids": [Uuid::now_v7()]})),
            "recipients.user_ids[0]",
        ),
    ];
    for (body, field) in cases {
        let answer = app
            .post(RULES)
            .owner_of(&t)
            .json(&body)
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&answer), [field], "{body}");
    }
    let mut deep = leaf.clone();
    for _ in 0..20 {
        deep = json!({ "not": deep });
    }
    app.post(RULES)
        .owner_of(&t)
        .json(&with("condition", deep))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(rules(&app, &t).await.len(), 5, "only the built-ins");
}

#[tokio::test]
async fn rules_and_alerts_are_for_owners_and_admins_of_their_own_tenant() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    let (staff, _) = app.member(&t, "staff").await;
    let (admin, _) = app.member(&t, "admin").await;
    app.get(RULES)
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.get(ALERTS)
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.get(RULES)
        .user(&admin)
        .tenant(t.id)
        .send()
        .await
        .expect(200);

    let rule = create(
        &app,
        &t,
        json!({"name": "any", "severity": "critical",
               "condition": {"field": "action", "op": "eq", "value": "x"}}),
    )
    .await;
    let path = format!("{RULES}/{}", rule["id"].as_str().unwrap());
    app.get(&path)
        .owner_of(&other)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.put(&path)
        .owner_of(&other)
        .json(&rule)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.delete(&path)
        .owner_of(&other)
        .send()
        .await
        .expect_problem(404, "not_found");

    let engine = engine(&app);
    let fired = engine
        .evaluate(t.id, &[event(Utc::now(), json!({"action": "x"}))])
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    let alert = format!("{ALERTS}/{}", fired[0].id);
    for call in [
        app.get(&alert),
        app.post(&format!("{alert}/acknowledge")),
        app.post(&format!("{alert}/resolve")),
    ] {
        call.owner_of(&other)
            .send()
            .await
            .expect_problem(404, "not_found");
    }
    assert!(alerts(&app, &other, "").await.is_empty());
    app.get(&alert).owner_of(&t).send().await.expect(200);
}

#[tokio::test]
async fn the_dry_run_says_why() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let rule = json!({"name": "r", "severity": "low",
        "condition": {"all": [
            {"field": "action", "op": "eq", "value": "auth.failed"},
            {"field": "ip", "op": "starts_with", "value": "10."}
        ]},
        "schedule": {"timezone": "UTC", "windows": [{"days": ["mon"], "start": "22:00", "end": "02:00"}]}});
    let test = |event: Value| {
        app.post(&format!("{RULES}/test"))
            .owner_of(&t)
            .json(&json!({"rule": rule, "event": event}))
    };
    // 2026-01-06 is a Tuesday: 01:00 is inside Monday's window, 03:00 is not.
    let yes = test(json!({"action": "auth.failed", "ip": "10.1.1.1",
                          "created_at": "2026-01-06T01:00:00Z"}))
    .send()
    .await
    .expect(200);
    assert_eq!(yes.body["matched"], true, "{}", yes.body);
    let late = test(json!({"action": "auth.failed", "ip": "10.1.1.1",
                           "created_at": "2026-01-06T03:00:00Z"}))
    .send()
    .await
    .expect(200);
    assert_eq!(late.body["matched"], false);
    assert!(
        late.body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("inactive")
    );
    let no = test(json!({"action": "auth.failed", "created_at": "2026-01-06T01:00:00Z"}))
        .send()
        .await
        .expect(200);
    assert_eq!(no.body["matched"], false);
    let reasons: Vec<&str> = no.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("condition.all[1]") && r.contains("no such field")),
        "{reasons:?}"
    );
    let bad = app
        .post(&format!("{RULES}/test"))
        .owner_of(&t)
        .json(&json!({"rule": {"name": "r", "severity": "low",
                               "condition": {"field": "ip", "op": "nope", "value": 1}},
                      "event": {}}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["rule.condition.op"]);
}

#[tokio::test]
async fn two_engines_on_one_database_fire_once_per_group_and_cooldown() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let rule = create(
        &app,
        &t,
        json!({"name": "login burst", "severity": "high", "cooldown_seconds": 600,
               "condition": {"field": "action", "op": "eq", "value": "login.failed"},
               "threshold": {"count": 5, "window_seconds": 60, "group_by": ["ip"]}}),
    )
    .await;
    let (a, b) = (engine(&app), engine(&app));
    let start = Utc::now();
    // Group 1.1.1.1: 40 events within the window, half on each engine, in small batches
    // raced against each other; group 2.2.2.2: 4 events, below the threshold.
    let batches: Vec<Vec<Map<String, Value>>> = (0..8)
        .map(|batch| {
            (0..5)
                .map(|i| {
                    event(
                        start + Duration::milliseconds(batch * 100 + i),
                        json!({"action": "login.failed", "ip": "1.1.1.1"}),
                    )
                })
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
        let tenant = t.id;
        tasks.push(tokio::spawn(async move {
            engine.evaluate(tenant, &batch).await.unwrap().len()
        }));
    }
    let quiet: Vec<_> = (0..4)
        .map(|i| {
            event(
                start + Duration::seconds(i),
                json!({"action": "login.failed", "ip": "2.2.2.2"}),
            )
        })
        .collect();
    a.evaluate(t.id, &quiet[..2]).await.unwrap();
    b.evaluate(t.id, &quiet[2..]).await.unwrap();
    let mut fired = 0;
    for task in tasks {
        fired += task.await.unwrap();
    }
    assert_eq!(fired, 1, "one alert per rule and group, not per instance");
    let listed = alerts(&app, &t, "&status=firing&severity=high").await;
    assert_eq!(listed.len(), 1);
    let alert = &listed[0];
    assert_eq!(alert["rule_id"], rule["id"]);
    assert_eq!(alert["group_key"], r#"{"ip":"1.1.1.1"}"#);
    assert_eq!(alert["event_count"], 5);
    assert_eq!(alert["sample_activity_ids"].as_array().unwrap().len(), 5);

    // Still cooling down 5 minutes later; a fresh burst after the 10-minute cooldown fires.
    let burst = |at: DateTime<Utc>| -> Vec<_> {
        (0..5)
            .map(|i| {
                event(
                    at + Duration::milliseconds(i),
                    json!({"action": "login.failed", "ip": "1.1.1.1"}),
                )
            })
            .collect()
    };
    assert!(
        a.evaluate(t.id, &burst(start + Duration::minutes(5)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.evaluate(t.id, &burst(start + Duration::minutes(11)))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(alerts(&app, &t, "&severity=low").await.is_empty());
}

#[tokio::test]
async fn alerts_move_firing_acknowledged_resolved_and_stay_resolved() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    create(
        &app,
        &t,
        json!({"name": "each", "severity": "low",
               "condition": {"field": "resource_type", "op": "in", "value": ["order", "product"]}}),
    )
    .await;
    let engine = engine(&app);
    let now = Utc::now();
    let first = engine
        .evaluate(t.id, &[event(now, json!({"resource_type": "order"}))])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let path = format!("{ALERTS}/{}", first[0].id);
    let acked = app
        .post(&format!("{path}/acknowledge"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(acked.body["status"], "acknowledged");
    assert!(acked.body["acknowledged_at"].is_string());
    app.post(&format!("{path}/acknowledge"))
        .owner_of(&t)
        .send()
        .await
        .expect_problem(409, "invalid_state");
    let resolved = app
        .post(&format!("{path}/resolve"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(resolved.body["status"], "resolved");
    for action in ["acknowledge", "resolve"] {
        app.post(&format!("{path}/{action}"))
            .owner_of(&t)
            .send()
            .await
            .expect_problem(409, "invalid_state");
    }
    assert_eq!(alerts(&app, &t, "&status=resolved").await.len(), 1);
    assert!(alerts(&app, &t, "&status=firing").await.is_empty());
}

#[tokio::test]
async fn a_rule_change_applies_to_the_next_batch_and_builtins_fire() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let engine = engine(&app);
    let now = Utc::now();
    let failures: Vec<_> = (0..10)
        .map(|i| {
            event(
                now + Duration::seconds(i),
                json!({"action": "auth.failed", "category": "auth", "status": 401, "ip": "9.9.9.9"}),
            )
        })
        .collect();
    let builtin = rules(&app, &t)
        .await
        .into_iter()
        .find(|r| r["key"] == "auth_failure_burst")
        .unwrap();
    let path = format!("{RULES}/{}", builtin["id"].as_str().unwrap());
    let mut off = builtin.clone();
    off["enabled"] = json!(false);
    app.put(&path)
        .owner_of(&t)
        .json(&off)
        .send()
        .await
        .expect(200);
    // Warm the cache with the rule disabled, then enable it: the next batch sees it.
    assert!(engine.evaluate(t.id, &failures).await.unwrap().is_empty());
    app.put(&path)
        .owner_of(&t)
        .json(&builtin)
        .send()
        .await
        .expect(200);
    let later: Vec<_> = (0..10)
        .map(|i| {
            event(
                now + Duration::seconds(20 + i),
                json!({"action": "auth.failed", "status": 401, "ip": "9.9.9.9"}),
            )
        })
        .collect();
    let fired = engine.evaluate(t.id, &later).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].rule_id.unwrap().to_string(),
        builtin["id"].as_str().unwrap()
    );
    assert_eq!(fired[0].event_count, 10);
}

#[tokio::test]
async fn a_backtest_replays_the_activity_log_through_the_rule() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    let rule = create(
        &app,
        &t,
        json!({
            "name": "two new products within a minute",
            "severity": "critical",
            "condition": {"field": "action", "op": "eq", "value": "product.created"},
            "threshold": {"count": 2, "window_seconds": 60, "group_by": []},
        }),
    )
    .await;
    let since = Utc::now() - Duration::minutes(1);
    let mut products = vec![];
    for _ in 0..5 {
        products.push(app.product(&t, json!({})).await["id"].clone());
    }
    // Another tenant's activity is not the rule's to see.
    for _ in 0..3 {
        app.product(&other, json!({})).await;
    }
    let path = format!("{RULES}/{}/backtest", rule["id"].as_str().unwrap());
    let range = json!({"since": since, "until": Utc::now() + Duration::minutes(1)});
    let result = app
        .post(&path)
        .owner_of(&t)
        .json(&range)
        .send()
        .await
        .expect(200);
    assert_eq!(
        result.body["alerts"], 1,
        "one alert: the cooldown holds the rest"
    );
    assert_eq!(result.body["truncated"], false);
    assert!(result.body["scanned"].as_u64().unwrap() >= 5);
    let sample = &result.body["samples"][0];
    assert_eq!(sample["event_count"], 2);
    assert_eq!(sample["sample_activity_ids"].as_array().unwrap().len(), 2);

    let empty = json!({"since": Utc::now() - Duration::days(3), "until": since});
    let nothing = app
        .post(&path)
        .owner_of(&t)
        .json(&empty)
        .send()
        .await
        .expect(200);
    assert_eq!(nothing.body["alerts"], 0);

    for bad in [
        json!({"since": range["until"], "until": range["since"]}),
        json!({"since": Utc::now() - Duration::days(40), "until": Utc::now()}),
    ] {
        let refused = app.post(&path).owner_of(&t).json(&bad).send().await;
        assert_eq!(error_fields(&refused.expect(422)), ["until"]);
    }
    app.post(&path)
        .owner_of(&other)
        .json(&range)
        .send()
        .await
        .expect_problem(404, "not_found");
}

/// `(group_key, ...)` of a rule's window rows, sorted.
async fn window_groups(app: &TestApp, t: &TestTenant, rule: &str) -> Vec<String> {
    let mut client = crate::helpers::connect(&app.db.owner_url).await;
    let tx = crate::helpers::tenant_tx(&mut client, t.id).await;
    tx.query(
        "SELECT group_key FROM monitoring_rule_windows
         WHERE tenant_id = $1 AND rule_id = $2::text::uuid ORDER BY group_key",
        &[&t.id, &rule],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Runs `sql` as the migration role with `t` set (the windows force row-level security).
async fn as_owner(app: &TestApp, t: &TestTenant, sql: &str) {
    let mut client = crate::helpers::connect(&app.db.owner_url).await;
    let tx = crate::helpers::tenant_tx(&mut client, t.id).await;
    tx.batch_execute(sql).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_cleanup_prunes_idle_windows_and_caps_the_groups_of_a_rule() {
    use convcommerce::jobs::cleanup::{self, MAX_WINDOWS_PER_RULE};
    // A database of its own: the job visits every tenant.
    let app = TestApp::spawn_on(crate::helpers::private_database().await, |_| {}).await;
    let t = app.tenant().await;
    let rule = create(
        &app,
        &t,
        json!({"name": "per ip", "severity": "high", "cooldown_seconds": 600,
               "condition": {"field": "action", "op": "eq", "value": "login.failed"},
               "threshold": {"count": 5, "window_seconds": 60, "group_by": ["ip"]}}),
    )
    .await;
    let rule_id = rule["id"].as_str().unwrap();
    let now = Utc::now();
    let events: Vec<_> = ["1.1.1.1", "2.2.2.2", "3.3.3.3"]
        .iter()
        .map(|ip| {
            event(
                now,
                json!({"action": "login.failed", "ip": ip, "method": "POST"}),
            )
        })
        .collect();
    engine(&app).evaluate(t.id, &events).await.unwrap();
    let anomaly = rules(&app, &t)
        .await
        .into_iter()
        .find(|r| r["key"] == "request_volume_anomaly")
        .unwrap();
    let anomaly_id = anomaly["id"].as_str().unwrap();
    assert_eq!(window_groups(&app, &t, anomaly_id).await.len(), 1);
    // 1.1.1.1 idle past both the window (60 s) and the cooldown (600 s); 2.2.2.2 past the
    // window only (it may still be cooling down); the baseline's row idle for a day.
    as_owner(
        &app,
        &t,
        &format!(
            "UPDATE monitoring_rule_windows SET updated_at = now() - interval '11 minutes'
              WHERE group_key = '{{\"ip\":\"1.1.1.1\"}}';
             UPDATE monitoring_rule_windows SET updated_at = now() - interval '5 minutes'
              WHERE group_key = '{{\"ip\":\"2.2.2.2\"}}';
             UPDATE monitoring_rule_windows SET updated_at = now() - interval '1 day'
              WHERE rule_id = '{anomaly_id}';"
        ),
    )
    .await;
    let (db, store) = crate::cleanup::job_parts(&app);
    let report = cleanup::run_at(&db, &store, Utc::now()).await.unwrap();
    assert_eq!(report.rule_windows_pruned, 1);
    assert_eq!(
        window_groups(&app, &t, rule_id).await,
        [r#"{"ip":"2.2.2.2"}"#, r#"{"ip":"3.3.3.3"}"#]
    );
    assert_eq!(
        window_groups(&app, &t, anomaly_id).await.len(),
        1,
        "the baseline stays"
    );

    // Groups past the cap: the least recently active (the two ips) go first.
    as_owner(
        &app,
        &t,
        &format!(
            "INSERT INTO monitoring_rule_windows (tenant_id, rule_id, group_key, state, updated_at)
             SELECT '{tenant}', '{rule_id}', 'g' || n, '{{}}', now() + n * interval '1 millisecond'
             FROM generate_series(1, {MAX_WINDOWS_PER_RULE}) AS n",
            tenant = t.id
        ),
    )
    .await;
    let report = cleanup::run_at(&db, &store, Utc::now()).await.unwrap();
    assert_eq!(report.rule_windows_pruned, 2);
    let kept = window_groups(&app, &t, rule_id).await;
    assert_eq!(kept.len() as i64, MAX_WINDOWS_PER_RULE);
    assert!(kept.iter().all(|g| g.starts_with('g')), "{:?}", &kept[..3]);
}

#[tokio::test]
async fn two_servers_count_each_others_events_and_fire_once() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), |_| {}).await;
    let t = a.tenant().await;
    let rule = create(
        &a,
        &t,
        json!({"name": "catalogue burst", "severity": "medium", "cooldown_seconds": 3600,
               "condition": {"field": "action", "op": "eq", "value": "product.created"},
               "threshold": {"count": 6, "window_seconds": 600, "group_by": []}}),
    )
    .await;
    // Products `names`, alternately on each server, concurrently.
    let create_on_both = |names: std::ops::Range<u32>| {
        let creates = names.map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            app.post("/api/v1/products")
                .owner_of(&t)
                .json(&json!({"name": format!("P{i}"), "price_cents": 100, "currency": "USD"}))
                .send()
        });
        async {
            for created in futures_util::future::join_all(creates).await {
                created.expect(201);
            }
        }
    };
    // Three on each server: neither server alone reaches six.
    create_on_both(0..6).await;
    let fired = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        !alerts(&b, &t, "&status=firing").await.is_empty()
    })
    .await;
    assert!(fired, "six events over two servers fire the rule");
    // Six more, within the cooldown: still one alert, seen alike from both servers.
    create_on_both(6..12).await;
    // Once both servers evaluated them, the window holds the six (it cooled down, so it
    // did not fire).
    let evaluated = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        let mut client = crate::helpers::connect(&a.db.owner_url).await;
        let tx = crate::helpers::tenant_tx(&mut client, t.id).await;
        let held: i32 = tx
            .query_one(
                "SELECT jsonb_array_length(state -> 'events') FROM monitoring_rule_windows
                 WHERE tenant_id = $1 AND rule_id = $2::text::uuid",
                &[&t.id, &rule["id"].as_str().unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        held == 6
    })
    .await;
    assert!(evaluated);
    for app in [&a, &b] {
        let listed = alerts(app, &t, "").await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["rule_id"], rule["id"]);
        assert_eq!(listed[0]["event_count"], 6);
    }
}

/// Polls `tenant`'s alerts, straight from the database (a rate-limited owner cannot read
/// them over the API), until one of the built-in `key` is there.
async fn builtin_alert(app: &TestApp, t: &TestTenant, key: &str) -> (i64, String) {
    let mut owner = crate::helpers::connect(&app.db.owner_url).await;
    for _ in 0..100 {
        let tx = crate::helpers::tenant_tx(&mut owner, t.id).await;
        let found = tx
            .query_opt(
                "SELECT a.event_count, a.group_key FROM monitoring_alerts a
                 JOIN monitoring_rules r ON r.tenant_id = a.tenant_id AND r.id = a.rule_id
                 WHERE a.tenant_id = $1 AND r.key = $2",
                &[&t.id, &key],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if let Some(row) = found {
            return (row.get(0), row.get(1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{key} did not fire within 10 s");
}

#[tokio::test]
async fn destructive_deletes_and_rate_limit_hammering_fire_on_real_requests() {
    let app = TestApp::spawn().await;

    // Twenty deletes by one member within ten minutes.
    let t = app.tenant().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.product(&t, json!({})).await["id"].clone());
    }
    for id in &ids {
        app.delete(&format!("/api/v1/products/{}", id.as_str().unwrap()))
            .owner_of(&t)
            .send()
            .await
            .expect(204);
    }
    let (count, group) = builtin_alert(&app, &t, "destructive_delete").await;
    assert_eq!(count, 20);
    let owner_id = app
        .get("/api/v1/users")
        .owner_of(&t)
        .send()
        .await
        .expect(200)
        .body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(group.contains(&owner_id), "grouped by actor: {group}");
    let listed = alerts(&app, &t, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["severity"], "high");

    // Fifty rate-limit rejections from one address within five minutes.
    let hammered = app.tenant().await;
    app.set_limits(&hammered, json!({"requests_per_minute": 2}))
        .await;
    let mut refused = 0;
    for _ in 0..56 {
        let answer = app.get("/api/v1/products").owner_of(&hammered).send().await;
        if answer.status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 50, "{refused} refused");
    let (count, group) = builtin_alert(&app, &hammered, "rate_limit_hammering").await;
    assert_eq!(count, 50);
    assert!(group.contains("127.0.0.1"), "grouped by ip: {group}");
}
