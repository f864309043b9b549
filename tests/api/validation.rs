//! A body missing a required field answers 422 naming that field (its path), for every
//! request type, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// A request: method, path, body, and whether a platform admin sends it (else the owner).
type Case = (Method, String, Value, bool);

#[tokio::test]
async fn a_missing_required_field_is_named_in_every_request_type() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let product = app.product(&tenant, json!({})).await;
    let product_id = product["id"].as_str().unwrap();
    let order = app
        .post("/api/v1/orders")
        .owner_of(&tenant)
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511912345678"},
                      "items": [{"product_id": product_id, "quantity": 1}],
                      "channel": "web"}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let order_id = order["id"].as_str().unwrap();
    let admin = |body: Value| {
        (
            Method::POST,
            "/api/v1/admin/tenants".to_string(),
            body,
            true,
        )
    };
    let member = |method: Method, path: &str, body: Value| (method, path.to_string(), body, false);
    let cases: Vec<(Case, &str)> = vec![
        (
            admin(json!({"name": "A", "slug": "a-missing-owner"})),
            "owner",
        ),
        (
            admin(json!({"name": "A", "slug": "a-missing-email", "owner": {"external_id": "x"}})),
            "owner.email",
        ),
        (
            member(
                Method::POST,
                "/api/v1/users",
                json!({"external_id": "x", "role": "staff"}),
            ),
            "email",
        ),
        (
            member(
                Method::PUT,
                "/api/v1/seller-profile",
                json!({"slug": "shop"}),
            ),
            "store_name",
        ),
        (
            member(
                Method::POST,
                "/api/v1/products",
                json!({"price_cents": 100, "currency": "USD"}),
            ),
            "name",
        ),
        (
            member(
                Method::POST,
                "/api/v1/orders",
                json!({"customer": {"name": "Ana", "phone": "+5511912345678"}, "channel": "web"}),
            ),
            "items",
        ),
        (
            member(
                Method::POST,
                "/api/v1/orders",
                json!({"customer": {"name": "Ana", "phone": "+5511912345678"},
                       "items": [{"product_id": product_id}], "channel": "web"}),
            ),
            "items[0].quantity",
        ),
        (
            member(
                Method::POST,
                "/api/v1/orders",
                json!({"customer": {"name": "Ana"},
                   "items": [{"product_id": product_id, "quantity": 1}], "channel": "web"}),
            ),
            "customer.phone",
        ),
        (
            member(
                Method::POST,
                &format!("/api/v1/orders/{order_id}/transitions"),
                json!({"tracking_number": "X1"}),
            ),
            "status",
        ),
        (
            member(
                Method::POST,
                &format!("/api/v1/orders/{order_id}/rating"),
                json!({"comment": "ok"}),
            ),
            "stars",
        ),
        (
            member(
                Method::POST,
                "/api/v1/conversations/messages",
                json!({"customer_handle": "+5511912345678", "channel": "whatsapp",
                       "sender_type": "customer"}),
            ),
            "message",
        ),
        (
            member(
                Method::PUT,
                "/api/v1/ai-config",
                json!({"style_tone": "friendly", "auto_reply_enabled": true, "languages": ["en"]}),
            ),
            "bot_name",
        ),
    ];
    for ((method, path, body, as_admin), field) in cases {
        let call = app.call(method.clone(), &path).json(&body);
        let call = if as_admin {
            call.user(ADMIN)
        } else {
            call.owner_of(&tenant)
        };
        let answer = call.send().await.expect_problem(422, "validation_failed");
        assert_eq!(
            error_fields(&answer),
            vec![field],
            "{method} {path}: {}",
            answer.body
        );
    }
    // Nothing changed: the order is still pending and unrated, one product, no profile.
    let now = app
        .get(&format!("/api/v1/orders/{order_id}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200)
        .body;
    assert_eq!(now["status"], "pending");
    assert!(now["rating"].is_null());
    app.get("/api/v1/seller-profile")
        .owner_of(&tenant)
        .send()
        .await
        .expect_problem(404, "not_found");
}
