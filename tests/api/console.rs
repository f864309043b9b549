//! `/console`: the live page, served by the binary and checked in a real headless Chromium.

use std::time::Duration;

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
