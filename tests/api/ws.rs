//! The WebSocket hub (SPEC §7) with a real client: authentication and its close codes,
//! channels by role, isolation between tenants and users, resume, fan-out between two
//! instances (PostgreSQL and Redis), the slow consumer, the tenant cap and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use convcommerce::monitoring::hub::fanout::CHANNEL;
use convcommerce::monitoring::hub::{Channel, Event};

use crate::helpers::{RedisServer, TestApp, TestTenant, connect, now, sign, token};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn open(app: &TestApp, query: &str) -> Ws {
    let url = format!("{}/api/v1/ws{query}", app.base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade succeeds")
        .0
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next text frame as JSON (pings are answered by the client library).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads until the server's close frame; its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Authenticates with the first message; the `ready` frame.
async fn ready(app: &TestApp, sub: &str, tenant: Uuid, resume: Option<Value>) -> (Ws, Value) {
    let mut ws = open(app, "").await;
    let mut auth = json!({"type": "auth", "token": token(sub), "tenant_id": tenant});
    if let Some(resume) = resume {
        auth["resume"] = resume;
    }
    send(&mut ws, auth).await;
    let ready = next(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    (ws, ready)
}

async fn owner(app: &TestApp, tenant: &TestTenant) -> (Ws, Value) {
    ready(app, &tenant.owner, tenant.id, None).await
}

/// Publishes events the way every instance receives them: one NOTIFY on the hub's channel
/// straight into the database, so a test chooses exactly what arrives (the producers' own
/// path, REST, is `ws_rest_changes_and_the_alerts_they_fire_arrive_live`).
async fn emit(app: &TestApp, events: &[Value]) {
    let client = connect(&app.db.app_url).await;
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &Value::Array(events.to_vec()).to_string()],
        )
        .await
        .unwrap();
}

fn activity(tenant: Uuid, n: u64) -> Value {
    json!({"tenant_id": tenant, "channel": "activity", "data": {"n": n}})
}

fn notification(tenant: Uuid, user: Uuid, n: u64) -> Value {
    json!({"tenant_id": tenant, "channel": "notifications", "user_id": user, "data": {"n": n}})
}

fn channels(ready: &Value) -> Vec<&str> {
    ready["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

/// The user id of `sub` in `tenant`, as the users API shows it.
async fn user_id(app: &TestApp, tenant: &TestTenant, sub: &str) -> Uuid {
    let users = app
        .get("/api/v1/users?limit=100")
        .owner_of(tenant)
        .send()
        .await
        .expect(200);
    users.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["external_id"] == sub)
        .expect("the member is listed")["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn ws_ready_names_the_channels_of_the_role_and_staff_gets_no_activity() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (staff_sub, staff_id) = app.member(&tenant, "staff").await;
    let (admin_sub, _) = app.member(&tenant, "admin").await;

    let (mut owner_ws, owner_ready) = owner(&app, &tenant).await;
    assert_eq!(
        channels(&owner_ready),
        ["activity", "alerts", "notifications"]
    );
    assert!(owner_ready["epoch"].is_string());
    // The two members' own activities may or may not be in the stream yet.
    assert!(owner_ready["offset"].as_u64().is_some_and(|o| o <= 2));
    let (_, admin_ready) = ready(&app, &admin_sub, tenant.id, None).await;
    assert_eq!(
        channels(&admin_ready),
        ["activity", "alerts", "notifications"]
    );
    let (mut staff_ws, staff_ready) = ready(&app, &staff_sub, tenant.id, None).await;
    assert_eq!(channels(&staff_ready), ["notifications"]);
    // Past the members' own activities, if they had not reached the stream before.
    emit(&app, &[activity(tenant.id, 0)]).await;
    while next(&mut owner_ws).await["data"]["n"] != 0 {}

    emit(
        &app,
        &[
            activity(tenant.id, 1),
            json!({"tenant_id": tenant.id, "channel": "alerts", "data": {"n": 2}}),
            notification(tenant.id, staff_id, 3),
        ],
    )
    .await;
    let first = next(&mut staff_ws).await;
    assert_eq!(first["channel"], "notifications", "{first}");
    assert_eq!(first["data"]["n"], 3);
    assert_eq!(first["epoch"], staff_ready["epoch"]);
    let seen: Vec<Value> = vec![next(&mut owner_ws).await, next(&mut owner_ws).await];
    assert_eq!(seen[0]["channel"], "activity");
    assert_eq!(seen[1]["channel"], "alerts");
    assert!(seen[0]["offset"].as_u64() < seen[1]["offset"].as_u64());
    app.stop().await;
}

#[tokio::test]
async fn ws_another_tenants_id_closes_with_4403() {
    let app = TestApp::spawn().await;
    let mine = app.tenant().await;
    let theirs = app.tenant().await;
    for tenant in [json!(theirs.id), json!(Uuid::now_v7()), json!("not-a-uuid")] {
        let mut ws = open(&app, "").await;
        send(
            &mut ws,
            json!({"type": "auth", "token": token(&mine.owner), "tenant_id": tenant}),
        )
        .await;
        assert_eq!(close_code(&mut ws).await, 4403, "{tenant}");
    }
    // The query form is checked the same way.
    let query = format!("?token={}&tenant_id={}", token(&mine.owner), theirs.id);
    assert_eq!(close_code(&mut open(&app, &query).await).await, 4403);
    let query = format!("?token={}&tenant_id={}", token(&mine.owner), mine.id);
    let mut ws = open(&app, &query).await;
    assert_eq!(next(&mut ws).await["type"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn ws_forged_or_expired_token_closes_with_4401() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let forged = sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": tenant.owner, "exp": now() + 600}),
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-0123"),
    );
    let expired = sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": tenant.owner, "exp": now() - 3600}),
        &EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    );
    for bad in [forged, expired, "garbage".to_string()] {
        let mut ws = open(&app, "").await;
        send(
            &mut ws,
            json!({"type": "auth", "token": bad, "tenant_id": tenant.id}),
        )
        .await;
        assert_eq!(close_code(&mut ws).await, 4401);
    }
    let mut ws = open(&app, "").await;
    send(&mut ws, json!({"type": "subscribe", "channel": "activity"})).await;
    assert_eq!(
        close_code(&mut ws).await,
        4401,
        "the first message must be auth"
    );
    app.stop().await;
}

#[tokio::test]
async fn ws_without_auth_in_time_closes_with_4408() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("WS_AUTH_TIMEOUT_MILLISECONDS".into(), "300".into());
    })
    .await;
    let mut ws = open(&app, "").await;
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut ws).await, 4408);
    assert!(started.elapsed() >= Duration::from_millis(250));
    app.stop().await;
}

#[tokio::test]
async fn ws_events_of_another_tenant_never_arrive() {
    let app = TestApp::spawn().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let (mut ws, _) = owner(&app, &a).await;
    let a_owner = user_id(&app, &a, &a.owner).await;
    emit(
        &app,
        &[
            activity(b.id, 1),
            // Addressed to A's owner, but in B's stream: still not A's.
            notification(b.id, a_owner, 2),
            activity(a.id, 3),
        ],
    )
    .await;
    let got = next(&mut ws).await;
    assert_eq!(got["data"]["n"], 3, "{got}");
    app.stop().await;
}

#[tokio::test]
async fn ws_a_users_notifications_never_reach_another_user() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (alice, alice_id) = app.member(&tenant, "staff").await;
    let (bob, bob_id) = app.member(&tenant, "staff").await;
    let (mut alice_ws, _) = ready(&app, &alice, tenant.id, None).await;
    let (mut bob_ws, _) = ready(&app, &bob, tenant.id, None).await;
    emit(
        &app,
        &[
            notification(tenant.id, bob_id, 1),
            json!({"tenant_id": tenant.id, "channel": "notifications", "data": {"n": 2}}),
            notification(tenant.id, alice_id, 3),
            notification(tenant.id, bob_id, 4),
        ],
    )
    .await;
    assert_eq!(next(&mut alice_ws).await["data"]["n"], 3);
    assert_eq!(next(&mut bob_ws).await["data"]["n"], 1);
    assert_eq!(next(&mut bob_ws).await["data"]["n"], 4);
    app.stop().await;
}

#[tokio::test]
async fn ws_resume_replays_exactly_the_missed_events_in_order() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (staff, staff_id) = app.member(&tenant, "staff").await;
    // An observer stays connected, so we know when the hub has every event; the member's own
    // activity may still be on its way, so a marker behind it says when it is past.
    let (mut observer, _) = owner(&app, &tenant).await;
    emit(&app, &[activity(tenant.id, 0)]).await;
    while next(&mut observer).await["data"]["n"] != 0 {}
    let (mut ws, ready_frame) = owner(&app, &tenant).await;
    let epoch = ready_frame["epoch"].clone();
    emit(&app, &[activity(tenant.id, 1), activity(tenant.id, 2)]).await;
    next(&mut ws).await;
    let last = next(&mut ws).await;
    assert_eq!(last["data"]["n"], 2);
    ws.close(None).await.unwrap();
    for _ in 0..2 {
        next(&mut observer).await;
    }

    emit(
        &app,
        &[
            activity(tenant.id, 3),
            notification(tenant.id, staff_id, 4),
            activity(tenant.id, 5),
            activity(tenant.id, 6),
        ],
    )
    .await;
    let missed: Vec<Value> = vec![
        next(&mut observer).await,
        next(&mut observer).await,
        next(&mut observer).await,
    ];
    assert_eq!(missed[2]["data"]["n"], 6);

    let resume = json!({"epoch": epoch, "offset": last["offset"]});
    let (mut back, back_ready) = ready(&app, &tenant.owner, tenant.id, Some(resume)).await;
    assert_eq!(back_ready["epoch"], epoch);
    assert_eq!(back_ready["offset"], missed[2]["offset"]);
    let replayed: Vec<Value> = vec![
        next(&mut back).await,
        next(&mut back).await,
        next(&mut back).await,
    ];
    assert_eq!(replayed, missed, "exactly the missed events, in order");
    // The seam: the next live event follows the replay, once.
    emit(&app, &[activity(tenant.id, 7)]).await;
    let live = next(&mut back).await;
    assert_eq!(live["data"]["n"], 7);
    assert!(live["offset"].as_u64() > replayed[2]["offset"].as_u64());

    // The staff member's resume carries only their own notification.
    let resume = json!({"epoch": epoch, "offset": last["offset"]});
    let (mut staff_ws, _) = ready(&app, &staff, tenant.id, Some(resume)).await;
    let only = next(&mut staff_ws).await;
    assert_eq!(only["data"]["n"], 4);
    emit(&app, &[notification(tenant.id, staff_id, 8)]).await;
    assert_eq!(next(&mut staff_ws).await["data"]["n"], 8);
    app.stop().await;
}

#[tokio::test]
async fn ws_resume_with_an_unknown_epoch_or_offset_gives_reset() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (mut first, first_ready) = owner(&app, &tenant).await;
    emit(&app, &[activity(tenant.id, 1)]).await;
    next(&mut first).await;
    for resume in [
        json!({"epoch": "another-instance", "offset": 1}),
        json!({"epoch": first_ready["epoch"], "offset": 1_000_000}),
    ] {
        let (mut ws, _) = ready(&app, &tenant.owner, tenant.id, Some(resume.clone())).await;
        assert_eq!(next(&mut ws).await, json!({"type": "reset"}), "{resume}");
        // Then it goes on live.
        emit(&app, &[activity(tenant.id, 2)]).await;
        assert_eq!(next(&mut ws).await["data"]["n"], 2);
    }
    app.stop().await;
}

async fn both_ways(one: &TestApp, two: &TestApp) {
    let tenant = one.tenant().await;
    let (mut on_one, _) = owner(one, &tenant).await;
    let (mut on_two, _) = owner(two, &tenant).await;
    let event = |n: u64| Event {
        tenant_id: tenant.id,
        channel: Channel::Activity,
        user_id: None,
        data: json!({ "n": n }),
    };
    two.publisher.publish(&[event(1)]);
    one.publisher.publish(&[event(2)]);
    // Over NOTIFY's limit: sent by reference.
    let big = Event {
        data: json!({ "blob": "x".repeat(20_000) }),
        ..event(3)
    };
    two.publisher.publish(&[big]);
    for ws in [&mut on_one, &mut on_two] {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(next(ws).await);
        }
        let mut ns: Vec<u64> = got
            .iter()
            .map(|g| g["data"]["n"].as_u64().unwrap_or(3))
            .collect();
        ns.sort();
        assert_eq!(ns, [1, 2, 3]);
        let blob = got.iter().find(|g| g["data"]["blob"].is_string()).unwrap();
        assert_eq!(blob["data"]["blob"].as_str().unwrap().len(), 20_000);
    }
}

#[tokio::test]
async fn ws_two_instances_deliver_each_others_events_through_postgres() {
    let one = TestApp::spawn().await;
    let two = TestApp::spawn().await;
    both_ways(&one, &two).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn ws_two_instances_deliver_each_others_events_through_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = TestApp::spawn_with(|vars| {
        vars.insert("REDIS_URL".into(), url.clone());
    })
    .await;
    let two = TestApp::spawn_with(|vars| {
        vars.insert("REDIS_URL".into(), url.clone());
    })
    .await;
    // Give both subscriptions a moment to be in place: Redis keeps no messages.
    tokio::time::sleep(Duration::from_millis(300)).await;
    both_ways(&one, &two).await;
    // A NOTIFY reaches neither: the transport is Redis.
    let tenant = one.tenant().await;
    let (mut ws, _) = owner(&one, &tenant).await;
    emit(&one, &[activity(tenant.id, 1)]).await;
    two.publisher.publish(&[Event {
        tenant_id: tenant.id,
        channel: Channel::Alerts,
        user_id: None,
        data: json!({"n": 2}),
    }]);
    assert_eq!(next(&mut ws).await["data"]["n"], 2);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn ws_a_slow_consumer_is_closed_with_1013() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("WS_SEND_QUEUE".into(), "2".into());
    })
    .await;
    let tenant = app.tenant().await;
    let (mut ws, _) = owner(&app, &tenant).await;
    // The client reads nothing while some 30 MB are sent its way.
    let client = connect(&app.db.app_url).await;
    client
        .execute(
            "SELECT pg_notify($1, json_build_array(json_build_object(
                 'tenant_id', $2::text, 'channel', 'activity',
                 'data', json_build_object('n', n, 'pad', repeat('x', 7000))))::text)
             FROM generate_series(1, 4000) AS n",
            &[&CHANNEL, &tenant.id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1013);
    assert!(
        app.metric("convcommerce_ws_closed_total{kind=\"slow_consumer\"}")
            .await
            >= 1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn ws_the_tenant_cap_refuses_the_extra_connection() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("WS_MAX_CONNECTIONS_PER_TENANT".into(), "2".into());
    })
    .await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    let (_a, _) = owner(&app, &tenant).await;
    let (b, _) = owner(&app, &tenant).await;
    let mut extra = open(&app, "").await;
    send(
        &mut extra,
        json!({"type": "auth", "token": token(&tenant.owner), "tenant_id": tenant.id}),
    )
    .await;
    assert_eq!(close_code(&mut extra).await, 4429);
    // Another tenant has its own cap; a place freed is taken again.
    owner(&app, &other).await;
    drop(b);
    let mut freed = false;
    for _ in 0..50 {
        let mut ws = open(&app, "").await;
        send(
            &mut ws,
            json!({"type": "auth", "token": token(&tenant.owner), "tenant_id": tenant.id}),
        )
        .await;
        let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        if let Some(Ok(Message::Text(_))) = frame {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the closed connection's place comes back");
    app.stop().await;
}

#[tokio::test]
async fn ws_shutdown_closes_with_1001() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let (mut ws, _) = owner(&app, &tenant).await;
    let mut waiting = open(&app, "").await;
    app.shutdown.cancel();
    assert_eq!(close_code(&mut ws).await, 1001);
    assert_eq!(close_code(&mut waiting).await, 1001);
    app.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn ws_is_documented_as_a_get_with_101_and_a_plain_get_is_a_problem() {
    let app = TestApp::spawn().await;
    let doc = app
        .get("/api/v1/openapi.json")
        .send()
        .await
        .expect(200)
        .body;
    let op = &doc["paths"]["/api/v1/ws"]["get"];
    assert!(op["responses"]["101"].is_object(), "{op}");
    assert!(op["responses"]["503"].is_object(), "{op}");
    assert!(
        op.get("security").is_none(),
        "the first message authenticates: {op}"
    );
    let names: Vec<&Value> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert_eq!(names, [&json!("token"), &json!("tenant_id")]);
    let plain = app.get("/api/v1/ws").send().await;
    assert!(plain.status.is_client_error(), "{}", plain.status);
    assert_eq!(
        plain.header("content-type"),
        Some("application/problem+json")
    );
    app.stop().await;
}

/// Reads events until one on `channel` satisfies `want`; that event's data.
async fn event_where(ws: &mut Ws, channel: &str, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = next(ws).await;
        if frame["type"] == "event" && frame["channel"] == channel && want(&frame["data"]) {
            return frame["data"].clone();
        }
    }
}

#[tokio::test]
async fn ws_rest_changes_and_the_alerts_they_fire_arrive_live() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant().await;
    let rule = app
        .post("/api/v1/monitoring/rules")
        .owner_of(&tenant)
        .json(&json!({
            "name": "every new product",
            "severity": "critical",
            "condition": {"field": "action", "op": "eq", "value": "product.created"},
        }))
        .send()
        .await
        .expect(201);
    let rule_id = rule.body["id"].clone();
    let (mut ws, _) = owner(&app, &tenant).await;

    let product = app.product(&tenant, json!({})).await;
    let created = event_where(&mut ws, "activity", |a| a["action"] == "product.created").await;
    assert_eq!(created["resource_id"], product["id"]);
    assert_eq!(created["tenant_id"], json!(tenant.id));
    let fired = event_where(&mut ws, "alerts", |a| a["rule_id"] == rule_id).await;
    assert_eq!(fired["status"], "firing");

    let alert = fired["id"].as_str().unwrap();
    app.post(&format!("/api/v1/monitoring/alerts/{alert}/acknowledge"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    // The alert's new status, and the acknowledgement's activity (a data change, logged in
    // its transaction), in either order.
    let (mut change, mut acknowledged) = (Value::Null, Value::Null);
    while change.is_null() || acknowledged.is_null() {
        let frame = next(&mut ws).await;
        let data = &frame["data"];
        match frame["channel"].as_str() {
            Some("activity") if data["action"] == "alert.acknowledged" => change = data.clone(),
            Some("alerts") if data["id"] == fired["id"] => acknowledged = data.clone(),
            _ => {}
        }
    }
    assert_eq!(change["resource_id"], fired["id"]);
    assert_eq!(acknowledged["status"], "acknowledged");
    // Reads arrive too, through the batch writer.
    app.get(&format!("/api/v1/monitoring/alerts/{alert}"))
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    let read = event_where(&mut ws, "activity", |a| {
        a["action"] == "request" && a["route"] == "/api/v1/monitoring/alerts/{id}"
    })
    .await;
    assert_eq!(read["status"], 200);
}

#[tokio::test]
async fn ws_a_client_that_misses_two_pongs_is_dropped_and_one_that_answers_stays() {
    let app = TestApp::spawn_with(|vars| {
        vars.insert("WS_PING_INTERVAL_MILLISECONDS".into(), "200".into());
    })
    .await;
    let tenant = app.tenant().await;
    let (mut silent, _) = owner(&app, &tenant).await;
    let (mut answering, _) = owner(&app, &tenant).await;
    // The answering client reads (the library answers each ping with a pong as it reads);
    // the silent one reads nothing for five ping periods, so it sends no pong.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1000);
    while let Ok(frame) = tokio::time::timeout_at(until, answering.next()).await {
        match frame.expect("open").expect("a valid frame") {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "{pings} pings in five periods");
    // The silent one finds its two pings, then the end: dropped without a close frame (a
    // peer that answers nothing would not answer one either).
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, silent.next())
            .await
            .expect("dropped in time")
        {
            Some(Ok(Message::Ping(_))) => seen.push("ping"),
            Some(Ok(Message::Close(frame))) => panic!("a close frame: {frame:?}"),
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert_eq!(seen, ["ping", "ping"]);
    assert_eq!(
        app.metric("convcommerce_ws_closed_total{kind=\"missed_pongs\"}")
            .await,
        1.0
    );
    // The answering one is still open and live.
    emit(&app, &[activity(tenant.id, 7)]).await;
    let event = event_where(&mut answering, "activity", |a| a["n"] == 7).await;
    assert_eq!(event["n"], 7);
}
