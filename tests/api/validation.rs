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

/// The fields of `body` that `schema` (of the OpenAPI document `doc`) requires, at any depth,
/// each as the path a 422 names (`owner.email`, `items[0].quantity`) and as the steps to it.
fn required_fields(
    doc: &Value,
    schema: &Value,
    body: &Value,
    at: &[Step],
    out: &mut Vec<Vec<Step>>,
) {
    let mut schema = schema;
    while let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        schema = &doc["components"]["schemas"][name];
    }
    for alternative in schema["oneOf"]
        .as_array()
        .into_iter()
        .chain(schema["allOf"].as_array())
        .flatten()
        .filter(|s| s["type"] != "null")
    {
        required_fields(doc, alternative, body, at, out);
    }
    match body {
        Value::Object(fields) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                assert!(
                    fields.contains_key(name),
                    "the complete body at {} has {name}",
                    field_name(at)
                );
                out.push([at, &[Step::Key(name.to_string())]].concat());
            }
            for (name, value) in fields {
                let property = &schema["properties"][name];
                if !property.is_null() {
                    let here = [at, &[Step::Key(name.clone())]].concat();
                    required_fields(doc, property, value, &here, out);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                let here = [at, &[Step::Index(i)]].concat();
                required_fields(doc, &schema["items"], item, &here, out);
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// How a 422 names the field at `steps`.
fn field_name(steps: &[Step]) -> String {
    let mut name = String::new();
    for step in steps {
        match step {
            Step::Key(key) if name.is_empty() => name.push_str(key),
            Step::Key(key) => name.push_str(&format!(".{key}")),
            Step::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// `body` without the field at `steps`.
fn without(body: &Value, steps: &[Step]) -> Value {
    let mut body = body.clone();
    let (last, parents) = steps.split_last().unwrap();
    let mut at = &mut body;
    for step in parents {
        at = match step {
            Step::Key(key) => &mut at[key.as_str()],
            Step::Index(i) => &mut at[*i],
        };
    }
    let Step::Key(last) = last else {
        panic!("a required field is an object's")
    };
    at.as_object_mut().unwrap().remove(last);
    body
}

/// One request of the document: its operation (method and path template), the path to call,
/// a complete body, and whether a platform admin sends it (else the tenant's owner).
struct Request {
    method: Method,
    template: &'static str,
    path: String,
    body: Value,
    admin: bool,
}

fn request(method: Method, template: &'static str, id: &str, body: Value) -> Request {
    Request {
        path: template.replace("{id}", id),
        admin: template.starts_with("/api/v1/admin/"),
        method,
        template,
        body,
    }
}

/// What the tenant's owner can read, to show that the refused requests changed nothing.
async fn everything(app: &TestApp, tenant: &TestTenant) -> Vec<Value> {
    let mut seen = vec![];
    for path in [
        "/api/v1/tenant",
        "/api/v1/tenant/settings",
        "/api/v1/users",
        "/api/v1/seller-profile",
        "/api/v1/ai-config",
        "/api/v1/products",
        "/api/v1/orders",
        "/api/v1/conversations",
        "/api/v1/api-keys",
        "/api/v1/monitoring/rules",
        "/api/v1/notifications",
        "/api/v1/notifications/settings",
        "/api/v1/notifications/preferences",
        "/api/v1/notifications/templates",
        "/api/v1/trust/verifications",
    ] {
        let answer = app.get(path).owner_of(tenant).send().await;
        seen.push(json!({"path": path, "status": answer.status.as_u16(), "body": answer.body}));
    }
    seen
}

#[tokio::test]
async fn every_required_field_the_document_lists_is_named_when_missing() {
    // Over a hundred requests in a minute.
    let app = TestApp::spawn_with(|vars| {
        vars.insert("RATE_LIMITS".into(), "off".into());
    })
    .await;
    let doc = app
        .get("/api/v1/openapi.json")
        .send()
        .await
        .expect(200)
        .body;
    let tenant = app.tenant().await;
    let product = app.product(&tenant, json!({})).await;
    let product_id = product["id"].as_str().unwrap();
    let order = app
        .post("/api/v1/orders")
        .owner_of(&tenant)
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511912345678"},
                      "items": [{"product_id": product_id, "quantity": 1}], "channel": "web"}),
        )
        .send()
        .await
        .expect(201)
        .body;
    let order_id = order["id"].as_str().unwrap();
    let rule_body = json!({
        "name": "Failed logins", "severity": "high",
        "condition": {"field": "action", "op": "eq", "value": "auth.failed"},
        "threshold": {"count": 5, "window_seconds": 300},
        "schedule": {"timezone": "UTC",
                     "windows": [{"days": ["mon"], "start": "09:00", "end": "18:00"}]},
    });
    let rule = app
        .post("/api/v1/monitoring/rules")
        .owner_of(&tenant)
        .json(&rule_body)
        .send()
        .await
        .expect(201)
        .body;
    let rule_id = rule["id"].as_str().unwrap();
    let template_body =
        json!({"key": "order.created", "channel": "sms", "locale": "en", "body": "{{ title }}"});
    let template = app
        .post("/api/v1/notifications/templates")
        .owner_of(&tenant)
        .json(&template_body)
        .send()
        .await
        .expect(201)
        .body;
    let template_id = template["id"].as_str().unwrap();
    let media = crate::media::upload(
        &app,
        &tenant,
        crate::media::file(crate::media::png(10), "scan.png", "image/png"),
    )
    .await
    .expect(201)
    .body;
    let address = json!({"line1": "Rua Augusta 1500", "city": "São Paulo", "country": "BR"});
    let product_body = json!({"name": "Tee", "price_cents": 100, "currency": "USD"});
    let tenant_id = tenant.id.to_string();

    let requests = [
        request(
            Method::POST,
            "/api/v1/admin/tenants",
            "",
            json!({
            "name": "A", "slug": "never-created",
            "owner": {"external_id": "x", "email": "x@x.example"}}),
        ),
        request(
            Method::PUT,
            "/api/v1/admin/tenants/{id}/trust",
            &tenant_id,
            json!({"level": 2, "reason": "Checked by phone."}),
        ),
        request(
            Method::PUT,
            "/api/v1/ai-config",
            "",
            json!({
            "bot_name": "Bia", "style_tone": "friendly", "auto_reply_enabled": true,
            "languages": ["en"],
            "active_hours": {"timezone": "UTC", "start": "09:00", "end": "18:00"}}),
        ),
        request(
            Method::POST,
            "/api/v1/api-keys",
            "",
            json!({"name": "Sync", "role": "staff"}),
        ),
        request(
            Method::POST,
            "/api/v1/conversations/messages",
            "",
            json!({
            "customer_handle": "+5511912345678", "channel": "whatsapp",
            "sender_type": "customer", "message": "Hi"}),
        ),
        request(
            Method::POST,
            "/api/v1/monitoring/rules",
            "",
            rule_body.clone(),
        ),
        request(
            Method::PUT,
            "/api/v1/monitoring/rules/{id}",
            rule_id,
            rule_body.clone(),
        ),
        request(
            Method::POST,
            "/api/v1/monitoring/rules/test",
            "",
            json!({"rule": rule_body, "event": {"action": "auth.failed"}}),
        ),
        request(
            Method::POST,
            "/api/v1/monitoring/rules/{id}/backtest",
            rule_id,
            json!({
            "since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}),
        ),
        request(
            Method::POST,
            "/api/v1/notifications",
            "",
            json!({
            "title": "Stock check", "body": "Count the shelves.", "priority": "low",
            "recipients": {"roles": ["owner"]}}),
        ),
        request(
            Method::PUT,
            "/api/v1/notifications/preferences",
            "",
            json!({
            "opt_outs": [{"channel": "sms", "category": null}],
            "quiet_hours": {"timezone": "UTC", "start": "22:00", "end": "07:00"},
            "locale": "en"}),
        ),
        request(
            Method::PUT,
            "/api/v1/notifications/settings",
            "",
            json!({"channels": {
            "urgent": ["in_app"], "high": ["in_app"], "medium": ["in_app"], "low": ["in_app"]}}),
        ),
        request(
            Method::POST,
            "/api/v1/notifications/templates",
            "",
            template_body.clone(),
        ),
        request(
            Method::PUT,
            "/api/v1/notifications/templates/{id}",
            template_id,
            template_body,
        ),
        request(
            Method::POST,
            "/api/v1/notifications/templates/preview",
            "",
            json!({
            "key": "order.created", "channel": "sms", "locale": "en"}),
        ),
        request(
            Method::POST,
            "/api/v1/orders",
            "",
            json!({
            "customer": {"name": "Ana", "phone": "+5511912345678", "address": address},
            "items": [{"product_id": product_id, "quantity": 1}], "channel": "web"}),
        ),
        request(
            Method::POST,
            "/api/v1/orders/{id}/rating",
            order_id,
            json!({"stars": 5}),
        ),
        request(
            Method::POST,
            "/api/v1/orders/{id}/transitions",
            order_id,
            json!({"status": "confirmed"}),
        ),
        request(Method::POST, "/api/v1/products", "", product_body.clone()),
        request(
            Method::POST,
            "/api/v1/products/bulk",
            "",
            json!({"products": [product_body]}),
        ),
        request(
            Method::PUT,
            "/api/v1/seller-profile",
            "",
            json!({
            "store_name": "Shop", "slug": "never-saved", "business_address": address}),
        ),
        request(
            Method::POST,
            "/api/v1/trust/verifications/documents",
            "",
            json!({
            "kind": "registration", "media_ids": [media["id"]]}),
        ),
        request(
            Method::POST,
            "/api/v1/trust/verifications/email/send",
            "",
            json!({"email": "owner@shop.example"}),
        ),
        request(
            Method::POST,
            "/api/v1/trust/verifications/email/confirm",
            "",
            json!({"code": "123456"}),
        ),
        request(
            Method::POST,
            "/api/v1/trust/verifications/phone/send",
            "",
            json!({"phone": "+5511912345678"}),
        ),
        request(
            Method::POST,
            "/api/v1/trust/verifications/phone/confirm",
            "",
            json!({"code": "123456"}),
        ),
        request(
            Method::POST,
            "/api/v1/users",
            "",
            json!({
            "external_id": "never-added", "email": "never@shop.example", "role": "staff"}),
        ),
    ];

    // Every JSON request body of the document with a required field is among them.
    let mut listed = vec![];
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            let mut resolved = schema;
            while let Some(reference) = resolved["$ref"].as_str() {
                resolved = &doc["components"]["schemas"]
                    [reference.trim_start_matches("#/components/schemas/")];
            }
            if resolved["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                listed.push(format!("{} {template}", method.to_uppercase()));
            }
        }
    }
    let mut covered: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    listed.sort();
    covered.sort();
    assert_eq!(listed, covered, "every request type with a required field");

    let before = everything(&app, &tenant).await;
    let (mut checked, mut wrong) = (0, vec![]);
    for r in &requests {
        let operation = &doc["paths"][r.template][r.method.as_str().to_lowercase()];
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        let mut fields = vec![];
        required_fields(&doc, schema, &r.body, &[], &mut fields);
        for steps in fields {
            let field = field_name(&steps);
            let call = app
                .call(r.method.clone(), &r.path)
                .json(&without(&r.body, &steps));
            let call = if r.admin {
                call.user(ADMIN)
            } else {
                call.owner_of(&tenant)
            };
            let answer = call.send().await;
            if (answer.status.as_u16(), answer.code(), error_fields(&answer))
                != (422, "validation_failed", vec![field.clone()])
            {
                wrong.push(format!(
                    "{} {} without {field}: {} {}",
                    r.method, r.template, answer.status, answer.body
                ));
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 80, "{checked} missing fields");
    assert_eq!(everything(&app, &tenant).await, before, "nothing changed");
}
