//! Conversations: threads per customer and channel, unread counts, paging, isolation.

use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) async fn say(
    app: &TestApp,
    tenant: &TestTenant,
    handle: &str,
    channel: &str,
    sender: &str,
    text: &str,
) -> Value {
    app.post("/api/v1/conversations/messages")
        .owner_of(tenant)
        .json(&json!({"customer_handle": handle, "channel": channel, "sender_type": sender, "message": text}))
        .send()
        .await
        .expect(201)
        .body
}

#[tokio::test]
async fn threads_show_their_last_message_and_unread_count() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let first = say(
        &app,
        &tenant,
        "+5511912345678",
        "whatsapp",
        "customer",
        "Oi!",
    )
    .await;
    let second = say(
        &app,
        &tenant,
        "+5511912345678",
        "whatsapp",
        "customer",
        "Tem M?",
    )
    .await;
    assert_eq!(
        first["thread_id"], second["thread_id"],
        "one thread per customer and channel"
    );
    let insta = say(
        &app,
        &tenant,
        "+5511912345678",
        "instagram",
        "customer",
        "Hi",
    )
    .await;
    assert_ne!(insta["thread_id"], first["thread_id"]);

    let threads = app
        .get("/api/v1/conversations")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let items = threads.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["thread_id"], insta["thread_id"],
        "most recent first"
    );
    assert_eq!(items[1]["customer_handle"], "+5511912345678");
    assert_eq!(items[1]["channel"], "whatsapp");
    assert_eq!(items[1]["last_message"]["message"], "Tem M?");
    assert_eq!(items[1]["unread_count"], 2);

    // A reply clears the count; the next customer message starts it again.
    say(
        &app,
        &tenant,
        "+5511912345678",
        "whatsapp",
        "bot",
        "Temos sim!",
    )
    .await;
    let reply = say(
        &app,
        &tenant,
        "+5511912345678",
        "whatsapp",
        "customer",
        "Oba",
    )
    .await;
    let threads = app
        .get("/api/v1/conversations?limit=1")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let top = &threads.body["items"][0];
    assert_eq!(top["thread_id"], first["thread_id"]);
    assert_eq!(top["unread_count"], 1);
    assert_eq!(top["last_message"]["id"], reply["id"]);
    assert_eq!(top["last_message"]["sender_type"], "customer");
    let cursor = threads.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!("/api/v1/conversations?limit=1&cursor={cursor}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(rest.body["items"][0]["thread_id"], insta["thread_id"]);
    assert!(rest.body["next_cursor"].is_null());

    let thread = first["thread_id"].as_str().unwrap();
    let page = app
        .get(&format!("/api/v1/conversations/{thread}/messages?limit=3"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let texts: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Oba", "Temos sim!", "Tem M?"]);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let older = app
        .get(&format!(
            "/api/v1/conversations/{thread}/messages?limit=3&cursor={cursor}"
        ))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(older.body["items"][0]["message"], "Oi!");
    assert!(older.body["next_cursor"].is_null());
}

#[tokio::test]
async fn messages_are_validated_and_link_only_own_orders() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let (staff, _) = app.member(&a, "staff").await;
    let post = |tenant: &TestTenant, user: &str, body: Value| {
        app.post("/api/v1/conversations/messages")
            .user(user)
            .tenant(tenant.id)
            .json(&body)
            .send()
    };
    let bad = post(
        &a,
        &staff,
        json!({"customer_handle": " ", "channel": "whatsapp", "sender_type": "customer", "message": "  "}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&bad), ["customer_handle", "message"]);
    let sender = post(
        &a,
        &staff,
        json!({"customer_handle": "@ana", "channel": "instagram", "sender_type": "alien", "message": "x"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&sender), ["sender_type"]);

    let p = app.product(&b, json!({})).await;
    let order = app
        .post("/api/v1/orders")
        .owner_of(&b)
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511900000000"},
                      "items": [{"product_id": p["id"], "quantity": 1}], "channel": "instagram"}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let foreign = post(
        &a,
        &staff,
        json!({"customer_handle": "@ana", "channel": "instagram", "sender_type": "merchant",
               "message": "About your order", "order_id": order["id"]}),
    )
    .await
    .expect_problem(404, "not_found");
    assert!(
        foreign.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("order_id")
    );
    let linked = post(
        &b,
        &b.owner,
        json!({"customer_handle": "@ana", "channel": "instagram", "sender_type": "merchant",
               "message": "About your order", "order_id": order["id"]}),
    )
    .await
    .expect(201);
    assert_eq!(linked.body["order_id"], order["id"]);

    let empty = app
        .get("/api/v1/conversations")
        .user(&staff)
        .tenant(a.id)
        .send()
        .await
        .expect(200);
    assert!(
        empty.body["items"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
    let thread = linked.body["thread_id"].as_str().unwrap();
    app.get(&format!("/api/v1/conversations/{thread}/messages"))
        .user(&staff)
        .tenant(a.id)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.get("/api/v1/conversations/not-a-thread/messages")
        .user(&staff)
        .tenant(a.id)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("/api/v1/conversations/{thread}/messages"))
        .owner_of(&b)
        .send()
        .await
        .expect(200);
}
