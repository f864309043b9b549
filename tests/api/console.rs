//! `/console`: the live page, served by the binary and checked in a real headless Chromium.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::*;

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = app.get(path).send().await.expect(200);
        assert!(response.header("content-type").unwrap().starts_with(kind));
        let policy = response.header("content-security-policy").unwrap();
        assert!(
            policy.contains("script-src 'self'"),
            "no inline script: {policy}"
        );
        assert!(policy.contains("frame-ancestors 'none'"));
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    }
}

#[tokio::test]
async fn the_console_loads_in_a_browser_under_its_policy() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::open(&format!("{}/console", app.base)).await;
    let loaded = browser
        .until(
            Duration::from_secs(10),
            "document.readyState === 'complete' && typeof connect === 'function'",
        )
        .await;
    assert!(
        loaded,
        "the page and its script load (the policy allows them)"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('status').dataset.state")
            .await,
        "idle"
    );
}

/// How many activity rows of `action` the page shows.
fn rows_of(action: &str) -> String {
    format!("document.querySelectorAll('#activity tr[data-action=\"{action}\"]').length")
}

#[tokio::test]
async fn the_console_shows_live_events_acknowledges_alerts_and_survives_a_restart() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.post("/api/v1/monitoring/rules")
        .owner_of(&tenant)
        .json(&json!({
            "name": "every new product",
            "severity": "critical",
            "condition": {"field": "action", "op": "eq", "value": "product.created"},
        }))
        .send()
        .await
        .expect(201);
    let page = format!(
        "{}/console#token={}&tenant={}",
        app.base,
        token(&tenant.owner),
        tenant.id
    );
    let mut browser = Browser::open(&page).await;
    let live = "document.getElementById('status').dataset.state === 'live'";
    assert!(
        browser.until(Duration::from_secs(10), live).await,
        "the page connects"
    );

    app.product(&tenant, json!({})).await;
    let shown = browser
        .until(
            Duration::from_secs(1),
            &format!("{} === 1", rows_of("product.created")),
        )
        .await;
    assert!(shown, "the product's activity shows within a second");
    let firing = "document.querySelector('#alerts tr[data-status=\"firing\"]') !== null";
    assert!(
        browser.until(Duration::from_secs(5), firing).await,
        "the alert shows"
    );
    browser
        .eval("document.querySelector('#alerts button[data-action=\"acknowledge\"]').click()")
        .await;
    let acknowledged =
        "document.querySelector('#alerts tr[data-status=\"acknowledged\"]') !== null";
    assert!(browser.until(Duration::from_secs(5), acknowledged).await);

    // The server restarts on the same port; the page reconnects, resumes (the new instance
    // cannot replay: reset, then the REST snapshot) and shows what happens next.
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let db = app.db.clone();
    app.stop().await;
    let reconnecting = "document.getElementById('status').dataset.state === 'reconnecting'";
    assert!(browser.until(Duration::from_secs(5), reconnecting).await);
    let app = TestApp::spawn_on(db, |vars| {
        vars.insert("PORT".into(), port);
    })
    .await;
    assert!(
        browser.until(Duration::from_secs(15), live).await,
        "the page reconnects"
    );
    app.product(&tenant, json!({})).await;
    let resumed = browser
        .until(
            Duration::from_secs(5),
            &format!("{} === 2", rows_of("product.created")),
        )
        .await;
    assert!(
        resumed,
        "after the restart the page shows both products' activity, once each"
    );
    assert!(
        browser.eval(acknowledged).await == json!(true),
        "the snapshot keeps the alert's state"
    );
}
