//! `convcommerce demo` as a newcomer runs it: seeds a tenant and prints what to call it with.

use std::process::Command;

use uuid::Uuid;

use crate::helpers::*;

/// Runs `convcommerce demo --slug <slug>` against the test database; returns the printed
/// tenant id and token, and whether it said it created the tenant.
fn run_demo(db_url: &str, slug: &str) -> (Uuid, String, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_convcommerce"))
        .args(["demo", "--slug", slug])
        .env("DATABASE_URL", db_url)
        .env("JWT_HS256_SECRET", SECRET)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
            .to_string()
    };
    (
        value("TENANT_ID=").parse().unwrap(),
        value("TOKEN="),
        stdout.contains("(created)"),
    )
}

#[tokio::test]
async fn demo_seeds_a_tenant_to_try_every_endpoint_with() {
    let app = TestApp::spawn().await;
    let slug = format!("demo-{}", Uuid::now_v7().simple());
    let (tenant, token, created) = run_demo(&app.db.app_url, &slug);
    assert!(created);
    let get = |path: &str| app.get(path).token(&token).tenant(tenant).send();

    let profile = get("/api/v1/seller-profile").await.expect(200);
    assert_eq!(profile.body["store_name"], "Demo Store");
    let ai = get("/api/v1/ai-config").await.expect(200);
    assert!(ai.body["updated_at"].is_string());
    let products = get("/api/v1/products").await.expect(200);
    assert!(products.body["items"].as_array().unwrap().len() >= 3);
    let orders = get("/api/v1/orders").await.expect(200);
    let mut statuses: Vec<&str> = orders.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["cancelled", "delivered", "pending", "shipped"]);
    let threads = get("/api/v1/conversations").await.expect(200);
    assert_eq!(threads.body["items"][0]["unread_count"], 1);
    let users = get("/api/v1/users").await.expect(200);
    assert_eq!(users.body["items"][0]["role"], "owner");
    // Premium, so every trust-gated feature answers.
    let trust = get("/api/v1/trust").await.expect(200);
    assert_eq!(
        (trust.body["level"].as_i64(), trust.body["locked"].as_bool()),
        (Some(3), Some(true))
    );
    assert!(
        trust.body["features"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["available"] == true)
    );
    for path in [
        "/api/v1/analytics/summary",
        "/api/v1/analytics/timeseries",
        "/api/v1/api-keys",
    ] {
        get(path).await.expect(200);
    }
    let settings = get("/api/v1/tenant/settings").await.expect(200);
    assert_eq!(settings.body["timezone"], "America/Sao_Paulo");

    // Running it again finds the same tenant instead of seeding twice.
    let (again, _, created) = run_demo(&app.db.app_url, &slug);
    assert_eq!((again, created), (tenant, false));
    let orders = get("/api/v1/orders").await.expect(200);
    assert_eq!(orders.body["items"].as_array().unwrap().len(), 4);
}
