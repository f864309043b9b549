//! Trust gates (SPEC §6): every gated feature answers 403 `feature_not_available` with
//! `feature` and `required_level` below its level, after authentication and tenancy and
//! before the body or query is validated; at its level it works.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::trust::set_level;

/// Each gated call, its feature and level, with a body or query the gate must not read.
fn gated() -> Vec<(
    reqwest::Method,
    &'static str,
    Option<Value>,
    &'static str,
    i64,
)> {
    use reqwest::Method;
    vec![
        (
            Method::GET,
            "/api/v1/analytics/summary?since=yesterday",
            None,
            "analytics_summary",
            1,
        ),
        (
            Method::GET,
            "/api/v1/analytics/timeseries?interval=hour",
            None,
            "analytics_timeseries",
            2,
        ),
        (
            Method::POST,
            "/api/v1/products/bulk",
            Some(json!({"products": "none"})),
            "bulk_product_import",
            2,
        ),
        (
            Method::POST,
            "/api/v1/monitoring/rules",
            Some(json!({"name": 7})),
            "custom_monitoring_rules",
            2,
        ),
        (Method::GET, "/api/v1/api-keys?limit=0", None, "api_keys", 3),
        (
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"role": "emperor"})),
            "api_keys",
            3,
        ),
        (
            Method::DELETE,
            "/api/v1/api-keys/not-an-id",
            None,
            "api_keys",
            3,
        ),
        (
            Method::PUT,
            "/api/v1/tenant/settings",
            Some(json!({"timezone": "Mars/Olympus", "auto_confirm_orders": true})),
            "auto_confirm_orders",
            1,
        ),
        (
            Method::PUT,
            "/api/v1/tenant/settings",
            Some(json!({"timezone": 5, "auto_confirm_orders": true})),
            "auto_confirm_orders",
            1,
        ),
    ]
}

#[tokio::test]
async fn every_gate_refuses_below_its_level_before_reading_the_request() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let tenant = app.new_tenant().await;
    for level in 0..=3 {
        if level > 0 {
            set_level(&app, &tenant, level, true).await;
        }
        for (method, path, body, feature, required) in gated() {
            let mut call = app.call(method.clone(), path).owner_of(&tenant);
            if let Some(body) = &body {
                call = call.json(body);
            }
            let answer = call.send().await;
            if level < required {
                let answer = answer.expect_problem(403, "feature_not_available");
                assert_eq!(answer.body["feature"], feature, "{method} {path}");
                assert_eq!(answer.body["required_level"], required, "{method} {path}");
            } else {
                assert_ne!(
                    answer.code(),
                    "feature_not_available",
                    "{method} {path} at level {level}"
                );
                assert!(
                    [400, 404, 422].contains(&answer.status.as_u16()),
                    "{method} {path} at level {level}: the request itself is now read: {}",
                    answer.body
                );
            }
        }
        // The trust document lists the same features.
        let doc = app
            .get("/api/v1/trust")
            .owner_of(&tenant)
            .send()
            .await
            .expect(200);
        for feature in doc.body["features"].as_array().unwrap() {
            let required = feature["required_level"].as_i64().unwrap();
            assert_eq!(feature["available"], level >= required, "{feature}");
        }
    }
    // Authentication and tenancy come first.
    let low = app.new_tenant().await;
    app.get("/api/v1/analytics/summary")
        .tenant(low.id)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    app.get("/api/v1/analytics/summary")
        .user(&tenant.owner)
        .tenant(low.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
    app.get("/api/v1/analytics/summary")
        .user(&low.owner)
        .send()
        .await
        .expect_problem(400, "tenant_header_missing");
}

#[tokio::test]
async fn the_features_work_at_their_level() {
    let app = TestApp::spawn().await;
    let tenant = app.new_tenant().await;
    set_level(&app, &tenant, 1, true).await;
    app.get("/api/v1/analytics/summary")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    // Automatic confirmation at level 1: new orders start confirmed.
    app.put("/api/v1/tenant/settings")
        .owner_of(&tenant)
        .json(&json!({"timezone": "UTC", "auto_confirm_orders": true}))
        .send()
        .await
        .expect(200);
    let product = app.product(&tenant, json!({})).await;
    let order = json!({"customer": {"name": "Ana", "phone": "+5511912340001"},
                       "items": [{"product_id": product["id"], "quantity": 1}], "channel": "web"});
    let placed = app
        .post("/api/v1/orders")
        .owner_of(&tenant)
        .json(&order)
        .send()
        .await
        .expect(201);
    assert_eq!(placed.body["status"], "confirmed");
    // Below the level the setting stays but no longer applies.
    set_level(&app, &tenant, 0, true).await;
    let placed = app
        .post("/api/v1/orders")
        .owner_of(&tenant)
        .json(&order)
        .send()
        .await
        .expect(201);
    assert_eq!(placed.body["status"], "pending");

    // Custom rules at level 2; once demoted, a custom rule cannot be changed, a built-in can.
    set_level(&app, &tenant, 2, true).await;
    let rule = json!({"name": "Big orders", "severity": "low",
                      "condition": {"field": "action", "op": "eq", "value": "order.created"}});
    let custom = app
        .post("/api/v1/monitoring/rules")
        .owner_of(&tenant)
        .json(&rule)
        .send()
        .await
        .expect(201);
    set_level(&app, &tenant, 1, true).await;
    let refused = app
        .put(&format!(
            "/api/v1/monitoring/rules/{}",
            custom.body["id"].as_str().unwrap()
        ))
        .owner_of(&tenant)
        .json(&json!({"name": 12}))
        .send()
        .await
        .expect_problem(403, "feature_not_available");
    assert_eq!(refused.body["feature"], "custom_monitoring_rules");
    let rules = app
        .get("/api/v1/monitoring/rules?limit=100")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let builtin = rules.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["builtin"] == true)
        .unwrap()
        .clone();
    let mut changed = builtin.clone();
    changed["enabled"] = json!(false);
    app.put(&format!(
        "/api/v1/monitoring/rules/{}",
        builtin["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .json(&changed)
    .send()
    .await
    .expect(200);
    app.delete(&format!(
        "/api/v1/monitoring/rules/{}",
        custom.body["id"].as_str().unwrap()
    ))
    .owner_of(&tenant)
    .send()
    .await
    .expect(204);
}
