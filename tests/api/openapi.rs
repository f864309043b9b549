//! The OpenAPI document is the contract clients are generated from: its rules, each held
//! against the served document and, where it says what the server sends, against the
//! server's real answers.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::media::{file, png, upload};

/// Fields the server leaves out when they are empty (`skip_serializing_if`): the only ones a
/// schema may leave optional in a response.
const OMITTED_WHEN_EMPTY: &[(&str, &str)] = &[
    ("Customer", "email"),
    ("Customer", "address"),
    ("Address", "line2"),
    ("Address", "region"),
    ("Address", "postal_code"),
    ("Problem", "errors"),
    ("OptOut", "category"),
];

async fn document(app: &TestApp) -> Value {
    app.get("/api/v1/openapi.json")
        .send()
        .await
        .expect(200)
        .body
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Validates JSON against the subset of JSON Schema the document uses.
struct Validator<'d> {
    doc: &'d Value,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> (&'s Value, Option<&'s str>) {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .expect("a component reference");
                let target = &self.doc["components"]["schemas"][name];
                assert!(target.is_object(), "{reference} exists");
                (target, Some(name))
            }
            None => (schema, None),
        }
    }

    fn errors(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let (schema, _) = self.resolve(schema);
        for all in schema["allOf"].as_array().into_iter().flatten() {
            self.check(all, value, at, errors);
        }
        if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let matching = options
                .iter()
                .filter(|option| self.errors(option, value, at).is_empty())
                .count();
            if matching == 0 {
                errors.push(format!("{at}: {value} matches none of {options:?}"));
            }
        }
        if let Some(kinds) = types(schema)
            && !kinds.iter().any(|kind| is_of_type(kind, value))
        {
            errors.push(format!("{at}: {value} is not of type {kinds:?}"));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        match value {
            Value::String(text) => {
                let length = text.chars().count() as u64;
                if schema["minLength"].as_u64().is_some_and(|min| length < min)
                    || schema["maxLength"].as_u64().is_some_and(|max| length > max)
                {
                    errors.push(format!("{at}: {value} has a length out of bounds"));
                }
                if let Some(pattern) = schema["pattern"].as_str()
                    && !regex::Regex::new(pattern).unwrap().is_match(text)
                {
                    errors.push(format!("{at}: {value} does not match {pattern}"));
                }
                let format_ok = match schema["format"].as_str() {
                    Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
                    Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    Some("email") => text.contains('@'),
                    _ => true,
                };
                if !format_ok {
                    errors.push(format!("{at}: {value} is not a {}", schema["format"]));
                }
            }
            Value::Number(number) => {
                let n = number.as_f64().unwrap();
                if schema["minimum"].as_f64().is_some_and(|min| n < min)
                    || schema["maximum"].as_f64().is_some_and(|max| n > max)
                {
                    errors.push(format!("{at}: {value} is out of bounds"));
                }
            }
            Value::Array(items) => {
                let count = items.len() as u64;
                if schema["minItems"].as_u64().is_some_and(|min| count < min)
                    || schema["maxItems"].as_u64().is_some_and(|max| count > max)
                {
                    errors.push(format!("{at}: {count} items is out of bounds"));
                }
                if schema["uniqueItems"] == true
                    && items
                        .iter()
                        .map(Value::to_string)
                        .collect::<BTreeSet<_>>()
                        .len()
                        != items.len()
                {
                    errors.push(format!("{at}: items repeat"));
                }
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
            Value::Object(fields) => {
                for required in schema["required"].as_array().into_iter().flatten() {
                    if !fields.contains_key(required.as_str().unwrap()) {
                        errors.push(format!("{at}: {required} is missing"));
                    }
                }
                if schema["maxProperties"]
                    .as_u64()
                    .is_some_and(|max| fields.len() as u64 > max)
                {
                    errors.push(format!("{at}: too many properties"));
                }
                for (key, field) in fields {
                    let here = format!("{at}.{key}");
                    if schema["propertyNames"].is_object() {
                        self.check(&schema["propertyNames"], &json!(key), &here, errors);
                    }
                    match &schema["properties"][key] {
                        Value::Null => match &schema["additionalProperties"] {
                            Value::Bool(false) => errors.push(format!("{here} is not allowed")),
                            extra if extra.is_object() => self.check(extra, field, &here, errors),
                            _ => {}
                        },
                        property => self.check(property, field, &here, errors),
                    }
                }
            }
            _ => {}
        }
    }

    /// Every field of `value` is in its schema's `required`, unless the server leaves it out
    /// when empty; recursively.
    fn sent_fields_required(&self, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
        let (schema, name) = self.resolve(schema);
        for option in schema["oneOf"].as_array().into_iter().flatten() {
            if self.errors(option, value, at).is_empty() {
                self.sent_fields_required(option, value, at, out);
            }
        }
        match value {
            Value::Object(fields) if schema["properties"].is_object() => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for (key, field) in fields {
                    let omitted = name.is_some_and(|n| OMITTED_WHEN_EMPTY.contains(&(n, key)));
                    if !required.contains(&key.as_str()) && !omitted {
                        out.push(format!("{at}.{key} is sent but not required"));
                    }
                    self.sent_fields_required(
                        &schema["properties"][key],
                        field,
                        &format!("{at}.{key}"),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.sent_fields_required(&schema["items"], item, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
}

fn types(schema: &Value) -> Option<Vec<&str>> {
    match &schema["type"] {
        Value::String(kind) => Some(vec![kind.as_str()]),
        Value::Array(kinds) => Some(kinds.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn is_of_type(kind: &str, value: &Value) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// Asserts a real answer is what the document says `method path` answers with `status`:
/// valid against the schema, every field it sent required (or left out when empty).
#[track_caller]
fn assert_documented(doc: &Value, method: &str, path: &str, response: &Response) {
    let status = response.status.as_u16().to_string();
    let schema =
        &doc["paths"][path][method]["responses"][&status]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} documents {status} as JSON"
    );
    let validator = Validator { doc };
    let errors = validator.errors(schema, &response.body, "body");
    assert!(errors.is_empty(), "{method} {path}: {errors:#?}");
    let mut unrequired = Vec::new();
    validator.sent_fields_required(schema, &response.body, "body", &mut unrequired);
    assert!(unrequired.is_empty(), "{method} {path}: {unrequired:#?}");
}

#[tokio::test]
async fn real_answers_match_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let t = app.tenant().await;
    let call = |r: Call| r.owner_of(&t);

    let tenant = call(app.get("/api/v1/tenant")).send().await.expect(200);
    assert_documented(&doc, "get", "/api/v1/tenant", &tenant);
    let bare = call(app.post("/api/v1/products"))
        .json(&json!({"name": "Bare", "price_cents": 500, "currency": "USD"}))
        .send()
        .await
        .expect(201);
    assert_eq!(bare.body["description"], Value::Null, "sent as null");
    assert_documented(&doc, "post", "/api/v1/products", &bare);
    let product = app
        .product(&t, json!({"sku": "DOC-1", "description": "Cotton"}))
        .await;
    let id = product["id"].as_str().unwrap();
    let got = call(app.get(&format!("/api/v1/products/{id}")))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/products/{id}", &got);
    let page = call(app.get("/api/v1/products?limit=1"))
        .send()
        .await
        .expect(200);
    assert!(page.body["next_cursor"].is_string());
    assert_documented(&doc, "get", "/api/v1/products", &page);

    let order = call(app.post("/api/v1/orders"))
        .json(&json!({
            "customer": {"name": "Ana", "phone": "+5511912345678", "email": "ana@example.com",
                         "address": {"line1": "Rua A 1", "city": "Recife", "country": "BR"}},
            "items": [{"product_id": id, "quantity": 1}],
            "channel": "whatsapp"
        }))
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/orders", &order);
    let order_id = order.body["id"].as_str().unwrap().to_string();
    let mut last = order;
    for (status, extra) in [
        ("confirmed", json!({})),
        ("processing", json!({})),
        (
            "shipped",
            json!({"tracking_number": "BR1", "carrier": "Correios"}),
        ),
        ("delivered", json!({})),
    ] {
        let mut body = extra;
        body["status"] = json!(status);
        last = call(app.post(&format!("/api/v1/orders/{order_id}/transitions")))
            .json(&body)
            .send()
            .await
            .expect(200);
        assert_documented(&doc, "post", "/api/v1/orders/{id}/transitions", &last);
    }
    assert_eq!(last.body["rating"], Value::Null);
    let rating = call(app.post(&format!("/api/v1/orders/{order_id}/rating")))
        .json(&json!({"stars": 5}))
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/orders/{id}/rating", &rating);
    let orders = call(app.get("/api/v1/orders?status=delivered"))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/orders", &orders);

    let message = call(app.post("/api/v1/conversations/messages"))
        .json(
            &json!({"customer_handle": "+5511912345678", "channel": "web",
                      "sender_type": "customer", "message": "Oi"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(message.body["order_id"], Value::Null);
    assert_documented(&doc, "post", "/api/v1/conversations/messages", &message);
    let threads = call(app.get("/api/v1/conversations"))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/conversations", &threads);
    let thread = message.body["thread_id"].as_str().unwrap();
    let messages = call(app.get(&format!("/api/v1/conversations/{thread}/messages")))
        .send()
        .await
        .expect(200);
    assert_documented(
        &doc,
        "get",
        "/api/v1/conversations/{thread_id}/messages",
        &messages,
    );

    let defaults = call(app.get("/api/v1/ai-config")).send().await.expect(200);
    assert_documented(&doc, "get", "/api/v1/ai-config", &defaults);
    let saved = call(app.put("/api/v1/ai-config"))
        .json(&doc["components"]["schemas"]["PutAiConfig"]["example"])
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "put", "/api/v1/ai-config", &saved);
    let profile = call(app.put("/api/v1/seller-profile"))
        .json(&json!({"store_name": "Doc", "slug": format!("doc-{}", &t.id.simple().to_string()[..8])}))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "put", "/api/v1/seller-profile", &profile);
    for (path, name) in [
        ("/api/v1/users", "users"),
        ("/api/v1/tenant/usage", "usage"),
        ("/api/v1/tenant/quotas", "quotas"),
    ] {
        let answer = call(app.get(path)).send().await.expect(200);
        assert_documented(&doc, "get", path, &answer);
        assert!(answer.body.is_object(), "{name}");
    }
    let media = upload(&app, &t, file(png(64), "a.png", "image/png"))
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/media", &media);
    let admin_page = app
        .get("/api/v1/admin/tenants")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/admin/tenants", &admin_page);
    let sent = call(app.post("/api/v1/notifications"))
        .json(&json!({"title": "Doc", "body": "b", "priority": "high"}))
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/notifications", &sent);
    let id = sent.body["notification_ids"][0].as_str().unwrap();
    let one = call(app.get(&format!("/api/v1/notifications/{id}")))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/notifications/{id}", &one);
    let read = call(app.post(&format!("/api/v1/notifications/{id}/read")))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "post", "/api/v1/notifications/{id}/read", &read);
    for path in [
        "/api/v1/notifications",
        "/api/v1/notifications/unread-count",
        "/api/v1/notifications/settings",
        "/api/v1/notifications/preferences",
    ] {
        let answer = call(app.get(path)).send().await.expect(200);
        assert_documented(&doc, "get", path, &answer);
    }
    let template = call(app.post("/api/v1/notifications/templates"))
        .json(&doc["components"]["schemas"]["TemplateBody"]["example"])
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/notifications/templates", &template);
    let preview = call(app.post("/api/v1/notifications/templates/preview"))
        .json(&doc["components"]["schemas"]["PreviewBody"]["example"])
        .send()
        .await
        .expect(200);
    assert_documented(
        &doc,
        "post",
        "/api/v1/notifications/templates/preview",
        &preview,
    );
    let prefs = call(app.put("/api/v1/notifications/preferences"))
        .json(&doc["components"]["schemas"]["Preferences"]["example"])
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "put", "/api/v1/notifications/preferences", &prefs);
    let problem = call(app.get("/api/v1/products?limit=0"))
        .send()
        .await
        .expect(422);
    let errors = Validator { doc: &doc }.errors(&schema_ref("Problem"), &problem.body, "problem");
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test]
async fn enums_are_documented_as_the_server_sends_them() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let expected = [
        ("Channel", vec!["whatsapp", "instagram", "web", "other"]),
        (
            "OrderStatus",
            vec![
                "pending",
                "confirmed",
                "processing",
                "shipped",
                "delivered",
                "cancelled",
                "disputed",
            ],
        ),
        ("ProductStatus", vec!["draft", "active", "archived"]),
        ("SenderType", vec!["customer", "merchant", "bot"]),
        (
            "StyleTone",
            vec!["friendly", "professional", "casual", "formal", "playful"],
        ),
        ("Role", vec!["owner", "admin", "staff"]),
        ("Severity", vec!["low", "medium", "high", "critical"]),
        ("AlertStatus", vec!["firing", "acknowledged", "resolved"]),
        ("NotifyChannel", vec!["in_app", "email", "sms"]),
        ("Day", vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
        ("TenantStatus", vec!["active", "suspended"]),
        ("ActorType", vec!["user", "api_key", "system"]),
        (
            "Category",
            vec!["auth", "data", "request", "security", "trust", "system"],
        ),
        ("Priority", vec!["urgent", "high", "medium", "low"]),
        ("Colour", vec!["red", "orange", "blue", "green"]),
        (
            "SourceType",
            vec!["alert", "rule", "order", "trust", "system", "manual"],
        ),
        (
            "DeliveryStatus",
            vec![
                "queued",
                "sending",
                "sent",
                "delivered",
                "failed",
                "undelivered",
                "skipped",
            ],
        ),
        ("Bypass", vec!["opt_out", "quiet_hours"]),
        (
            "TemplateKey",
            vec![
                "manual.message",
                "order.created",
                "order.disputed",
                "alert.triggered",
                "verification.code",
                "trust.level_changed",
                "trust.verification_decided",
            ],
        ),
        ("TemplateChannel", vec!["email", "sms"]),
        (
            "Feature",
            vec![
                "auto_confirm_orders",
                "email_notifications",
                "sms_notifications",
                "analytics_summary",
                "analytics_timeseries",
                "bulk_product_import",
                "custom_monitoring_rules",
                "api_keys",
            ],
        ),
        (
            "VerificationKind",
            vec![
                "email",
                "phone",
                "business_info",
                "store_setup",
                "registration",
                "tax_id",
                "address",
                "bank_account",
            ],
        ),
        (
            "VerificationStatus",
            vec!["unverified", "pending", "verified", "rejected"],
        ),
        (
            "DocumentKind",
            vec!["registration", "tax_id", "address", "bank_account"],
        ),
        ("Interval", vec!["day", "week", "month"]),
        ("RiskSeverity", vec!["low", "medium", "high", "critical"]),
        ("CreatorType", vec!["user", "api_key"]),
    ];
    for (name, values) in &expected {
        assert_eq!(schemas[*name]["enum"], json!(values), "{name}");
    }
    let enums: Vec<&String> = schemas
        .iter()
        .filter(|(_, s)| s["enum"].is_array())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        enums.len(),
        expected.len(),
        "every enum is checked: {enums:?}"
    );
    // What the server sends is in the documented enum.
    let t = app.tenant().await;
    let product = app.product(&t, json!({"status": "archived"})).await;
    assert!(
        schemas["ProductStatus"]["enum"]
            .as_array()
            .unwrap()
            .contains(&product["status"])
    );
    let users = app
        .get("/api/v1/users")
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert!(
        schemas["Role"]["enum"]
            .as_array()
            .unwrap()
            .contains(&users.body["items"][0]["role"])
    );
}

#[tokio::test]
async fn schema_examples_validate_against_their_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let validator = Validator { doc: &doc };
    let mut checked = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            let errors = validator.errors(schema, example, name);
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} examples");
    // The validator refuses what it should, so the loop above can fail.
    let product = &doc["components"]["schemas"]["CreateProduct"];
    for bad in [
        json!({"name": "x", "price_cents": 0, "currency": "BRL"}),
        json!({"name": "x", "price_cents": 1, "currency": "XYZ"}),
        json!({"name": " ", "price_cents": 1, "currency": "BRL"}),
        json!({"name": "x", "price_cents": 1, "currency": "BRL", "stock": 1_000_000_001}),
        json!({"name": "x", "price_cents": 1, "currency": "BRL", "status": "Active"}),
        json!({"name": "x", "price_cents": 1, "currency": "BRL", "colour": "red"}),
    ] {
        assert!(!validator.errors(product, &bad, "bad").is_empty(), "{bad}");
    }
}

#[tokio::test]
async fn bounds_are_documented_as_the_server_enforces_them() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let t = app.tenant().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(list) = item.get("get") else {
            continue;
        };
        for parameter in list["parameters"].as_array().into_iter().flatten() {
            if parameter["name"] == "limit" {
                assert_eq!(
                    parameter["schema"],
                    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 100, "default": 20}),
                    "{path}"
                );
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    let validator = Validator { doc: &doc };
    for (stock, status) in [(1_000_000_000, 201), (1_000_000_001, 422), (-1, 422)] {
        let body = json!({"name": "Bound", "price_cents": 1, "currency": "USD", "stock": stock});
        app.post("/api/v1/products")
            .owner_of(&t)
            .json(&body)
            .send()
            .await
            .expect(status);
        let valid = validator
            .errors(&schemas["CreateProduct"], &body, "body")
            .is_empty();
        assert_eq!(valid, status == 201, "stock {stock}");
    }
    let product = app.product(&t, json!({"stock": 1_000_000_000})).await;
    for (quantity, status) in [(1_000_000_001, 422), (0, 422), (1_000_000_000, 201)] {
        let body = json!({"customer": {"name": "Ana", "phone": "+5511912345678"},
                          "items": [{"product_id": product["id"], "quantity": quantity}],
                          "channel": "web"});
        app.post("/api/v1/orders")
            .owner_of(&t)
            .json(&body)
            .send()
            .await
            .expect(status);
        let valid = validator
            .errors(&schemas["CreateOrder"], &body, "body")
            .is_empty();
        assert_eq!(valid, status == 201, "quantity {quantity}");
    }
    app.post("/api/v1/orders/00000000-0000-0000-0000-000000000000/rating")
        .owner_of(&t)
        .json(&json!({"stars": 5.0}))
        .send()
        .await
        .expect_problem(404, "not_found");
    // PostgreSQL text cannot hold NUL: refused as the documented pattern says, not a 500.
    for (path, body) in [
        (
            "/api/v1/conversations/messages",
            json!({"customer_handle": "ana", "channel": "web", "sender_type": "customer",
                   "message": "a\u{0}b"}),
        ),
        (
            "/api/v1/products",
            json!({"name": "Nul", "price_cents": 1, "currency": "USD", "description": "a\u{0}"}),
        ),
    ] {
        app.post(path)
            .owner_of(&t)
            .json(&body)
            .send()
            .await
            .expect_problem(422, "validation_failed");
    }
    app.get("/api/v1/products?q=a%00b")
        .owner_of(&t)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(schemas["RateOrder"]["properties"]["stars"]["maximum"], 5);
    assert_eq!(
        schemas["CreateProduct"]["properties"]["price_cents"]["minimum"],
        1
    );
    assert_eq!(
        schemas["CreateProduct"]["properties"]["name"]["maxLength"],
        200
    );
}

#[tokio::test]
async fn pages_reference_their_item_schema() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let pages: Vec<(&String, &Value)> = schemas
        .iter()
        .filter(|(name, _)| name.starts_with("Page_"))
        .collect();
    assert!(pages.len() >= 6, "{pages:?}");
    for (name, page) in pages {
        let item = name.strip_prefix("Page_").unwrap();
        assert_eq!(
            page["properties"]["items"]["items"],
            schema_ref(item),
            "{name}"
        );
        assert_eq!(page["required"], json!(["items", "next_cursor"]), "{name}");
        assert_eq!(
            page["properties"]["next_cursor"]["type"],
            json!(["string", "null"])
        );
    }
    let listed = &doc["paths"]["/api/v1/products"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_eq!(listed, &schema_ref("Page_Product"));
}

#[tokio::test]
async fn media_content_is_documented_as_binary_of_its_real_types() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let content = doc["paths"]["/api/v1/media/{id}/content"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    let types: BTreeSet<&str> = content.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf"
        ])
    );
    for (content_type, media) in content {
        assert_eq!(
            media["schema"],
            json!({"type": "string", "format": "binary", "contentMediaType": content_type})
        );
    }
    let headers = &doc["paths"]["/api/v1/media/{id}/content"]["get"]["responses"]["200"]["headers"];
    assert_eq!(
        headers["Content-Disposition"]["schema"]["enum"],
        json!(["inline", "attachment"])
    );
    assert_eq!(
        headers["Content-Security-Policy"]["schema"]["enum"],
        json!(["sandbox"])
    );
    let upload_schema = &doc["paths"]["/api/v1/media"]["post"]["requestBody"]["content"]["multipart/form-data"]
        ["schema"];
    assert_eq!(upload_schema["required"], json!(["file"]));
    assert_eq!(upload_schema["properties"]["file"]["format"], "binary");
    // The types the server really answers with are documented.
    let t = app.tenant().await;
    let media = upload(&app, &t, file(png(32), "p.png", "application/octet-stream"))
        .await
        .expect(201);
    let sent = media.body["content_type"].as_str().unwrap();
    assert!(types.contains(sent), "{sent}");
    let id = media.body["id"].as_str().unwrap();
    let bytes = app
        .http
        .get(format!("{}/api/v1/media/{id}/content", app.base))
        .bearer_auth(token(&t.owner))
        .header("X-Tenant-ID", t.id.to_string())
        .send()
        .await
        .unwrap();
    let served = bytes.headers()["content-type"].to_str().unwrap();
    assert!(types.contains(served), "{served}");
}

#[tokio::test]
async fn the_tenant_header_is_a_string_with_the_uuid_pattern() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let t = app.tenant().await;
    let mut scoped = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let header = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "X-Tenant-ID");
            let Some(header) = header else { continue };
            scoped += 1;
            let schema = &header["schema"];
            assert_eq!(schema["type"], "string", "{method} {path}");
            assert!(schema.get("format").is_none(), "{method} {path}: no format");
            let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
            assert!(pattern.is_match(&t.id.to_string()));
            assert!(!pattern.is_match("not-a-uuid"));
        }
    }
    assert!(scoped >= 29, "{scoped} tenant-scoped operations");
}

#[tokio::test]
async fn trust_answers_match_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let t = app.tenant().await;
    let call = |r: Call| r.owner_of(&t);

    let trust = call(app.get("/api/v1/trust")).send().await.expect(200);
    assert_documented(&doc, "get", "/api/v1/trust", &trust);
    let low = app.new_tenant().await;
    let explained = app
        .get("/api/v1/trust")
        .owner_of(&low)
        .send()
        .await
        .expect(200);
    assert!(explained.body["next_level"].is_object());
    assert_documented(&doc, "get", "/api/v1/trust", &explained);
    let list = call(app.get("/api/v1/trust/verifications"))
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/trust/verifications", &list);
    let sent = call(app.post("/api/v1/trust/verifications/email/send"))
        .json(&json!({"email": "doc@trust.example"}))
        .send()
        .await
        .expect(200);
    assert_documented(
        &doc,
        "post",
        "/api/v1/trust/verifications/email/send",
        &sent,
    );
    let media = upload(&app, &t, file(png(32), "d.png", "image/png"))
        .await
        .expect(201);
    let submitted = call(app.post("/api/v1/trust/verifications/documents"))
        .json(&json!({"kind": "tax_id", "media_ids": [media.body["id"]], "fields": {"n": "1"}}))
        .send()
        .await
        .expect(201);
    assert_documented(
        &doc,
        "post",
        "/api/v1/trust/verifications/documents",
        &submitted,
    );
    let queue = app
        .get("/api/v1/admin/verifications")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/admin/verifications", &queue);
    let id = submitted.body["id"].as_str().unwrap();
    let decided = app
        .post(&format!("/api/v1/admin/verifications/{id}/reject"))
        .user(ADMIN)
        .json(&json!({"reason": "blurry"}))
        .send()
        .await
        .expect(200);
    assert_documented(
        &doc,
        "post",
        "/api/v1/admin/verifications/{id}/reject",
        &decided,
    );
    for (method, path) in [
        ("get", "/api/v1/admin/tenants/{id}/trust"),
        ("post", "/api/v1/admin/tenants/{id}/trust/recompute"),
    ] {
        let real = path.replace("{id}", &t.id.to_string());
        let answer = app
            .call(method.to_uppercase().parse().unwrap(), &real)
            .user(ADMIN)
            .send()
            .await
            .expect(200);
        assert_documented(&doc, method, path, &answer);
    }
    let set = app
        .put(&format!("/api/v1/admin/tenants/{}/trust", t.id))
        .user(ADMIN)
        .json(&doc["components"]["schemas"]["SetTrust"]["example"])
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "put", "/api/v1/admin/tenants/{id}/trust", &set);
    crate::trust::set_level(&app, &t, 3, true).await;
    let risk = app
        .get("/api/v1/admin/risk")
        .user(ADMIN)
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "get", "/api/v1/admin/risk", &risk);

    let settings = call(app.put("/api/v1/tenant/settings"))
        .json(&doc["components"]["schemas"]["PutTenantSettings"]["example"])
        .send()
        .await
        .expect(200);
    assert_documented(&doc, "put", "/api/v1/tenant/settings", &settings);
    let bulk = call(app.post("/api/v1/products/bulk"))
        .json(&doc["components"]["schemas"]["BulkProducts"]["example"])
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/products/bulk", &bulk);
    let product = &bulk.body["items"][0];
    call(app.post("/api/v1/orders"))
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511912345678"},
                      "items": [{"product_id": product["id"], "quantity": 1}], "channel": "web"}),
        )
        .send()
        .await
        .expect(201);
    for path in [
        "/api/v1/analytics/summary",
        "/api/v1/analytics/timeseries?interval=week",
    ] {
        let answer = call(app.get(path)).send().await.expect(200);
        assert_documented(&doc, "get", path.split('?').next().unwrap(), &answer);
    }
    let key = call(app.post("/api/v1/api-keys"))
        .json(&json!({"name": "Doc", "role": "staff"}))
        .send()
        .await
        .expect(201);
    assert_documented(&doc, "post", "/api/v1/api-keys", &key);
    let keys = call(app.get("/api/v1/api-keys")).send().await.expect(200);
    assert_documented(&doc, "get", "/api/v1/api-keys", &keys);

    // The problems trust adds are problem documents with their extensions.
    let validator = Validator { doc: &doc };
    let gated = app
        .get("/api/v1/analytics/summary")
        .owner_of(&low)
        .send()
        .await
        .expect_problem(403, "feature_not_available");
    let capped = {
        for _ in 0..5 {
            app.product(&low, json!({})).await;
        }
        app.post("/api/v1/products")
            .owner_of(&low)
            .json(&json!({"name": "Six", "price_cents": 1, "currency": "USD"}))
            .send()
            .await
            .expect_problem(403, "quota_exceeded")
    };
    for problem in [&gated, &capped] {
        let errors = validator.errors(&schema_ref("Problem"), &problem.body, "problem");
        assert!(errors.is_empty(), "{errors:#?}");
    }
    assert_eq!(capped.body["reason"], "trust_level");
}

/// Every `$ref` in `value`, with where it is.
fn references<'v>(value: &'v Value, at: String, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                    _ => references(field, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                references(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_resolves() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut found = Vec::new();
    references(&doc, String::new(), &mut found);
    assert!(found.len() > 100, "{}", found.len());
    for (at, target) in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{at}: {target} is not a schema reference"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{at}: {target} does not resolve"
        );
    }
}

#[tokio::test]
async fn operation_ids_are_unique() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(seen.insert(id.to_string()), "{method} {path}: {id} twice");
            }
        }
    }
    assert!(seen.len() > 80, "{}", seen.len());
}
