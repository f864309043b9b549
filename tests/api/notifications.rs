//! Notifications (SPEC §8, issue 11) over HTTP and WebSocket against real peers: the API and
//! its isolation, the system's own notifications (orders, alerts), channel choice, templates,
//! the outbox with a real SMTP server (aiosmtpd) and a Twilio-shaped HTTP peer, the status
//! webhook, and a kill -9 of the server mid-burst.
//!
//! Tests that run the outbox use a database of their own: the outbox visits every tenant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use convcommerce::clock::ManualClock;
use convcommerce::db::Db;
use convcommerce::jobs::Job;
use convcommerce::notify::outbox::{Outbox, Wake};
use convcommerce::notify::webhook;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::*;
use crate::peers::{SmtpServer, TWILIO_TOKEN, TwilioPeer};

const NOTIFICATIONS: &str = "/api/v1/notifications";
/// The status callback every SMS names: `PUBLIC_BASE_URL` (see `delivering`) + the path.
const STATUS_CALLBACK: &str = "https://cc.example/api/v1/webhooks/twilio/status";

/// Sets a tenant's trust level as the trust feature will (here: SQL as the superuser).
pub async fn set_trust(app: &TestApp, tenant: &TestTenant, level: i16) {
    connect(&app.db.superuser_url)
        .await
        .execute(
            "UPDATE tenants SET trust_level = $2 WHERE id = $1",
            &[&tenant.id, &level],
        )
        .await
        .unwrap();
}

async fn send(app: &TestApp, t: &TestTenant, body: Value) -> Vec<String> {
    let sent = app
        .post(NOTIFICATIONS)
        .owner_of(t)
        .json(&body)
        .send()
        .await
        .expect(201);
    sent.body["notification_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

async fn list(app: &TestApp, t: &TestTenant, sub: &str, query: &str) -> Vec<Value> {
    app.get(&format!("{NOTIFICATIONS}?limit=100{query}"))
        .user(sub)
        .tenant(t.id)
        .send()
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn detail(app: &TestApp, t: &TestTenant, sub: &str, id: &str) -> Value {
    app.get(&format!("{NOTIFICATIONS}/{id}"))
        .user(sub)
        .tenant(t.id)
        .send()
        .await
        .expect(200)
        .body
}

fn delivery<'a>(n: &'a Value, channel: &str) -> &'a Value {
    n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == channel)
        .unwrap_or_else(|| panic!("a {channel} delivery in {n}"))
}

#[tokio::test]
async fn notifications_are_sent_listed_filtered_read_and_deleted_by_their_recipient_only() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let (staff, staff_id) = app.member(&t, "staff").await;
    let (admin, _) = app.member(&t, "admin").await;
    let other = app.tenant().await;
    let (_, stranger) = app.member(&other, "staff").await;

    // Default recipients: owners and admins.
    let ids = send(
        &app,
        &t,
        json!({"title": "Stock check", "body": "Count the Shelves",
        "priority": "high", "category": "operations", "metadata": {"shelf": 4}}),
    )
    .await;
    assert_eq!(ids.len(), 2);
    assert!(list(&app, &t, &staff, "").await.is_empty());
    let to_staff = send(
        &app,
        &t,
        json!({"title": "Hello staff", "body": "b",
        "priority": "low", "recipients": {"user_ids": [staff_id]}}),
    )
    .await;
    send(
        &app,
        &t,
        json!({"title": "Urgent one", "body": "fire drill",
        "priority": "urgent", "recipients": {"roles": ["owner"]}}),
    )
    .await;

    let mine = list(&app, &t, &t.owner, "").await;
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[0]["title"], "Urgent one", "newest first");
    assert_eq!(mine[0]["colour"], "red");
    assert_eq!(mine[1]["colour"], "orange");
    assert_eq!(mine[1]["metadata"], json!({"shelf": 4}));
    assert_eq!(mine[1]["source"]["type"], "manual");
    assert_eq!(mine[1]["read_at"], Value::Null);
    assert_eq!(list(&app, &t, &admin, "").await.len(), 1);
    assert_eq!(
        list(&app, &t, &staff, "").await[0]["id"],
        to_staff[0].as_str()
    );

    // Filters: priority, category, q (title or body, any case), unread.
    assert_eq!(list(&app, &t, &t.owner, "&priority=urgent").await.len(), 1);
    assert_eq!(
        list(&app, &t, &t.owner, "&category=operations").await.len(),
        1
    );
    assert_eq!(list(&app, &t, &t.owner, "&q=SHELVES").await.len(), 1);
    assert_eq!(list(&app, &t, &t.owner, "&q=drill").await.len(), 1);
    assert_eq!(list(&app, &t, &t.owner, "&q=nothing").await.len(), 0);
    assert_eq!(list(&app, &t, &t.owner, "&q=50%25").await.len(), 0);
    for bad in ["&priority=loud", "&category=Bad%20Cat", "&q=", "&limit=0"] {
        let r = app
            .get(&format!("{NOTIFICATIONS}?{bad}"))
            .owner_of(&t)
            .send()
            .await;
        assert!(matches!(r.status.as_u16(), 400 | 422), "{bad}: {}", r.body);
    }

    let count = app
        .get(&format!("{NOTIFICATIONS}/unread-count"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(
        count.body,
        json!({"total": 2, "by_priority": {"urgent": 1, "high": 1, "medium": 0, "low": 0}})
    );
    let urgent = mine[0]["id"].as_str().unwrap();
    let read = app
        .post(&format!("{NOTIFICATIONS}/{urgent}/read"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert!(read.body["read_at"].is_string());
    assert_eq!(list(&app, &t, &t.owner, "&unread=true").await.len(), 1);
    assert_eq!(list(&app, &t, &t.owner, "&unread=false").await.len(), 1);
    let unread = app
        .post(&format!("{NOTIFICATIONS}/{urgent}/unread"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(unread.body["read_at"], Value::Null);
    let all = app
        .post(&format!("{NOTIFICATIONS}/read-all"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(all.body["updated"], 2);
    assert_eq!(list(&app, &t, &t.owner, "&unread=true").await.len(), 0);
    let detail = detail(&app, &t, &t.owner, urgent).await;
    assert_eq!(delivery(&detail, "in_app")["status"], "delivered");

    // Another user's notification, another tenant's: 404 on every verb; nothing changes.
    let staffs = to_staff[0].as_str();
    for (method, path) in [
        ("GET", format!("{NOTIFICATIONS}/{staffs}")),
        ("POST", format!("{NOTIFICATIONS}/{staffs}/read")),
        ("POST", format!("{NOTIFICATIONS}/{staffs}/unread")),
        ("DELETE", format!("{NOTIFICATIONS}/{staffs}")),
    ] {
        app.call(method.parse().unwrap(), &path)
            .owner_of(&t)
            .send()
            .await
            .expect_problem(404, "not_found");
    }
    assert_eq!(list(&app, &t, &staff, "&unread=true").await.len(), 1);
    app.get(&format!("{NOTIFICATIONS}/{urgent}"))
        .owner_of(&other)
        .send()
        .await
        .expect_problem(404, "not_found");

    // Recipients of another tenant are 422, staff may not send, nothing is stored.
    let r = app
        .post(NOTIFICATIONS)
        .owner_of(&t)
        .json(&json!({"title": "x", "body": "y", "priority": "low",
                      "recipients": {"user_ids": [staff_id, stranger]}}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["recipients.user_ids[1]"]);
    app.post(NOTIFICATIONS)
        .user(&staff)
        .tenant(t.id)
        .json(&json!({"title": "x", "body": "y", "priority": "low"}))
        .send()
        .await
        .expect_problem(403, "forbidden");
    app.post(NOTIFICATIONS)
        .owner_of(&t)
        .json(&json!({"title": "x", "body": "y", "priority": "low", "recipients": [null, null]}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    let r = app
        .post(NOTIFICATIONS)
        .owner_of(&t)
        .json(&json!({"title": " ", "body": "y", "priority": "loud", "category": "Bad"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert!(!error_fields(&r).is_empty());
    assert_eq!(list(&app, &t, &staff, "").await.len(), 1);

    app.delete(&format!("{NOTIFICATIONS}/{urgent}"))
        .owner_of(&t)
        .send()
        .await
        .expect(204);
    app.get(&format!("{NOTIFICATIONS}/{urgent}"))
        .owner_of(&t)
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(list(&app, &t, &t.owner, "").await.len(), 1);
}

#[tokio::test]
async fn orders_notify_owners_and_admins_on_creation_and_dispute_and_push_them_live() {
    let app = TestApp::spawn().await;
    let t = app.new_tenant().await;
    let (admin, _) = app.member(&t, "admin").await;
    let (staff, _) = app.member(&t, "staff").await;

    // The owner's WebSocket receives its own notifications live.
    let url = format!(
        "{}/api/v1/ws?token={}&tenant_id={}",
        app.base.replacen("http", "ws", 1),
        token(&t.owner),
        t.id
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let ready = next_text(&mut ws).await;
    assert_eq!(ready["type"], "ready");

    let product = app
        .product(&t, json!({"price_cents": 4990, "currency": "BRL"}))
        .await;
    let order = app
        .post("/api/v1/orders")
        .owner_of(&t)
        .json(
            &json!({"customer": {"name": "Ana <b>", "phone": "+5511912345678"},
                      "items": [{"product_id": product["id"], "quantity": 2}],
                      "channel": "whatsapp"}),
        )
        .send()
        .await
        .expect(201);
    let order_id = order.body["id"].as_str().unwrap();

    let pushed = loop {
        let frame = next_text(&mut ws).await;
        if frame["channel"] == "notifications" {
            break frame;
        }
    };
    assert_eq!(
        pushed["data"]["source"],
        json!({"type": "order", "id": order_id})
    );
    assert_eq!(pushed["data"]["priority"], "medium");
    assert_eq!(pushed["data"]["colour"], "blue");
    assert_eq!(pushed["data"]["title"], "New order from Ana <b>");

    let owners = list(&app, &t, &t.owner, "").await;
    assert_eq!(owners.len(), 1);
    assert_eq!(
        owners[0]["id"], pushed["data"]["id"],
        "the push is the stored notification"
    );
    assert_eq!(owners[0]["body"], "1 item(s), 99.80 BRL, via whatsapp.");
    assert_eq!(owners[0]["category"], "orders");
    assert_eq!(list(&app, &t, &admin, "").await.len(), 1);
    assert!(
        list(&app, &t, &staff, "").await.is_empty(),
        "staff are not told"
    );

    // Medium: in-app only (the default settings).
    let created = detail(&app, &t, &t.owner, owners[0]["id"].as_str().unwrap()).await;
    assert_eq!(created["deliveries"].as_array().unwrap().len(), 1);

    for (status, extra) in [
        ("confirmed", json!({})),
        ("processing", json!({})),
        ("shipped", json!({"tracking_number": "BR1"})),
        ("disputed", json!({"reason": "Never arrived"})),
    ] {
        let mut body = extra;
        body["status"] = json!(status);
        app.post(&format!("/api/v1/orders/{order_id}/transitions"))
            .owner_of(&t)
            .json(&body)
            .send()
            .await
            .expect(200);
    }
    let owners = list(&app, &t, &t.owner, "").await;
    assert_eq!(owners.len(), 2, "only the dispute adds one");
    assert_eq!(owners[0]["priority"], "high");
    assert_eq!(owners[0]["body"], "99.80 BRL. Reason: Never arrived");
    // High: in-app and email; at trust level 0 the email is skipped, saying why.
    let disputed = detail(&app, &t, &t.owner, owners[0]["id"].as_str().unwrap()).await;
    let email = delivery(&disputed, "email");
    assert_eq!(email["status"], "skipped");
    assert!(
        email["last_error"]
            .as_str()
            .unwrap()
            .contains("trust level 1"),
        "{email}"
    );
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = m {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn an_alert_notifies_its_rules_recipients_with_its_severity_as_priority() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    app.set_limits(&t, json!({"requests_per_minute": 1000}))
        .await;
    let (staff, _) = app.member(&t, "staff").await;
    let (admin, _) = app.member(&t, "admin").await;
    // A custom rule for staff on every product creation, critical: urgent.
    app.post("/api/v1/monitoring/rules")
        .owner_of(&t)
        .json(&json!({"name": "Product made", "severity": "critical",
            "condition": {"field": "action", "op": "eq", "value": "product.created"},
            "channels": ["in_app"], "recipients": {"roles": ["staff"]}}))
        .send()
        .await
        .expect(201);
    app.product(&t, json!({})).await;
    // The built-in auth_failure_burst: 10 failed logins from one address, for the default
    // recipients (owners and admins).
    for _ in 0..10 {
        app.get("/api/v1/products")
            .token("not-a-token")
            .tenant(t.id)
            .send()
            .await
            .expect(401);
    }
    let arrived = eventually(Duration::from_secs(15), || async {
        !list(&app, &t, &staff, "").await.is_empty()
            && !list(&app, &t, &t.owner, "&category=alerts")
                .await
                .is_empty()
    })
    .await;
    assert!(arrived, "both alerts notify");
    let for_staff = list(&app, &t, &staff, "").await;
    assert_eq!(for_staff.len(), 1);
    assert_eq!(for_staff[0]["priority"], "urgent");
    assert_eq!(for_staff[0]["title"], "Alert: Product made");
    assert_eq!(for_staff[0]["source"]["type"], "alert");
    let alert_id = for_staff[0]["source"]["id"].as_str().unwrap();
    let alert = app
        .get(&format!("/api/v1/monitoring/alerts/{alert_id}"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(alert.body["severity"], "critical");
    let only_in_app = detail(&app, &t, &staff, for_staff[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        only_in_app["deliveries"].as_array().unwrap().len(),
        1,
        "the rule's channels"
    );

    let burst = list(&app, &t, &t.owner, "&category=alerts").await;
    assert_eq!(
        burst.len(),
        1,
        "the owner is not a recipient of the staff rule"
    );
    assert_eq!(burst[0]["priority"], "high");
    assert_eq!(burst[0]["title"], "Alert: Authentication failure burst");
    assert_eq!(list(&app, &t, &admin, "&category=alerts").await.len(), 1);
    // Within the rule's cooldown, more failures fire no alert and notify no one.
    for _ in 0..10 {
        app.get("/api/v1/products")
            .token("not-a-token")
            .tenant(t.id)
            .send()
            .await
            .expect(401);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(list(&app, &t, &t.owner, "&category=alerts").await.len(), 1);
}

#[tokio::test]
async fn settings_and_preferences_round_trip_and_refuse_what_is_invalid() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let (staff, _) = app.member(&t, "staff").await;
    let settings = app
        .get(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(
        settings.body,
        json!({"channels": {"urgent": ["in_app", "email", "sms"], "high": ["in_app", "email"],
                            "medium": ["in_app"], "low": ["in_app"]}})
    );
    let same = app
        .put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(&settings.body)
        .send()
        .await
        .expect(200);
    assert_eq!(same.body, settings.body, "PUT takes what GET gives");
    let mut changed = settings.body.clone();
    changed["channels"]["low"] = json!([]);
    changed["channels"]["medium"] = json!(["in_app", "email"]);
    app.put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(&changed)
        .send()
        .await
        .expect(200);
    let twice =
        json!({"channels": {"urgent": ["sms", "sms"], "high": [], "medium": [], "low": []}});
    let r = app
        .put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(&twice)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["channels.urgent[1]"]);
    app.put(&format!("{NOTIFICATIONS}/settings"))
        .user(&staff)
        .tenant(t.id)
        .json(&settings.body)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let now = app
        .get(&format!("{NOTIFICATIONS}/settings"))
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect(200);
    assert_eq!(now.body, changed);

    let prefs = app
        .get(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect(200);
    assert_eq!(
        prefs.body,
        json!({"opt_outs": [], "quiet_hours": null, "locale": "en"})
    );
    let mine = json!({"opt_outs": [{"channel": "sms"},
                                   {"channel": "email", "category": "orders"}],
                      "quiet_hours": {"timezone": "America/Sao_Paulo", "start": "22:00", "end": "07:00"},
                      "locale": "pt-BR"});
    let saved = app
        .put(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .json(&mine)
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body, mine);
    let owners = app
        .get(&format!("{NOTIFICATIONS}/preferences"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(
        owners.body["locale"], "en",
        "preferences are each member's own"
    );
    let bad = json!({"opt_outs": [{"channel": "sms", "category": "Bad!"}, {"channel": "fax"}],
                     "quiet_hours": {"timezone": "Mars/Base", "start": "25:00", "end": "07:00"},
                     "locale": "english"});
    let r = app
        .put(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .json(&bad)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert!(!error_fields(&r).is_empty());
    let bad = json!({"opt_outs": [{"channel": "sms", "category": "Bad!"}],
                     "quiet_hours": {"timezone": "Mars/Base", "start": "25:00", "end": "07:00"},
                     "locale": "english"});
    let r = app
        .put(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .json(&bad)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        error_fields(&r),
        [
            "opt_outs[0].category",
            "quiet_hours.timezone",
            "quiet_hours.start",
            "locale"
        ]
    );
    // PUT replaces the whole document: `quiet_hours` is sent, `null` for none.
    let r = app
        .put(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .json(&json!({"opt_outs": [], "locale": "en"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["quiet_hours"]);
    let kept = app
        .get(&format!("{NOTIFICATIONS}/preferences"))
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect(200);
    assert_eq!(kept.body, mine, "a refused PUT changes nothing");
}

#[tokio::test]
async fn templates_are_checked_on_save_resolved_by_locale_and_previewed_escaped() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let templates = format!("{NOTIFICATIONS}/templates");
    let preview = |locale: &str, channel: &str, vars: Value| {
        app.post(&format!("{templates}/preview")).owner_of(&t).json(
            &json!({"key": "order.created", "channel": channel, "locale": locale,
                          "variables": vars}),
        )
    };
    // The built-ins, with the fallback pt-BR -> pt -> en.
    let pt = preview("pt-BR", "sms", json!({})).send().await.expect(200);
    assert_eq!(
        pt.body["text"],
        "Test store: novo pedido de Ana, 99.80 BRL."
    );
    assert_eq!(pt.body["subject"], Value::Null);
    let de = preview("de-DE", "sms", json!({})).send().await.expect(200);
    assert!(
        de.body["text"]
            .as_str()
            .unwrap()
            .contains("new order from Ana")
    );

    // Checked on save: syntax and the key's variables, each fault named.
    let r = app
        .post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "order.created", "channel": "email", "locale": "pt",
                      "subject": "{{ code }} {{ order.id }}", "body": "{% if %}"}),
        )
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["body", "subject"]);
    assert!(
        r.body["errors"][1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variables: code")
    );
    let r = app
        .post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "alert.triggered", "channel": "sms", "locale": "en",
                      "body": "{{ rule.name }} {{ secret }} {{ order }}"}),
        )
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("order, secret")
    );
    for bad in [
        json!({"key": "order.unknown", "channel": "sms", "locale": "en", "body": "x"}),
        json!({"key": "order.created", "channel": "in_app", "locale": "en", "body": "x"}),
        json!({"key": "order.created", "channel": "sms", "locale": "english", "body": "x"}),
        json!({"key": "order.created", "channel": "sms", "locale": "en", "subject": "s", "body": "x"}),
    ] {
        app.post(&templates)
            .owner_of(&t)
            .json(&bad)
            .send()
            .await
            .expect_problem(422, "validation_failed");
    }

    // The tenant's pt (saved as pt-br, kept as pt-BR's language) wins over every built-in.
    let saved = app
        .post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "order.created", "channel": "email", "locale": "pt",
                      "subject": "Pedido de {{ order.customer.name }}",
                      "body": "<p>{{ order.customer.name }} — {{ metadata.note }}</p>"}),
        )
        .send()
        .await
        .expect(201);
    let id = saved.body["id"].as_str().unwrap();
    app.post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "order.created", "channel": "email", "locale": "pt",
                      "body": "<p>again</p>"}),
        )
        .send()
        .await
        .expect_problem(409, "template_exists");
    let shown = preview(
        "pt-BR",
        "email",
        json!({"order": {"customer": {"name": "<script>alert(1)</script>"}},
               "metadata": {"note": "a & b"}}),
    )
    .send()
    .await
    .expect(200);
    assert_eq!(shown.body["subject"], "Pedido de <script>alert(1)</script>");
    assert_eq!(
        shown.body["html"],
        "<p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt; — a &amp; b</p>"
    );
    assert_eq!(shown.body["text"], "<script>alert(1)</script> — a & b");
    let en = preview("en", "email", json!({})).send().await.expect(200);
    assert_eq!(en.body["subject"], "New order from Ana");

    let mut body = saved.body.clone();
    for k in ["id", "created_at", "updated_at"] {
        body.as_object_mut().unwrap().remove(k);
    }
    body["locale"] = json!("pt-br");
    body["subject"] = json!("Novo: {{ order.customer.name }}");
    let updated = app
        .put(&format!("{templates}/{id}"))
        .owner_of(&t)
        .json(&body)
        .send()
        .await
        .expect(200);
    assert_eq!(updated.body["locale"], "pt-BR");
    let page = app.get(&templates).owner_of(&t).send().await.expect(200);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    let (staff, _) = app.member(&t, "staff").await;
    app.get(&templates)
        .user(&staff)
        .tenant(t.id)
        .send()
        .await
        .expect_problem(403, "forbidden");
    let other = app.tenant().await;
    app.get(&format!("{templates}/{id}"))
        .owner_of(&other)
        .send()
        .await
        .expect_problem(404, "not_found");
    app.delete(&format!("{templates}/{id}"))
        .owner_of(&t)
        .send()
        .await
        .expect(204);
    let back = preview("pt-BR", "email", json!({}))
        .send()
        .await
        .expect(200);
    assert_eq!(
        back.body["subject"], "Novo pedido de Ana",
        "the built-in applies again"
    );
}

#[tokio::test]
async fn users_have_an_optional_e164_phone() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let created = app
        .post("/api/v1/users")
        .owner_of(&t)
        .json(
            &json!({"external_id": "phoned", "email": "p@test.example", "role": "staff",
                      "phone": "+55 (11) 91234-5678"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(created.body["phone"], "+5511912345678");
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{id}");
    let r = app
        .patch(&path)
        .owner_of(&t)
        .json(&json!({"phone": "5511912345678"}))
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["phone"]);
    let cleared = app
        .patch(&path)
        .owner_of(&t)
        .json(&json!({"phone": null}))
        .send()
        .await
        .expect(200);
    assert_eq!(cleared.body["phone"], Value::Null);
    let kept = app
        .patch(&path)
        .owner_of(&t)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect(200);
    assert_eq!(kept.body["phone"], Value::Null);
    app.post("/api/v1/users")
        .owner_of(&t)
        .json(
            &json!({"external_id": "bad", "email": "b@test.example", "role": "staff",
                      "phone": "12"}),
        )
        .send()
        .await
        .expect_problem(422, "validation_failed");
}

/// `sub`'s newest notification, with its deliveries.
/// A staff member `sub` with the address `sub@test.example`, as created.
async fn staff(app: &TestApp, t: &TestTenant, sub: &str) -> Value {
    app.post("/api/v1/users")
        .owner_of(t)
        .json(&json!({"external_id": sub, "email": format!("{sub}@test.example"), "role": "staff"}))
        .send()
        .await
        .expect(201)
        .body
}

async fn latest(app: &TestApp, t: &TestTenant, sub: &str) -> Value {
    let n = list(app, t, sub, "").await;
    detail(app, t, sub, n[0]["id"].as_str().unwrap()).await
}

async fn sms_of(app: &TestApp, t: &TestTenant, sub: &str) -> Value {
    delivery(&latest(app, t, sub).await, "sms").clone()
}

/// A server on a database of its own with the real peers, and the outbox as a job the test
/// drives (`run_once`) on a clock it moves.
struct Delivering {
    app: TestApp,
    clock: ManualClock,
    outbox: Outbox,
}

async fn delivering(vars: Vec<(String, String)>) -> Delivering {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 10, 15, 0, 0).unwrap());
    let db = private_database().await;
    let extra = vars.clone();
    let app = TestApp::spawn_full(db, Some(clock.clone()), move |v| {
        v.extend(extra);
        v.insert("PUBLIC_BASE_URL".into(), "https://cc.example".into());
        // The test runs the passes itself.
        v.insert("NOTIFY_WORKERS".into(), "0".into());
    })
    .await;
    let outbox = outbox(&app, &clock);
    Delivering { app, clock, outbox }
}

/// An outbox of the test's own on `app`'s database and configuration (the server's runs no
/// workers), reading `clock`.
fn outbox(app: &TestApp, clock: &ManualClock) -> Outbox {
    Outbox::new(
        Db::connect(&SecretString::from(app.db.app_url.clone()), 2, 0).unwrap(),
        Arc::new(clock.clone()),
        &app.config.notify,
        app.config.public_base_url.as_ref(),
        Arc::new(convcommerce::metrics::Metrics::default()),
        Wake::default(),
    )
    .unwrap()
}

impl Delivering {
    async fn stop(self) {
        let db = self.app.db.clone();
        self.app.stop().await;
        drop_database(&db).await;
    }
}

#[tokio::test]
async fn email_goes_out_over_smtp_as_multipart_with_the_priority_and_a_stable_message_id() {
    let smtp = SmtpServer::start("none", None, 0);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    app.put(&format!("{NOTIFICATIONS}/preferences"))
        .owner_of(&t)
        .json(&json!({"opt_outs": [], "quiet_hours": null, "locale": "pt-BR"}))
        .send()
        .await
        .expect(200);
    let ids = send(
        app,
        &t,
        json!({"title": "Caixa <b>baixo</b>", "body": "Só 3 & contando",
        "priority": "urgent", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let queued = detail(app, &t, &t.owner, &ids[0]).await;
    assert_eq!(delivery(&queued, "email")["status"], "queued");
    assert_eq!(delivery(&queued, "in_app")["status"], "delivered");
    let sms = delivery(&queued, "sms");
    assert_eq!(sms["status"], "skipped");
    assert!(
        sms["last_error"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{sms}"
    );

    let report = d.outbox.run_once().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.to, [format!("{}@test.example", t.owner)]);
    assert_eq!(m.subject(), "[URGENT] Caixa <b>baixo</b>");
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        m.data
    );
    assert!(m.data.contains("Content-Type: text/plain"));
    assert!(m.data.contains("Content-Type: text/html"));
    assert!(
        m.data.contains("Caixa &lt;b&gt;baixo&lt;&#x2f;b&gt;"),
        "escaped in HTML: {}",
        m.data
    );
    let sent = detail(app, &t, &t.owner, &ids[0]).await;
    let email = delivery(&sent, "email");
    assert_eq!(email["status"], "sent");
    assert_eq!(email["attempts"], 1);
    let message_id = email["provider_id"].as_str().unwrap();
    assert_eq!(m.header("Message-ID").as_deref(), Some(message_id));
    assert!(message_id.ends_with("@notify.example>"));

    // A verification code goes out at trust level 0 too, never skipped for trust.
    let other = app.tenant().await;
    let db = Db::connect(&SecretString::from(app.db.app_url.clone()), 1, 0).unwrap();
    let tx = db.for_tenant(other.id).begin().await.unwrap();
    let notifier = convcommerce::notify::Notifier::new(
        &app.config.notify,
        Arc::new(d.clock.clone()),
        app.publisher.clone(),
        Wake::default(),
    );
    let queued = notifier
        .enqueue_code(
            &tx,
            convcommerce::monitoring::rules::model::NotifyChannel::Email,
            "new-owner@shop.example",
            "482913",
            "en",
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    notifier.published(queued);
    assert_eq!(d.outbox.run_once().await.unwrap().sent, 1);
    let code = &smtp.wait_for(2).await[1];
    assert_eq!(code.subject(), "[HIGH] 482913 is your verification code");
    assert_eq!(code.to, ["new-owner@shop.example"]);
    let scrubbed = connect(&app.db.superuser_url)
        .await
        .query_one(
            "SELECT status, variables FROM notification_deliveries
             WHERE tenant_id = $1 AND notification_id IS NULL",
            &[&other.id],
        )
        .await
        .unwrap();
    assert_eq!(scrubbed.get::<_, String>(0), "sent");
    assert_eq!(
        scrubbed.get::<_, Option<Value>>(1),
        None,
        "the code is not kept once sent"
    );
    d.stop().await;
}

/// A CA and a certificate for `localhost` signed by it, as PEM files; the CA's path.
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    (
        path("ca.pem", ca.pem()),
        path("cert.pem", cert.pem()),
        path("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn smtp_tls_modes_starttls_and_tls_are_spoken() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("smtp-tls-{}", Uuid::now_v7().simple()));
    let (ca, cert, key) = tls_files(&dir);
    for mode in ["starttls", "tls"] {
        let smtp = SmtpServer::start(mode, Some((&cert, &key)), 0);
        let mut vars = smtp.vars(mode);
        vars.push(("SMTP_TLS_CA_FILE".into(), ca.clone()));
        let d = delivering(vars).await;
        let t = d.app.tenant().await;
        set_trust(&d.app, &t, 1).await;
        send(
            &d.app,
            &t,
            json!({"title": "TLS", "body": mode, "priority": "high"}),
        )
        .await;
        assert_eq!(d.outbox.run_once().await.unwrap().sent, 1, "{mode}");
        let mail = smtp.wait_for(1).await;
        assert!(mail[0].tls, "{mode}: the message came over TLS");
        assert_eq!(mail[0].subject(), "[HIGH] TLS");
        d.stop().await;
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn smtp_refusals_retry_with_backoff_or_fail_for_good_and_a_final_status_never_changes() {
    let smtp = SmtpServer::start("none", None, 0);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let flaky = staff(app, &t, "flaky").await;
    let permanent = staff(app, &t, "permanent").await;
    send(
        app,
        &t,
        json!({"title": "Two", "body": "b", "priority": "high",
        "recipients": {"user_ids": [flaky["id"], permanent["id"]]}}),
    )
    .await;
    let report = d.outbox.run_once().await.unwrap();
    assert_eq!(
        (report.sent, report.retried, report.failed),
        (0, 1, 1),
        "{report:?}"
    );
    let retrying = latest(app, &t, "flaky").await;
    let email = delivery(&retrying, "email");
    assert_eq!(email["status"], "queued");
    assert_eq!(email["attempts"], 1);
    assert!(
        email["last_error"].as_str().unwrap().contains("451"),
        "{email}"
    );
    let failed = latest(app, &t, "permanent").await;
    let email = delivery(&failed, "email");
    assert_eq!(email["status"], "failed");
    assert!(
        email["last_error"].as_str().unwrap().contains("550"),
        "{email}"
    );

    // Not before its backoff (the base, 2 s, jittered to 1-2 s); then it goes.
    assert_eq!(d.outbox.run_once().await.unwrap(), Default::default());
    d.clock.advance(chrono::Duration::seconds(3));
    let report = d.outbox.run_once().await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 0), "{report:?}");
    let sent = latest(app, &t, "flaky").await;
    assert_eq!(delivery(&sent, "email")["status"], "sent");
    assert_eq!(delivery(&sent, "email")["attempts"], 2);
    assert_eq!(smtp.wait_for(1).await[0].to, ["flaky@test.example"]);

    // Failed is final: nothing moves it, not even the superuser.
    let owner = connect(&app.db.superuser_url).await;
    let err = owner
        .execute(
            "UPDATE notification_deliveries SET status = 'queued' WHERE status = 'failed'",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("cannot move"),
        "{err:?}"
    );
    let err = owner
        .execute(
            "UPDATE notification_deliveries SET status = 'sending' WHERE status = 'sent'",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("cannot move"),
        "{err:?}"
    );
    d.clock.advance(chrono::Duration::hours(2));
    assert_eq!(d.outbox.run_once().await.unwrap(), Default::default());
    assert_eq!(
        delivery(&latest(app, &t, "permanent").await, "email")["status"],
        "failed"
    );
    d.stop().await;
}

#[tokio::test]
async fn quiet_hours_hold_email_until_they_end_and_urgent_goes_past_them_and_opt_outs() {
    let smtp = SmtpServer::start("none", None, 0);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    // 15:00 UTC is 12:00 in São Paulo: quiet from 11:00 to 13:00, and no email about orders.
    app.put(&format!("{NOTIFICATIONS}/preferences"))
        .owner_of(&t)
        .json(
            &json!({"opt_outs": [{"channel": "email", "category": "orders"}],
            "quiet_hours": {"timezone": "America/Sao_Paulo", "start": "11:00", "end": "13:00"},
            "locale": "en"}),
        )
        .send()
        .await
        .expect(200);
    let held = send(
        app,
        &t,
        json!({"title": "Held", "body": "b", "priority": "high",
        "category": "reports"}),
    )
    .await;
    let opted = send(
        app,
        &t,
        json!({"title": "Opted", "body": "b", "priority": "high",
        "category": "orders"}),
    )
    .await;
    let urgent = send(
        app,
        &t,
        json!({"title": "Urgent", "body": "b", "priority": "urgent",
        "category": "orders"}),
    )
    .await;
    let skipped = detail(app, &t, &t.owner, &opted[0]).await;
    assert_eq!(delivery(&skipped, "email")["status"], "skipped");
    assert!(
        delivery(&skipped, "email")["last_error"]
            .as_str()
            .unwrap()
            .contains("opted out")
    );

    let report = d.outbox.run_once().await.unwrap();
    assert_eq!(report.sent, 1, "only the urgent one: {report:?}");
    assert_eq!(smtp.wait_for(1).await[0].subject(), "[URGENT] Urgent");
    let bypassed = detail(app, &t, &t.owner, &urgent[0]).await;
    assert_eq!(
        delivery(&bypassed, "email")["bypassed"],
        json!(["opt_out", "quiet_hours"])
    );
    assert_eq!(delivery(&bypassed, "in_app")["bypassed"], json!([]));
    assert_eq!(
        delivery(&detail(app, &t, &t.owner, &held[0]).await, "email")["status"],
        "queued"
    );

    d.clock.advance(chrono::Duration::minutes(59));
    assert_eq!(
        d.outbox.run_once().await.unwrap().sent,
        0,
        "12:59 in São Paulo"
    );
    d.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(
        d.outbox.run_once().await.unwrap().sent,
        1,
        "13:00: the quiet hours ended"
    );
    assert_eq!(smtp.wait_for(2).await[1].subject(), "[HIGH] Held");
    d.stop().await;
}

async fn sms_recipient(app: &TestApp, t: &TestTenant, sub: &str, phone: &str) -> Value {
    app.post("/api/v1/users")
        .owner_of(t)
        .json(
            &json!({"external_id": sub, "email": format!("{sub}@test.example"),
                      "role": "staff", "phone": phone}),
        )
        .send()
        .await
        .expect(201)
        .body
}

#[tokio::test]
async fn sms_go_to_twilio_and_its_errors_retry_or_fail_as_they_say() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let mut ids = vec![];
    for (sub, phone) in [
        ("ok", "+5511912345678"),
        ("invalid", "+15005550001"),
        ("limited", "+15554290000"),
        ("broken", "+15555000000"),
        ("slow", "+15557770000"),
    ] {
        ids.push(sms_recipient(app, &t, sub, phone).await["id"].clone());
    }
    app.put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(&json!({"channels": {"urgent": ["sms"], "high": ["sms"], "medium": [], "low": []}}))
        .send()
        .await
        .expect(200);
    let long = "x".repeat(400);
    send(
        app,
        &t,
        json!({"title": "Stock", "body": long, "priority": "high",
        "recipients": {"user_ids": ids}}),
    )
    .await;
    let report = d.outbox.run_once().await.unwrap();
    assert_eq!(
        (report.sent, report.retried, report.failed),
        (1, 3, 1),
        "{report:?}"
    );
    let ok = sms_of(app, &t, "ok").await;
    assert_eq!(ok["status"], "sent");
    // (The slow peer may still finish the request the client gave up on.)
    let sent: Vec<_> = twilio
        .sent()
        .into_iter()
        .filter(|s| s.form["To"] == "+5511912345678")
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(ok["provider_id"], sent[0].sid.as_str());
    let form = &sent[0].form;
    assert_eq!(form["To"], "+5511912345678");
    assert_eq!(form["From"], "+15005550006");
    assert!(form["Body"].chars().count() <= 320, "two segments at most");
    assert!(form["Body"].starts_with("Test store: Stock."));
    // Exactly PUBLIC_BASE_URL + the path (SPEC §8): no query naming a tenant or delivery.
    assert_eq!(form["StatusCallback"], STATUS_CALLBACK);
    let invalid = sms_of(app, &t, "invalid").await;
    assert_eq!(invalid["status"], "failed");
    assert!(
        invalid["last_error"].as_str().unwrap().contains("21211"),
        "{invalid}"
    );
    for sub in ["limited", "broken", "slow"] {
        let retry = sms_of(app, &t, sub).await;
        assert_eq!(retry["status"], "queued", "{sub}: {retry}");
        assert_eq!(retry["attempts"], 1);
    }
    assert!(
        sms_of(app, &t, "limited").await["last_error"]
            .as_str()
            .unwrap()
            .contains("429")
    );
    assert!(
        sms_of(app, &t, "slow").await["last_error"]
            .as_str()
            .unwrap()
            .contains("in time")
    );
    // Retry-After: 2 is honoured (the backoff alone could be shorter).
    d.clock.advance(chrono::Duration::milliseconds(1900));
    d.outbox.run_once().await.unwrap();
    assert_eq!(sms_of(app, &t, "limited").await["status"], "queued");
    d.clock.advance(chrono::Duration::seconds(5));
    d.outbox.run_once().await.unwrap();
    for sub in ["limited", "broken", "slow"] {
        assert_eq!(sms_of(app, &t, sub).await["status"], "sent", "{sub}");
    }
    d.stop().await;
}

/// POSTs a Twilio status callback to the webhook, signed (or not) as Twilio would for the
/// public URL `callback`.
async fn callback(
    app: &TestApp,
    callback: &str,
    params: &[(&str, &str)],
    sign: Option<&str>,
) -> Response {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let path = callback.strip_prefix("https://cc.example").unwrap();
    let mut call = app
        .post(path)
        .body("application/x-www-form-urlencoded", body);
    if let Some(token) = sign {
        call = call.header(
            "X-Twilio-Signature",
            &webhook::signature(token, callback, &pairs),
        );
    }
    call.send().await
}

/// The SMS events a tenant has recorded (as the superuser: every tenant).
async fn sms_events(app: &TestApp, tenant: Uuid) -> i64 {
    connect(&app.db.superuser_url)
        .await
        .query_one(
            "SELECT count(*) FROM notification_sms_events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

/// Sends an urgent notification to `user` of `t` and runs the outbox: its SMS is `sent`.
async fn texted(d: &Delivering, t: &TestTenant, user: &Value) {
    send(
        &d.app,
        t,
        json!({"title": "Hi", "body": "b", "priority": "urgent",
        "recipients": {"user_ids": [user["id"]]}}),
    )
    .await;
    d.outbox.run_once().await.unwrap();
}

const CALLBACKS: &str = "convcommerce_notification_sms_callbacks_total";

#[tokio::test]
async fn the_twilio_webhook_checks_signatures_moves_forward_only_and_ignores_repeats() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.tenant().await;
    let other = app.tenant().await;
    set_trust(app, &t, 1).await;
    set_trust(app, &other, 1).await;
    let user = sms_recipient(app, &t, "texted", "+5511912345678").await;
    let neighbour = sms_recipient(app, &other, "neighbour", "+5511987654321").await;
    texted(&d, &t, &user).await;
    texted(&d, &other, &neighbour).await;
    let sent = twilio
        .sent()
        .into_iter()
        .find(|s| s.form["To"] == "+5511912345678")
        .unwrap();
    let url = sent.form["StatusCallback"].clone();
    assert_eq!(url, STATUS_CALLBACK);
    let before = sms_of(app, &t, "texted").await;
    assert_eq!(before["status"], "sent");
    assert_eq!(before["provider_id"], sent.sid.as_str());
    let delivered = [
        ("MessageSid", sent.sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", crate::peers::TWILIO_SID),
        ("To", "+5511912345678"),
    ];

    // For the real sid, with a missing or forged signature (another key), or one for another
    // URL (a query added, another host): 403, unchanged.
    callback(app, &url, &delivered, None)
        .await
        .expect_problem(403, "forbidden");
    callback(app, &url, &delivered, Some("not-the-token"))
        .await
        .expect_problem(403, "forbidden");
    let pairs: Vec<(String, String)> = delivered
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let with_query = format!("{url}?tenant_id={}", other.id);
    for (path, signed_for) in [
        (
            format!("{}?tenant_id={}", webhook::PATH, other.id),
            url.clone(),
        ),
        (webhook::PATH.to_string(), with_query),
        (
            webhook::PATH.to_string(),
            format!("https://elsewhere.example{}", webhook::PATH),
        ),
    ] {
        app.post(&path)
            .body("application/x-www-form-urlencoded", body.clone())
            .header(
                "X-Twilio-Signature",
                &webhook::signature(TWILIO_TOKEN, &signed_for, &pairs),
            )
            .send()
            .await
            .expect_problem(403, "forbidden");
    }
    let mut forged = delivered;
    forged[1] = ("MessageStatus", "failed");
    let mut extra = forged.to_vec();
    extra.push(("Extra", "x"));
    // Signed without the extra field, sent with it: the signature does not cover the body.
    let pairs: Vec<(String, String)> = forged
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .finish();
    app.post(webhook::PATH)
        .body("application/x-www-form-urlencoded", body)
        .header(
            "X-Twilio-Signature",
            &webhook::signature(TWILIO_TOKEN, &url, &pairs),
        )
        .send()
        .await
        .expect_problem(403, "forbidden");
    let unchanged = sms_of(app, &t, "texted").await;
    assert_eq!(unchanged["status"], "sent");
    assert_eq!(unchanged["updated_at"], before["updated_at"]);
    assert_eq!(sms_events(app, t.id).await, 0, "nothing read or written");
    assert_eq!(
        app.metric(&format!("{CALLBACKS}{{kind=\"refused\"}}"))
            .await,
        6.0
    );

    // Signed, for a sid no delivery has: answered 2xx after the wait for a late route, and
    // nothing changes anywhere.
    let unknown = format!("SM{}", Uuid::now_v7().simple());
    let started = std::time::Instant::now();
    callback(
        app,
        &url,
        &[
            ("MessageSid", unknown.as_str()),
            ("MessageStatus", "failed"),
        ],
        Some(TWILIO_TOKEN),
    )
    .await
    .expect(204);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it waited"
    );
    assert_eq!(
        app.metric(&format!("{CALLBACKS}{{kind=\"unknown\"}}"))
            .await,
        1.0
    );
    assert_eq!(sms_of(app, &t, "texted").await["status"], "sent");
    assert_eq!(sms_of(app, &other, "neighbour").await["status"], "sent");
    assert_eq!(
        sms_events(app, t.id).await + sms_events(app, other.id).await,
        0
    );

    // A status that says nothing new, then delivered; a repeat and a later `failed` change
    // nothing (delivered is final), and are still answered 2xx.
    let queued = [
        ("MessageSid", sent.sid.as_str()),
        ("MessageStatus", "queued"),
    ];
    callback(app, &url, &queued, Some(TWILIO_TOKEN))
        .await
        .expect(204);
    assert_eq!(sms_of(app, &t, "texted").await["status"], "sent");
    callback(app, &url, &delivered, Some(TWILIO_TOKEN))
        .await
        .expect(204);
    let done = sms_of(app, &t, "texted").await;
    assert_eq!(done["status"], "delivered");
    assert_eq!(
        sms_of(app, &other, "neighbour").await["status"],
        "sent",
        "the sid moved its own tenant's delivery only"
    );
    // From here the delivery is final: callbacks write nothing at all, the row (its tuple
    // included: xmin names the transaction that last wrote it) is byte for byte the same.
    let superuser = connect(&app.db.superuser_url).await;
    let row = || async {
        superuser
            .query_one(
                "SELECT d.xmin::text, d::text FROM notification_deliveries d
                 WHERE d.tenant_id = $1 AND d.provider_id = $2",
                &[&t.id, &sent.sid],
            )
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .unwrap()
    };
    let final_row = row().await;
    let failed = [
        ("MessageSid", sent.sid.as_str()),
        ("MessageStatus", "failed"),
        ("ErrorCode", "30003"),
    ];
    let read = [("MessageSid", sent.sid.as_str()), ("MessageStatus", "read")];
    let sent_again = [("MessageSid", sent.sid.as_str()), ("MessageStatus", "sent")];
    let queued_again = [
        ("MessageSid", sent.sid.as_str()),
        ("MessageStatus", "sending"),
    ];
    for params in [
        &delivered[..],
        &failed[..],
        &read[..],
        &sent_again[..],
        &queued_again[..],
    ] {
        callback(app, &url, params, Some(TWILIO_TOKEN))
            .await
            .expect(204);
        assert_eq!(row().await, final_row, "{params:?}");
    }
    let after = sms_of(app, &t, "texted").await;
    assert_eq!(after["status"], "delivered");
    assert_eq!(after["updated_at"], done["updated_at"]);
    assert_eq!(after["last_error"], Value::Null);
    assert_eq!(
        sms_events(app, t.id).await,
        2,
        "queued and delivered, each recorded once; nothing once final"
    );
    assert_eq!(sms_events(app, other.id).await, 0);
    assert_eq!(
        app.metric(&format!("{CALLBACKS}{{kind=\"applied\"}}"))
            .await,
        1.0
    );
    d.stop().await;
}

/// Twilio can call back before the outbox has recorded `sent` (and the sid's route): the
/// webhook waits for the route, then applies the callback.
#[tokio::test]
async fn a_callback_that_overtakes_the_sent_commit_waits_for_its_route() {
    let twilio = TwilioPeer::start().await;
    let mut vars = twilio.vars();
    vars.push(("TWILIO_TIMEOUT_MILLISECONDS".into(), "5000".into()));
    let d = delivering(vars).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    // The peer holds its answer to this number for a second after taking the message.
    let user = sms_recipient(app, &t, "patient", "+15553330000").await;
    send(
        app,
        &t,
        json!({"title": "Hi", "body": "b", "priority": "urgent",
        "recipients": {"user_ids": [user["id"]]}}),
    )
    .await;
    let superuser = connect(&app.db.superuser_url).await;
    let (report, answer) = tokio::join!(d.outbox.run_once(), async {
        assert!(
            eventually(Duration::from_secs(10), || async {
                !twilio.sent().is_empty()
            })
            .await
        );
        let sid = twilio.sent()[0].sid.clone();
        let routed: i64 = superuser
            .query_one("SELECT count(*) FROM sms_routes WHERE sid = $1", &[&sid])
            .await
            .unwrap()
            .get(0);
        assert_eq!(routed, 0, "the callback comes before the route");
        callback(
            app,
            STATUS_CALLBACK,
            &[("MessageSid", sid.as_str()), ("MessageStatus", "delivered")],
            Some(TWILIO_TOKEN),
        )
        .await
    });
    assert_eq!(report.unwrap().sent, 1);
    answer.expect(204);
    let sms = sms_of(app, &t, "patient").await;
    assert_eq!(sms["status"], "delivered", "{sms}");
    assert_eq!(sms["provider_id"], twilio.sent()[0].sid.as_str());
    d.stop().await;
}

/// The routes go with their deliveries: a deleted user's at the next purge, the rest after the
/// retention.
#[tokio::test]
async fn sms_routes_are_purged_with_their_deliveries() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let kept = sms_recipient(app, &t, "kept", "+5511912345678").await;
    let leaving = sms_recipient(app, &t, "leaving", "+5511987654321").await;
    texted(&d, &t, &kept).await;
    texted(&d, &t, &leaving).await;
    let superuser = connect(&app.db.superuser_url).await;
    let routes = || async {
        superuser
            .query(
                "SELECT r.sid FROM sms_routes r WHERE r.tenant = $1 ORDER BY r.sid",
                &[&t.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let mut sids: Vec<String> = twilio.sent().into_iter().map(|s| s.sid).collect();
    sids.sort();
    assert_eq!(routes().await, sids, "one route per SMS sent");
    let kept_sid = sms_of(app, &t, "kept").await["provider_id"].clone();

    app.delete(&format!(
        "/api/v1/users/{}",
        leaving["id"].as_str().unwrap()
    ))
    .owner_of(&t)
    .send()
    .await
    .expect(204);
    let purge = convcommerce::notify::purge::NotificationPurge {
        db: Db::connect(&SecretString::from(app.db.app_url.clone()), 1, 0).unwrap(),
        clock: Arc::new(d.clock.clone()),
    };
    purge.run_once().await.unwrap();
    assert_eq!(routes().await, vec![kept_sid.as_str().unwrap().to_string()]);

    d.clock.advance(chrono::Duration::days(91));
    assert_eq!(purge.run_once().await.unwrap(), 1);
    assert!(routes().await.is_empty());
    d.stop().await;
}

/// The binary as a child process, killed (SIGKILL) when dropped, a failing test included.
struct Server(std::process::Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The binary as a child process on `port`, with `vars`.
fn spawn_server(port: u16, vars: &BTreeMap<String, String>) -> Server {
    Server(
        std::process::Command::new(env!("CARGO_BIN_EXE_convcommerce"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts"),
    )
}

async fn healthy(base: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
}

/// Issue 11: kill -9 the server during a burst of 50 urgent notifications, restart it, and
/// the SMTP server has each of them exactly once after deduplication by the Message-ID the
/// outbox derives from the delivery row (`<delivery-id@domain>`). How many a receiver had
/// twice (sent again after the crash) is printed, not bounded: SPEC allows the repeat.
#[tokio::test]
async fn a_kill_9_mid_burst_then_a_restart_delivers_each_of_50_urgent_emails_once_by_message_id() {
    // Each message takes the SMTP server 40 ms, so the burst is still going when the server
    // is killed.
    let smtp = SmtpServer::start("none", None, 40);
    let db = private_database().await;
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let t = app.tenant().await;
    set_trust(&app, &t, 1).await;
    app.set_limits(&t, json!({"requests_per_minute": 1000}))
        .await;
    app.put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(&json!({"channels": {"urgent": ["email"], "high": [], "medium": [], "low": []}}))
        .send()
        .await
        .expect(200);
    app.stop().await;

    let mut vars = config_vars(&db);
    vars.extend(smtp.vars("none"));
    vars.insert("NOTIFY_LEASE_SECONDS".into(), "2".into());
    vars.insert("SMTP_TIMEOUT_MILLISECONDS".into(), "1000".into());
    vars.insert("NOTIFY_WORKERS".into(), "4".into());
    let port = crate::peers::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(port, &vars);
    assert!(healthy(&base).await, "the server starts");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let sent = http
            .post(format!("{base}{NOTIFICATIONS}"))
            .bearer_auth(token(&t.owner))
            .header("X-Tenant-ID", t.id.to_string())
            .json(
                &json!({"title": format!("Burst {i}"), "body": "b", "priority": "urgent",
                          "recipients": {"roles": ["owner"]}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 201);
        ids.push(sent.json::<Value>().await.unwrap()["notification_ids"][0].clone());
    }
    // Mid-burst: some sent, most not.
    smtp.wait_for(5).await;
    server.kill();
    let at_kill = smtp.received().len();
    assert!(at_kill < 50, "the kill came mid-burst ({at_kill} sent)");

    let mut server = spawn_server(port, &vars);
    assert!(healthy(&base).await, "the server restarts");
    let superuser = connect(&db.superuser_url).await;
    let all_sent = eventually(Duration::from_secs(30), || async {
        let sent: i64 = superuser
            .query_one(
                "SELECT count(*) FROM notification_deliveries
                 WHERE tenant_id = $1 AND channel = 'email' AND status = 'sent'",
                &[&t.id],
            )
            .await
            .unwrap()
            .get(0);
        sent == 50
    })
    .await;
    server.kill();
    assert!(all_sent, "every delivery is sent after the restart");
    let mail = smtp.received();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mail {
        *by_id.entry(m.header("Message-ID").unwrap()).or_default() += 1;
    }
    // The Message-IDs expected: one per outbox row of the burst, derived from its id.
    let rows = superuser
        .query(
            "SELECT d.id, d.status, d.provider_id, n.title FROM notification_deliveries d
             JOIN notifications n ON n.tenant_id = d.tenant_id AND n.id = d.notification_id
             WHERE d.tenant_id = $1 AND d.channel = 'email'",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 50, "one outbox row per notification");
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows {
        let id: Uuid = row.get(0);
        let message_id = format!("<{id}@notify.example>");
        assert_eq!(row.get::<_, String>(1), "sent");
        assert_eq!(
            row.get::<_, String>(2),
            message_id,
            "provider_id is the Message-ID"
        );
        expected.insert(message_id, row.get(3));
    }
    // After dedup by Message-ID: exactly the fifty, each with its own notification's subject.
    let received: BTreeMap<String, String> = mail
        .iter()
        .map(|m| (m.header("Message-ID").unwrap(), m.subject()))
        .collect();
    let titles: BTreeMap<String, String> = expected
        .iter()
        .map(|(id, title)| (id.clone(), format!("[URGENT] {title}")))
        .collect();
    assert_eq!(received, titles, "each of the 50 received, nothing else");
    assert_eq!(by_id.len(), 50);
    let resent = mail.len() - by_id.len();
    println!(
        "crash test: {at_kill} received before the kill; 50 of 50 received once after \
         dedup by Message-ID; {resent} re-sent after the restart (received twice)"
    );
    drop_database(&db).await;
}

#[tokio::test]
async fn the_purge_keeps_notifications_for_90_days() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 10, 15, 0, 0).unwrap());
    let db = private_database().await;
    let app = TestApp::spawn_full(db.clone(), Some(clock.clone()), |_| {}).await;
    let t = app.tenant().await;
    send(
        &app,
        &t,
        json!({"title": "Old", "body": "b", "priority": "low"}),
    )
    .await;
    clock.advance(chrono::Duration::days(30));
    send(
        &app,
        &t,
        json!({"title": "New", "body": "b", "priority": "low"}),
    )
    .await;
    let purge = convcommerce::notify::purge::NotificationPurge {
        db: Db::connect(&SecretString::from(db.app_url.clone()), 1, 0).unwrap(),
        clock: Arc::new(clock.clone()),
    };
    assert_eq!(purge.run_once().await.unwrap(), 0);
    clock.advance(chrono::Duration::days(61));
    assert_eq!(purge.run_once().await.unwrap(), 1);
    let kept = list(&app, &t, &t.owner, "").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["title"], "New");
    app.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn two_outboxes_racing_over_one_burst_send_each_delivery_once() {
    let smtp = SmtpServer::start("none", None, 5);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    app.set_limits(&t, json!({"requests_per_minute": 1000}))
        .await;
    for i in 0..20 {
        send(
            app,
            &t,
            json!({"title": format!("Race {i}"), "body": "b", "priority": "high",
            "recipients": {"roles": ["owner"]}}),
        )
        .await;
    }
    let other = outbox(app, &d.clock);
    let (a, b) = tokio::join!(d.outbox.run_once(), other.run_once());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.sent + b.sent, 20, "{a:?} {b:?}");
    let mail = smtp.wait_for(20).await;
    let ids: std::collections::BTreeSet<String> =
        mail.iter().filter_map(|m| m.header("Message-ID")).collect();
    assert_eq!((mail.len(), ids.len()), (20, 20), "each sent once");
    d.stop().await;
}

#[tokio::test]
async fn smtp_auth_is_used_when_a_username_is_set() {
    let smtp = SmtpServer::start("auth", None, 0);
    for (password, sent) in [("secret", true), ("wrong", false)] {
        let mut vars = smtp.vars("auth");
        vars.push(("SMTP_USERNAME".into(), "mailer".into()));
        vars.push(("SMTP_PASSWORD".into(), password.into()));
        let d = delivering(vars).await;
        let t = d.app.tenant().await;
        set_trust(&d.app, &t, 1).await;
        let ids = send(
            &d.app,
            &t,
            json!({"title": "Auth", "body": "b", "priority": "high",
            "recipients": {"roles": ["owner"]}}),
        )
        .await;
        let report = d.outbox.run_once().await.unwrap();
        let email = delivery(&detail(&d.app, &t, &t.owner, &ids[0]).await, "email").clone();
        if sent {
            assert_eq!(report.sent, 1, "{report:?}");
            assert_eq!(email["status"], "sent");
        } else {
            assert_eq!(report.sent, 0, "{report:?}");
            assert_eq!(
                email["status"], "failed",
                "a refused login is permanent: {email}"
            );
            assert!(
                email["last_error"].as_str().unwrap().contains("535"),
                "{email}"
            );
        }
        d.stop().await;
    }
    assert_eq!(smtp.received().len(), 1);
}

/// A customer's name as long as an order takes (200 characters, multibyte here) makes a title
/// longer than a notification holds: the title is cut on a character boundary with `...`,
/// and the order is placed with its notification.
#[tokio::test]
async fn an_order_with_the_longest_customer_name_is_placed_and_notified_with_a_cut_title() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let product = app.product(&t, json!({"stock": 5})).await;
    let name = "ã".repeat(199) + "!";
    let order = app
        .post("/api/v1/orders")
        .owner_of(&t)
        .json(
            &json!({"customer": {"name": name, "phone": "+5511912345678"},
                      "items": [{"product_id": product["id"], "quantity": 1}],
                      "channel": "whatsapp"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(order.body["customer"]["name"], name.as_str());
    let notified = list(&app, &t, &t.owner, "").await;
    assert_eq!(notified.len(), 1);
    let title = notified[0]["title"].as_str().unwrap();
    assert_eq!(title.chars().count(), 200, "{title}");
    assert_eq!(
        title,
        format!("New order from {}...", "ã".repeat(200 - 3 - 15))
    );
    assert_eq!(
        notified[0]["source"],
        json!({"type": "order", "id": order.body["id"]})
    );
}

/// `PT-br`, `pt_br` and `pt-BR` are one locale wherever the API takes one (templates,
/// preview, preferences): stored and shown as `pt-BR`, found by the others, falling back
/// pt-BR -> pt -> en; a malformed one is 422 naming `locale` and changes nothing.
#[tokio::test]
async fn locales_are_canonical_everywhere_and_malformed_ones_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let templates = format!("{NOTIFICATIONS}/templates");
    let preview = |locale: &str| {
        app.post(&format!("{templates}/preview"))
            .owner_of(&t)
            .json(&json!({"key": "order.created", "channel": "sms", "locale": locale}))
    };
    let saved = app
        .post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "order.created", "channel": "sms", "locale": "PT_br",
                      "body": "Tenant pt-BR: {{ order.customer.name }}"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(saved.body["locale"], "pt-BR");
    for spelling in ["pt-BR", "pt-br", "PT-br", "pt_br", "PT_BR"] {
        app.post(&templates)
            .owner_of(&t)
            .json(
                &json!({"key": "order.created", "channel": "sms", "locale": spelling,
                          "body": "again"}),
            )
            .send()
            .await
            .expect_problem(409, "template_exists");
        let shown = preview(spelling).send().await.expect(200);
        assert_eq!(shown.body["text"], "Tenant pt-BR: Ana", "{spelling}");
    }
    // pt falls back to English (the tenant has no pt), then to the built-in.
    let pt = preview("PT").send().await.expect(200);
    assert_ne!(pt.body["text"], "Tenant pt-BR: Ana");
    app.post(&templates)
        .owner_of(&t)
        .json(
            &json!({"key": "order.created", "channel": "sms", "locale": "pt",
                      "body": "Tenant pt: {{ order.customer.name }}"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(
        preview("pt_PT").send().await.expect(200).body["text"],
        "Tenant pt: Ana"
    );
    assert_eq!(
        preview("pt-BR").send().await.expect(200).body["text"],
        "Tenant pt-BR: Ana"
    );

    let preferences = format!("{NOTIFICATIONS}/preferences");
    let saved = app
        .put(&preferences)
        .owner_of(&t)
        .json(&json!({"opt_outs": [], "quiet_hours": null, "locale": "pt_br"}))
        .send()
        .await
        .expect(200);
    assert_eq!(saved.body["locale"], "pt-BR");
    let read = app.get(&preferences).owner_of(&t).send().await.expect(200);
    assert_eq!(read.body["locale"], "pt-BR");

    let page = app.get(&templates).owner_of(&t).send().await.expect(200);
    let before = page.body["items"].clone();
    for bad in ["pt-", "pt__BR", "p", "português", "pt BR", &"x".repeat(36)] {
        let r = app
            .post(&templates)
            .owner_of(&t)
            .json(&json!({"key": "order.created", "channel": "sms", "locale": bad, "body": "x"}))
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&r), ["locale"], "{bad}");
        let r = preview(bad)
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&r), ["locale"], "{bad}");
        let r = app
            .put(&preferences)
            .owner_of(&t)
            .json(&json!({"opt_outs": [], "quiet_hours": null, "locale": bad}))
            .send()
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(error_fields(&r), ["locale"], "{bad}");
    }
    let page = app.get(&templates).owner_of(&t).send().await.expect(200);
    assert_eq!(page.body["items"], before, "nothing saved");
    let read = app.get(&preferences).owner_of(&t).send().await.expect(200);
    assert_eq!(read.body["locale"], "pt-BR", "unchanged");
}

/// The recipient's own endpoints belong to a user: a request made with an API key (which has
/// none) is 403 `forbidden` on each, and changes nothing.
#[tokio::test]
async fn an_api_key_is_refused_on_every_endpoint_of_a_users_own_notifications() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let ids = send(
        &app,
        &t,
        json!({"title": "Yours", "body": "b", "priority": "high", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let id = &ids[0];
    let key = app
        .post("/api/v1/api-keys")
        .owner_of(&t)
        .json(&json!({"name": "integration", "role": "admin"}))
        .send()
        .await
        .expect(201)
        .body["key"]
        .as_str()
        .unwrap()
        .to_string();
    let preferences =
        json!({"opt_outs": [{"channel": "email"}], "quiet_hours": null, "locale": "pt-BR"});
    let calls = [
        app.get(NOTIFICATIONS),
        app.get(&format!("{NOTIFICATIONS}/unread-count")),
        app.post(&format!("{NOTIFICATIONS}/read-all")),
        app.get(&format!("{NOTIFICATIONS}/{id}")),
        app.post(&format!("{NOTIFICATIONS}/{id}/read")),
        app.post(&format!("{NOTIFICATIONS}/{id}/unread")),
        app.delete(&format!("{NOTIFICATIONS}/{id}")),
        app.get(&format!("{NOTIFICATIONS}/preferences")),
        app.put(&format!("{NOTIFICATIONS}/preferences"))
            .json(&preferences),
        // Even with a body that would not parse: the key is refused first.
        app.put(&format!("{NOTIFICATIONS}/preferences"))
            .json(&json!({"x": 1})),
    ];
    for call in calls {
        let r = call
            .token(&key)
            .send()
            .await
            .expect_problem(403, "forbidden");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("belong to a user"),
            "{}",
            r.body
        );
    }
    // Nothing changed: the owner's notification is there, unread; no preferences saved.
    let mine = detail(&app, &t, &t.owner, id).await;
    assert_eq!(mine["read_at"], Value::Null);
    let count = app
        .get(&format!("{NOTIFICATIONS}/unread-count"))
        .owner_of(&t)
        .send()
        .await
        .expect(200);
    assert_eq!(count.body["total"], 1);
    let saved: i64 = connect(&app.db.superuser_url)
        .await
        .query_one(
            "SELECT count(*) FROM notification_preferences WHERE tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(saved, 0);
    // The tenant's own documents stay open to a key of a managing role.
    app.get(&format!("{NOTIFICATIONS}/settings"))
        .token(&key)
        .send()
        .await
        .expect(200);
}

/// Quiet hours are read again when a worker is about to send: a non-urgent email queued
/// outside them, whose recipient then sets quiet hours that hold now, is put back (not
/// counted as an attempt) until they end; an urgent one goes and records the bypass.
#[tokio::test]
async fn quiet_hours_set_after_the_enqueue_hold_the_email_at_send_time() {
    let smtp = SmtpServer::start("none", None, 0);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let high = send(
        app,
        &t,
        json!({"title": "Later", "body": "b", "priority": "high", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let urgent = send(
        app,
        &t,
        json!({"title": "Now", "body": "b", "priority": "urgent", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let queued = detail(app, &t, &t.owner, &high[0]).await;
    assert_eq!(delivery(&queued, "email")["status"], "queued");
    assert_eq!(delivery(&queued, "email")["bypassed"], json!([]));
    // 15:00 UTC is 12:00 in São Paulo: quiet from 11:00 to 13:00, set after the enqueue.
    app.put(&format!("{NOTIFICATIONS}/preferences"))
        .owner_of(&t)
        .json(&json!({"opt_outs": [], "locale": "en",
            "quiet_hours": {"timezone": "America/Sao_Paulo", "start": "11:00", "end": "13:00"}}))
        .send()
        .await
        .expect(200);

    let report = d.outbox.run_once().await.unwrap();
    assert_eq!((report.sent, report.deferred), (1, 1), "{report:?}");
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail[0].subject(), "[URGENT] Now");
    let went = detail(app, &t, &t.owner, &urgent[0]).await;
    assert_eq!(delivery(&went, "email")["status"], "sent");
    assert_eq!(delivery(&went, "email")["bypassed"], json!(["quiet_hours"]));
    let held = delivery(&detail(app, &t, &t.owner, &high[0]).await, "email").clone();
    assert_eq!(held["status"], "queued", "{held}");
    assert_eq!(held["attempts"], 0, "a deferral is not an attempt");
    assert_eq!(held["bypassed"], json!([]));
    let due: chrono::DateTime<Utc> = connect(&app.db.superuser_url)
        .await
        .query_one(
            "SELECT due_at FROM notification_deliveries
             WHERE tenant_id = $1 AND notification_id = $2 AND channel = 'email'",
            &[&t.id, &high[0].parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(due, Utc.with_ymd_and_hms(2026, 3, 10, 16, 0, 0).unwrap());

    d.clock.advance(chrono::Duration::minutes(59));
    assert_eq!(d.outbox.run_once().await.unwrap(), Default::default());
    d.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(d.outbox.run_once().await.unwrap().sent, 1, "13:00 local");
    assert_eq!(smtp.wait_for(2).await[1].subject(), "[HIGH] Later");
    let sent = delivery(&detail(app, &t, &t.owner, &high[0]).await, "email").clone();
    assert_eq!(
        (sent["status"].as_str(), sent["attempts"].as_i64()),
        (Some("sent"), Some(1))
    );
    d.stop().await;
}

/// The purge never deletes a notification whose delivery the outbox has yet to send: an aged
/// one with a queued email stays (with its outbox row) until it is sent; aged ones whose
/// deliveries are all final go.
#[tokio::test]
async fn the_purge_keeps_an_aged_notification_until_its_deliveries_are_done() {
    let smtp = SmtpServer::start("none", None, 0);
    let d = delivering(smtp.vars("none")).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let refused = staff(app, &t, "permanent").await;
    let failed = send(
        app,
        &t,
        json!({"title": "Failed", "body": "b", "priority": "high",
        "recipients": {"user_ids": [refused["id"]]}}),
    )
    .await;
    assert_eq!(d.outbox.run_once().await.unwrap().failed, 1);
    let in_app = send(
        app,
        &t,
        json!({"title": "In-app", "body": "b", "priority": "low", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let pending = send(
        app,
        &t,
        json!({"title": "Pending", "body": "b", "priority": "high", "recipients": {"roles": ["owner"]}}),
    )
    .await;
    let superuser = connect(&app.db.superuser_url).await;
    let statuses = || async {
        let rows = superuser
            .query(
                "SELECT n.id::text, d.channel, d.status FROM notifications n
                 JOIN notification_deliveries d ON d.tenant_id = n.tenant_id
                      AND d.notification_id = n.id
                 WHERE n.tenant_id = $1 ORDER BY n.id, d.channel",
                &[&t.id],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
    };
    let id = |ids: &[String]| ids[0].clone();
    assert_eq!(
        statuses().await,
        [
            (id(&failed), "email".into(), "failed".into()),
            (id(&failed), "in_app".into(), "delivered".into()),
            (id(&in_app), "in_app".into(), "delivered".into()),
            (id(&pending), "email".into(), "queued".into()),
            (id(&pending), "in_app".into(), "delivered".into()),
        ]
    );
    let purge = convcommerce::notify::purge::NotificationPurge {
        db: Db::connect(&SecretString::from(app.db.app_url.clone()), 1, 0).unwrap(),
        clock: Arc::new(d.clock.clone()),
    };
    d.clock.advance(chrono::Duration::days(91));
    assert_eq!(purge.run_once().await.unwrap(), 2, "the two that are done");
    assert_eq!(
        statuses().await,
        [
            (id(&pending), "email".into(), "queued".into()),
            (id(&pending), "in_app".into(), "delivered".into()),
        ],
        "the pending one and its outbox row are kept"
    );
    assert_eq!(d.outbox.run_once().await.unwrap().sent, 1);
    assert_eq!(smtp.wait_for(1).await[0].subject(), "[HIGH] Pending");
    assert_eq!(purge.run_once().await.unwrap(), 1, "sent: now it goes");
    assert!(statuses().await.is_empty());
    d.stop().await;
}

/// A manager with `locale` and a phone, acting as themself; their subject.
async fn manager_in(app: &TestApp, t: &TestTenant, sub: &str, phone: &str, locale: &str) {
    app.post("/api/v1/users")
        .owner_of(t)
        .json(
            &json!({"external_id": sub, "email": format!("{sub}@test.example"),
                      "role": "admin", "phone": phone}),
        )
        .send()
        .await
        .expect(201);
    app.put(&format!("{NOTIFICATIONS}/preferences"))
        .user(sub)
        .tenant(t.id)
        .json(&json!({"opt_outs": [], "quiet_hours": null, "locale": locale}))
        .send()
        .await
        .expect(200);
}

/// pt and pt-BR recipients get the Portuguese built-ins by email (as aiosmtpd receives it) and
/// SMS (as the Twilio peer receives it); English stays English.
#[tokio::test]
async fn pt_and_pt_br_recipients_receive_the_portuguese_built_ins() {
    let smtp = SmtpServer::start("none", None, 0);
    let twilio = TwilioPeer::start().await;
    let mut vars = smtp.vars("none");
    vars.extend(twilio.vars());
    let d = delivering(vars).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    manager_in(app, &t, "brasil", "+5511912345678", "pt_BR").await;
    manager_in(app, &t, "portugal", "+351912345678", "pt").await;
    manager_in(app, &t, "london", "+447912345678", "en").await;
    app.put(&format!("{NOTIFICATIONS}/settings"))
        .owner_of(&t)
        .json(
            &json!({"channels": {"urgent": [], "high": [], "medium": ["email", "sms"], "low": []}}),
        )
        .send()
        .await
        .expect(200);
    let product = app
        .product(&t, json!({"price_cents": 4990, "currency": "BRL"}))
        .await;
    app.post("/api/v1/orders")
        .owner_of(&t)
        .json(
            &json!({"customer": {"name": "Ana", "phone": "+5511900000000"},
                      "items": [{"product_id": product["id"], "quantity": 1}],
                      "channel": "whatsapp"}),
        )
        .send()
        .await
        .expect(201);
    d.outbox.run_once().await.unwrap();
    // The owner (no phone, default locale en) gets one email; each manager an email and SMS.
    let mail = smtp.wait_for(4).await;
    let subject_to = |sub: &str| {
        let m = mail
            .iter()
            .find(|m| m.to == [format!("{sub}@test.example")])
            .unwrap_or_else(|| panic!("mail to {sub}"));
        (m.subject(), m.data.clone())
    };
    for sub in ["brasil", "portugal"] {
        let (subject, data) = subject_to(sub);
        assert_eq!(subject, "[MEDIUM] Novo pedido de Ana", "{sub}");
        assert!(data.contains("Novo pedido"), "{sub}: {data}");
        assert!(!data.contains("New order"), "{sub}: {data}");
    }
    let (subject, _) = subject_to("london");
    assert_eq!(subject, "[MEDIUM] New order from Ana");
    let text_to = |phone: &str| {
        twilio
            .sent()
            .into_iter()
            .find(|s| s.form["To"] == phone)
            .unwrap_or_else(|| panic!("an SMS to {phone}"))
            .form["Body"]
            .clone()
    };
    assert_eq!(
        text_to("+5511912345678"),
        "Test store: novo pedido de Ana, 49.90 BRL."
    );
    assert_eq!(
        text_to("+351912345678"),
        "Test store: novo pedido de Ana, 49.90 BRL."
    );
    assert_eq!(
        text_to("+447912345678"),
        "Test store: new order from Ana, 49.90 BRL."
    );
    d.stop().await;
}

/// A verification code's SMS starts with the code, in every language.
#[tokio::test]
async fn a_verification_code_comes_first_in_the_sms() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.new_tenant().await;
    let db = Db::connect(&SecretString::from(app.db.app_url.clone()), 1, 0).unwrap();
    let notifier = convcommerce::notify::Notifier::new(
        &app.config.notify,
        Arc::new(d.clock.clone()),
        app.publisher.clone(),
        Wake::default(),
    );
    for (phone, code, locale) in [
        ("+5511912345678", "482913", "pt-BR"),
        ("+447912345678", "071635", "en"),
    ] {
        let tx = db.for_tenant(t.id).begin().await.unwrap();
        let queued = notifier
            .enqueue_code(
                &tx,
                convcommerce::monitoring::rules::model::NotifyChannel::Sms,
                phone,
                code,
                locale,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        notifier.published(queued);
    }
    assert_eq!(
        d.outbox.run_once().await.unwrap().sent,
        2,
        "at trust level 0 too"
    );
    let body = |phone: &str| {
        twilio
            .sent()
            .into_iter()
            .find(|s| s.form["To"] == phone)
            .unwrap()
            .form["Body"]
            .clone()
    };
    assert_eq!(
        body("+5511912345678"),
        "482913 é seu código de verificação Test store. Expira em 10 minutos."
    );
    assert_eq!(
        body("+447912345678"),
        "071635 is your Test store verification code. It expires in 10 minutes."
    );
    d.stop().await;
}

/// Segments of an SMS as a phone network counts them (an implementation of the test's own):
/// GSM-7 160 / 153 septets (extension characters 2), else UCS-2 70 / 67 UTF-16 units.
fn segments(text: &str) -> usize {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    let gsm = text
        .chars()
        .all(|c| BASIC.contains(c) || EXTENSION.contains(c));
    let units: Vec<usize> = text
        .chars()
        .map(|c| match gsm {
            true if EXTENSION.contains(c) => 2,
            true => 1,
            false => c.len_utf16(),
        })
        .collect();
    let (single, part) = if gsm { (160, 153) } else { (70, 67) };
    if units.iter().sum::<usize>() <= single {
        return 1;
    }
    let (mut parts, mut fill) = (1, 0);
    for u in units {
        if fill + u > part {
            parts += 1;
            fill = 0;
        }
        fill += u;
    }
    parts
}

/// A long text is cut to two segments counted in its own coding and ends in ASCII `...`
/// (a `…` is not GSM-7: it would make the text UCS-2).
#[tokio::test]
async fn long_sms_arrive_within_two_segments_of_their_coding_ending_in_three_dots() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let gsm_user = sms_recipient(app, &t, "gsm", "+5511912345678").await;
    let ucs2_user = sms_recipient(app, &t, "ucs2", "+5511987654321").await;
    for (user, body) in [
        (&gsm_user, "Stock {low} [shelf 4] costs 10€. ".repeat(20)),
        (&ucs2_user, "Atenção: o estoque está baixo. ".repeat(20)),
    ] {
        send(
            app,
            &t,
            json!({"title": "Stock", "body": body, "priority": "urgent",
            "recipients": {"user_ids": [user["id"]]}}),
        )
        .await;
    }
    d.outbox.run_once().await.unwrap();
    let body = |phone: &str| {
        twilio
            .sent()
            .into_iter()
            .find(|s| s.form["To"] == phone)
            .unwrap()
            .form["Body"]
            .clone()
    };
    let gsm = body("+5511912345678");
    assert!(gsm.starts_with("Test store: Stock. Stock {low}"), "{gsm}");
    assert!(gsm.ends_with("...") && !gsm.contains('…'), "{gsm}");
    assert_eq!(segments(&gsm), 2, "{gsm}");
    assert!(gsm.chars().count() > 250, "GSM-7 fills two parts: {gsm}");
    let ucs2 = body("+5511987654321");
    assert!(ucs2.starts_with("Test store: Stock. Atenção"), "{ucs2}");
    assert!(ucs2.ends_with("...") && !ucs2.contains('…'), "{ucs2}");
    assert_eq!(segments(&ucs2), 2, "{ucs2}");
    assert!(ucs2.chars().count() > 120, "UCS-2 fills two parts: {ucs2}");
    d.stop().await;
}

/// A client can GET a template and PUT the same JSON back: 200, nothing changes (not even
/// `updated_at`); an `id` that is not the path's is 422 naming `id`; unknown fields stay
/// refused.
#[tokio::test]
async fn a_template_put_takes_back_the_document_its_get_returns() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let templates = format!("{NOTIFICATIONS}/templates");
    let mut ids = Vec::new();
    for (channel, subject) in [
        ("sms", Value::Null),
        ("email", json!("Pedido {{ order.id }}")),
    ] {
        let created = app
            .post(&templates)
            .owner_of(&t)
            .json(
                &json!({"key": "order.created", "channel": channel, "locale": "pt_br",
                          "subject": subject, "body": "<p>{{ order.customer.name }}</p>"}),
            )
            .send()
            .await
            .expect(201);
        ids.push(created.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let url = format!("{templates}/{id}");
        let read = app.get(&url).owner_of(&t).send().await.expect(200).body;
        let put = app
            .put(&url)
            .owner_of(&t)
            .json(&read)
            .send()
            .await
            .expect(200);
        assert_eq!(
            put.body, read,
            "the same document back, updated_at included"
        );
        assert_eq!(
            app.get(&url).owner_of(&t).send().await.expect(200).body,
            read
        );
    }

    let url = format!("{templates}/{}", ids[0]);
    let read = app.get(&url).owner_of(&t).send().await.expect(200).body;
    let mut other = read.clone();
    other["id"] = json!(ids[1]);
    other["body"] = json!("changed");
    let r = app
        .put(&url)
        .owner_of(&t)
        .json(&other)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(error_fields(&r), ["id"]);
    let mut unknown = read.clone();
    unknown["builtin"] = json!(false);
    unknown["body"] = json!("changed");
    app.put(&url)
        .owner_of(&t)
        .json(&unknown)
        .send()
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        app.get(&url).owner_of(&t).send().await.expect(200).body,
        read,
        "nothing changed"
    );

    // A real change moves updated_at; the timestamps sent are ignored.
    let mut changed = read.clone();
    changed["body"] = json!("{{ order.customer.name }}!");
    changed["created_at"] = json!("2000-01-01T00:00:00Z");
    changed["updated_at"] = json!("2000-01-01T00:00:00Z");
    let put = app
        .put(&url)
        .owner_of(&t)
        .json(&changed)
        .send()
        .await
        .expect(200);
    assert_eq!(put.body["body"], "{{ order.customer.name }}!");
    assert_eq!(put.body["created_at"], read["created_at"]);
    assert_ne!(put.body["updated_at"], read["updated_at"]);
    assert_ne!(put.body["updated_at"], "2000-01-01T00:00:00Z");
}

/// Severity -> priority for the other two severities: medium -> medium (blue), low -> low
/// (green).
#[tokio::test]
async fn medium_and_low_alerts_notify_with_medium_and_low_priority() {
    let app = TestApp::spawn().await;
    let t = app.tenant().await;
    let (staff, _) = app.member(&t, "staff").await;
    let (admin, _) = app.member(&t, "admin").await;
    for (severity, role) in [("medium", "staff"), ("low", "admin")] {
        app.post("/api/v1/monitoring/rules")
            .owner_of(&t)
            .json(
                &json!({"name": format!("Product made ({severity})"), "severity": severity,
                "condition": {"field": "action", "op": "eq", "value": "product.created"},
                "recipients": {"roles": [role]}}),
            )
            .send()
            .await
            .expect(201);
    }
    app.product(&t, json!({})).await;
    let arrived = eventually(Duration::from_secs(15), || async {
        !list(&app, &t, &staff, "&category=alerts").await.is_empty()
            && !list(&app, &t, &admin, "&category=alerts").await.is_empty()
    })
    .await;
    assert!(arrived, "both alerts notify");
    for (sub, severity, colour) in [(&staff, "medium", "blue"), (&admin, "low", "green")] {
        let got = list(&app, &t, sub, "&category=alerts").await;
        assert_eq!(got.len(), 1, "{severity}: {got:?}");
        assert_eq!(got[0]["title"], format!("Alert: Product made ({severity})"));
        assert_eq!(got[0]["priority"], severity);
        assert_eq!(got[0]["colour"], colour);
        assert_eq!(got[0]["source"]["type"], "alert");
    }
}

/// Below trust level 1 an SMS delivery is `skipped`, saying why, and nothing reaches Twilio;
/// a verification code is still sent (`a_verification_code_comes_first_in_the_sms` sends
/// them at level 0 too).
#[tokio::test]
async fn at_trust_level_0_an_sms_is_skipped_with_its_reason() {
    let twilio = TwilioPeer::start().await;
    let d = delivering(twilio.vars()).await;
    let app = &d.app;
    let t = app.new_tenant().await;
    let user = sms_recipient(app, &t, "unverified", "+5511912345678").await;
    texted(&d, &t, &user).await;
    let sms = sms_of(app, &t, "unverified").await;
    assert_eq!(sms["status"], "skipped", "{sms}");
    assert_eq!(
        sms["last_error"],
        "email and SMS notifications need trust level 1 (verified)"
    );
    assert_eq!(sms["attempts"], 0);
    assert!(twilio.sent().is_empty(), "nothing sent");

    set_trust(app, &t, 1).await;
    texted(&d, &t, &user).await;
    assert_eq!(
        sms_of(app, &t, "unverified").await["status"],
        "sent",
        "at level 1"
    );
    assert_eq!(twilio.sent().len(), 1);
    d.stop().await;
}

/// An SMTP server that keeps answering 451: each retry waits longer (base × 2^(n-1), equal
/// jitter), the delivery is `failed` after `NOTIFY_MAX_ATTEMPTS` with its attempts counted,
/// and never changes after.
#[tokio::test]
async fn retries_back_off_exponentially_then_fail_after_the_maximum_attempts_for_good() {
    let smtp = SmtpServer::start("none", None, 0);
    let mut vars = smtp.vars("none");
    vars.push(("NOTIFY_MAX_ATTEMPTS".into(), "4".into()));
    vars.push(("NOTIFY_RETRY_BASE_MILLISECONDS".into(), "1000".into()));
    vars.push(("NOTIFY_RETRY_MAX_SECONDS".into(), "3".into()));
    let d = delivering(vars).await;
    let app = &d.app;
    let t = app.tenant().await;
    set_trust(app, &t, 1).await;
    let busy = staff(app, &t, "busy").await;
    send(
        app,
        &t,
        json!({"title": "Busy", "body": "b", "priority": "high",
        "recipients": {"user_ids": [busy["id"]]}}),
    )
    .await;
    let superuser = connect(&app.db.superuser_url).await;
    let row = || async {
        let r = superuser
            .query_one(
                "SELECT d.status, d.attempts, d.due_at, d.xmin::text, d::text
                 FROM notification_deliveries d
                 WHERE d.tenant_id = $1 AND d.channel = 'email'",
                &[&t.id],
            )
            .await
            .unwrap();
        (
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, chrono::DateTime<Utc>>(2),
            (r.get::<_, String>(3), r.get::<_, String>(4)),
        )
    };
    // Delays after attempts 1, 2, 3: 1 s, 2 s, then the 3 s cap, each jittered to [d/2, d].
    for (attempt, full_ms) in [(1, 1000), (2, 2000), (3, 3000)] {
        let report = d.outbox.run_once().await.unwrap();
        assert_eq!(report.retried, 1, "attempt {attempt}: {report:?}");
        let (status, attempts, due, _) = row().await;
        assert_eq!((status.as_str(), attempts), ("queued", attempt));
        let delay = (due - convcommerce::clock::Clock::now(&d.clock)).num_milliseconds();
        assert!(
            (full_ms / 2..=full_ms).contains(&delay),
            "attempt {attempt}: {delay} ms outside [{}, {full_ms}]",
            full_ms / 2
        );
        d.clock.advance(chrono::Duration::milliseconds(delay - 1));
        assert_eq!(
            d.outbox.run_once().await.unwrap(),
            Default::default(),
            "not before"
        );
        d.clock.advance(chrono::Duration::milliseconds(1));
    }
    let report = d.outbox.run_once().await.unwrap();
    assert_eq!((report.failed, report.retried), (1, 0), "{report:?}");
    let (status, attempts, _, failed) = row().await;
    assert_eq!((status.as_str(), attempts), ("failed", 4));
    let shown = delivery(&latest(app, &t, "busy").await, "email").clone();
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["attempts"], 4);
    assert!(
        shown["last_error"].as_str().unwrap().contains("451"),
        "{shown}"
    );
    d.clock.advance(chrono::Duration::days(1));
    assert_eq!(d.outbox.run_once().await.unwrap(), Default::default());
    assert_eq!(
        row().await.3,
        failed,
        "failed is final: the row is untouched"
    );
    assert!(smtp.received().is_empty());
    d.stop().await;
}
