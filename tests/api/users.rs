//! Members of a tenant: roles, validation, conflicts, pagination, the last owner.

use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn managers_add_users_and_staff_cannot() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (admin, _) = app.member(&tenant, "admin").await;
    let (staff, _) = app.member(&tenant, "staff").await;
    let body = |sub: &str, role: &str| json!({"external_id": sub, "email": format!("{sub}@x.example"), "role": role});

    app.post("/api/v1/users")
        .user(&staff)
        .tenant(tenant.id)
        .json(&body("s2", "staff"))
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.post("/api/v1/users")
        .user(&admin)
        .tenant(tenant.id)
        .json(&body("o2", "owner"))
        .send()
        .await
        .expect_problem(403, "forbidden");
    let created = app
        .post("/api/v1/users")
        .user(&admin)
        .tenant(tenant.id)
        .json(&body("s3", "staff"))
        .send()
        .await
        .expect(201);
    assert_eq!(created.body["role"], "staff");
    assert_eq!(created.body["email"], "s3@x.example");
    assert!(created.body["id"].as_str().unwrap().parse::<Uuid>().is_ok());
    // The new member can work at once (no stale "not a member" in the cache).
    app.get("/api/v1/users")
        .user("s3")
        .tenant(tenant.id)
        .send()
        .await
        .expect(200);

    app.post("/api/v1/users")
        .user(&admin)
        .tenant(tenant.id)
        .json(&body("s3", "staff"))
        .send()
        .await
        .expect_problem(409, "user_exists");
    app.post("/api/v1/users")
        .user(&admin)
        .tenant(tenant.id)
        .json(&json!({"external_id": "s4", "email": "S3@x.example", "role": "staff"}))
        .send()
        .await
        .expect_problem(409, "email_taken");
    app.post("/api/v1/users")
        .owner_of(&tenant)
        .json(&body("o2", "owner"))
        .send()
        .await
        .expect(201);
}

#[tokio::test]
async fn invalid_users_are_refused_with_their_fields_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let bad = app
        .post("/api/v1/users")
        .owner_of(&tenant)
        .json(&json!({"external_id": "has space", "email": "nope", "role": "staff"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["external_id", "email"]);
    let wrong_role = app
        .post("/api/v1/users")
        .owner_of(&tenant)
        .json(&json!({"external_id": "x", "email": "x@x.example", "role": "emperor"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(wrong_role.body["errors"][0]["field"], "role");
    let unknown = app.post("/api/v1/users").owner_of(&tenant)
        .json(&json!({"external_id": "x", "email": "x@x.example", "role": "staff", "tenant_id": Uuid::now_v7()}))
        .send().await.expect_problem(422, "validation_failed");
    assert!(
        unknown.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tenant_id")
    );
    app.post("/api/v1/users")
        .owner_of(&tenant)
        .body("application/json", "{not json")
        .send()
        .await
        .expect_problem(400, "malformed_json");
    app.post("/api/v1/users")
        .owner_of(&tenant)
        .body("text/plain", "hello")
        .send()
        .await
        .expect_problem(415, "unsupported_media_type");

    let list = app
        .get("/api/v1/users")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn another_tenants_user_is_not_found() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let (_, b_user) = app.member(&b, "staff").await;
    let path = format!("/api/v1/users/{b_user}");
    app.get(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.patch(&path)
        .owner_of(&a)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect_problem(404, "not_found");
    app.delete(&path)
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.get("/api/v1/users/not-a-uuid")
        .owner_of(&a)
        .send()
        .await
        .expect_problem(404, "not_found");
    let still = app.get(&path).owner_of(&b).send().await.expect(200);
    assert_eq!(still.body["role"], "staff");
}

#[tokio::test]
async fn roles_govern_changes_and_the_last_owner_stays() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (admin, admin_id) = app.member(&tenant, "admin").await;
    let (_, staff_id) = app.member(&tenant, "staff").await;
    let owners = app
        .get("/api/v1/users?limit=100")
        .owner_of(&tenant)
        .send()
        .await;
    let owner_id = owners.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["role"] == "owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Admins manage staff but not owners.
    app.patch(&format!("/api/v1/users/{staff_id}"))
        .user(&admin)
        .tenant(tenant.id)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect(200);
    app.patch(&format!("/api/v1/users/{owner_id}"))
        .user(&admin)
        .tenant(tenant.id)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.patch(&format!("/api/v1/users/{admin_id}"))
        .user(&admin)
        .tenant(tenant.id)
        .json(&json!({"role": "owner"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.delete(&format!("/api/v1/users/{owner_id}"))
        .user(&admin)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(403, "forbidden");

    // The last owner can be neither demoted, deactivated nor deleted.
    for change in [json!({"role": "staff"}), json!({"is_active": false})] {
        app.patch(&format!("/api/v1/users/{owner_id}"))
            .owner_of(&tenant)
            .json(&change)
            .send()
            .await
            .expect_problem(409, "invalid_state");
    }
    app.delete(&format!("/api/v1/users/{owner_id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(409, "invalid_state");

    // A deactivated member loses access at once.
    app.patch(&format!("/api/v1/users/{admin_id}"))
        .owner_of(&tenant)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .expect(200);
    app.get("/api/v1/users")
        .user(&admin)
        .tenant(tenant.id)
        .send()
        .await
        .expect_problem(403, "tenant_access_denied");
}

#[tokio::test]
async fn two_owners_demoting_each_other_at_once_leave_one_owner() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (second, second_id) = app.member(&tenant, "owner").await;
    let list = app.get("/api/v1/users").owner_of(&tenant).send().await;
    let first_id = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["external_id"] == tenant.owner.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let demote = |actor: String, target: String| {
        app.patch(&format!("/api/v1/users/{target}"))
            .user(&actor)
            .tenant(tenant.id)
            .json(&json!({"role": "staff"}))
            .send()
    };
    let results = join_all([
        demote(tenant.owner.clone(), second_id.to_string()),
        demote(second.clone(), first_id.clone()),
    ])
    .await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    let after = app.get("/api/v1/users").owner_of(&tenant).send().await;
    let reader_ok = after.status == 200;
    let list = if reader_ok {
        after
    } else {
        app.get("/api/v1/users")
            .user(&second)
            .tenant(tenant.id)
            .send()
            .await
            .expect(200)
    };
    let owners = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "owner")
        .count();
    assert_eq!(owners, 1, "exactly one owner remains ({statuses:?})");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&409) || statuses.contains(&403),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn users_page_newest_first_with_opaque_cursors() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let mut created = vec![];
    for _ in 0..4 {
        created.push(app.member(&tenant, "staff").await.1.to_string());
    }
    let first = app
        .get("/api/v1/users?limit=3")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let ids: Vec<String> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [created[3].clone(), created[2].clone(), created[1].clone()]
    );
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let second = app
        .get(&format!("/api/v1/users?limit=3&cursor={cursor}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let rest: Vec<&str> = second.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest.len(), 2, "the last staff member and the owner");
    assert_eq!(rest[0], created[0]);
    assert!(second.body["next_cursor"].is_null());

    app.get("/api/v1/users?cursor=bogus")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(400, "invalid_cursor");
    app.get("/api/v1/users?limit=101")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn look_alike_emails_are_the_same_member() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let create = |sub: &str, email: &str| {
        app.post("/api/v1/users")
            .owner_of(&tenant)
            .json(&json!({"external_id": sub, "email": email, "role": "staff"}))
            .send()
    };
    let first = create("u1", "Jos\u{e9}@B\u{fc}cher.example")
        .await
        .expect(201);
    assert_eq!(first.body["email"], "jos\u{e9}@xn--bcher-kva.example");
    for (i, same) in [
        "jose\u{301}@bu\u{308}cher.example",
        "JOS\u{c9}@xn--bcher-kva.example",
        "jos\u{e9}@B\u{dc}CHER.EXAMPLE",
    ]
    .into_iter()
    .enumerate()
    {
        create(&format!("u-{i}"), same)
            .await
            .expect_problem(409, "email_taken");
    }
    create("u9", "jose@bucher.example").await.expect(201);
}
