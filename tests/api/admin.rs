//! Platform administration of tenants.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn only_platform_admins_reach_admin_endpoints() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    app.get("/api/v1/admin/tenants")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    app.get("/api/v1/admin/tenants")
        .user(&tenant.owner)
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(&tenant.owner)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let unchanged = app
        .get(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_eq!(unchanged.body["status"], "active");
}

#[tokio::test]
async fn creating_a_tenant_creates_its_owner() {
    let app = TestApp::spawn().await;
    let slug = format!("shop-{}", Uuid::now_v7().simple());
    let created = app
        .post("/api/v1/admin/tenants")
        .user(ADMIN)
        .json(&json!({"name": "  Ana's Shop ", "slug": slug, "owner": {"external_id": "ana-1", "email": "Ana@Shop.Example"}}))
        .send()
        .await
        .expect(201);
    assert_eq!(created.body["name"], "Ana's Shop");
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["trust_level"], 0);
    let id = created.body["id"].as_str().unwrap();
    let users = app
        .get("/api/v1/users")
        .user("ana-1")
        .tenant(id)
        .send()
        .await
        .expect(200);
    assert_eq!(users.body["items"][0]["role"], "owner");
    assert_eq!(users.body["items"][0]["email"], "ana@shop.example");

    app.post("/api/v1/admin/tenants")
        .user(ADMIN)
        .json(&json!({"name": "Copy", "slug": slug, "owner": {"external_id": "x", "email": "x@x.example"}}))
        .send()
        .await
        .expect_problem(409, "slug_taken");
    let invalid = app
        .post("/api/v1/admin/tenants")
        .user(ADMIN)
        .json(
            &json!({"name": "", "slug": "Bad Slug", "owner": {"external_id": "", "email": "nope"}}),
        )
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(invalid.body["errors"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn limits_are_overridden_and_restored() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let path = format!("/api/v1/admin/tenants/{}", tenant.id);
    let changed = app
        .patch(&path)
        .user(ADMIN)
        .json(&json!({"limits": {"requests_per_minute": 5, "max_products": 10}}))
        .send()
        .await
        .expect(200);
    assert_eq!(changed.body["limits"]["requests_per_minute"], 5);
    assert_eq!(changed.body["limits"]["max_products"], 10);
    assert_eq!(changed.body["limits"]["requests_per_hour"], 1000);
    // The tenant sees its new limits at once.
    let seen = app
        .get("/api/v1/tenant")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(seen.body["limits"]["requests_per_minute"], 5);

    let restored = app
        .patch(&path)
        .user(ADMIN)
        .json(&json!({"limits": {"requests_per_minute": null}}))
        .send()
        .await
        .expect(200);
    assert_eq!(restored.body["limits"]["requests_per_minute"], 60);
    assert_eq!(
        restored.body["limits"]["max_products"], 10,
        "untouched limits stay"
    );

    for bad in [
        json!({"limits": {"requests_per_day": 0}}),
        json!({"status": "deleted"}),
        json!({"limits": {"speed": 1}}),
    ] {
        app.patch(&path)
            .user(ADMIN)
            .json(&bad)
            .send()
            .await
            .expect_problem(422, "validation_failed");
    }
    app.patch(&format!("/api/v1/admin/tenants/{}", Uuid::now_v7()))
        .user(ADMIN)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn tenants_are_listed_newest_first() {
    let app = TestApp::spawn().await;
    let older = app.tenant().await;
    let newer = app.tenant().await;
    let page = app
        .get("/api/v1/admin/tenants?limit=100")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    let ids: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let (older_pos, newer_pos) = (
        ids.iter().position(|i| *i == older.id.to_string()),
        ids.iter().position(|i| *i == newer.id.to_string()),
    );
    assert!(newer_pos.unwrap() < older_pos.unwrap());
    let first = app
        .get("/api/v1/admin/tenants?limit=1")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("more than one tenant exists");
    let second = app
        .get(&format!("/api/v1/admin/tenants?limit=1&cursor={cursor}"))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_ne!(first.body["items"][0]["id"], second.body["items"][0]["id"]);
}

#[tokio::test]
async fn platform_admin_reads_of_a_tenant_are_audit_events() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    for (path, action) in [
        (
            format!("/api/v1/admin/tenants/{}", tenant.id),
            "tenant.read",
        ),
        (
            format!("/api/v1/admin/tenants/{}/usage", tenant.id),
            "tenant.usage_read",
        ),
        (
            format!("/api/v1/admin/tenants/{}/quotas", tenant.id),
            "tenant.quotas_read",
        ),
        ("/api/v1/admin/tenants".to_string(), "tenants.listed"),
    ] {
        let metric = format!(r#"convcommerce_audit_events_total{{kind="{action}"}}"#);
        let before = app.metric(&metric).await;
        app.get(&path).user(ADMIN).send().await.expect(200);
        assert_eq!(app.metric(&metric).await, before + 1.0, "{action}");
    }
    // A refused read is no event.
    let metric = r#"convcommerce_audit_events_total{kind="tenant.read"}"#;
    let before = app.metric(metric).await;
    app.get(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(app.metric(metric).await, before);
}

/// The log lines written while a test runs, in the production (JSON) format.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures what this thread logs while the guard lives. A `#[tokio::test]` runtime polls
    /// every task on the test's thread, so the server's lines are among them.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_max_level(tracing::Level::INFO)
                .with_writer(self.clone())
                .finish(),
        )
    }

    /// The lines logged on the `audit` target.
    fn audit(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line["target"] == "audit")
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn platform_admin_actions_are_audit_lines_naming_actor_tenant_and_action() {
    let logs = Logs::default();
    let _capturing = logs.capture();
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let id = tenant.id.to_string();
    app.get(&format!("/api/v1/admin/tenants/{id}"))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    app.patch(&format!("/api/v1/admin/tenants/{id}"))
        .user(ADMIN)
        .json(&json!({"limits": {"max_users": 7}}))
        .send()
        .await
        .expect(200);
    // Refused, so no audit line.
    app.get(&format!("/api/v1/admin/tenants/{id}/usage"))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(403, "forbidden");

    let about_tenant: Vec<(String, String)> = logs
        .audit()
        .iter()
        .filter(|line| line["tenant_id"] == id.as_str())
        .map(|line| {
            assert_eq!(line["actor"], ADMIN, "{line}");
            assert_eq!(line["level"], "INFO", "{line}");
            (
                line["action"].as_str().unwrap().to_string(),
                line["details"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = about_tenant.iter().map(|(a, _)| a.as_str()).collect();
    // The fixture made the tenant through the admin API too.
    assert_eq!(
        actions,
        ["tenant.created", "tenant.read", "tenant.updated"],
        "{about_tenant:?}"
    );
    assert!(about_tenant[2].1.contains("max_users"), "{about_tenant:?}");
}

#[tokio::test]
async fn limits_above_their_bound_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    for (name, over) in [
        ("conversation_retention_days", 3_651_i64),
        ("requests_per_minute", 1_000_001),
        ("max_storage_bytes", (1_i64 << 40) + 1),
    ] {
        let answer = app
            .patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
            .user(ADMIN)
            .json(&json!({"status": "suspended", "limits": {name: over}}))
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&answer), vec![format!("limits.{name}")]);
    }
    let now = app
        .get(&format!("/api/v1/admin/tenants/{}", tenant.id))
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_eq!(now.body["status"], "active");
    assert_eq!(now.body["limits"]["conversation_retention_days"], 365);
}
