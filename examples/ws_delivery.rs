//! Live event delivery: N subscribers of one tenant follow its `activity` channel while
//! conversation messages are posted over REST at a steady rate; prints how long each event took
//! from its activity's `created_at` (stamped just before the change's COMMIT) to its receipt,
//! and whether any subscriber lost, repeated or reordered an event. Prints figures and exits 1
//! if an event was lost, repeated or out of order. Run by `python3 bench/ws.py --only delivery`
//! (bench/README.md, "WebSocket figures"), or by hand against a running server:
//!
//!     HTTP_URL=http://127.0.0.1:8000 WS_TOKEN=... WS_TENANT=... SUBSCRIBERS=1000 RATE=500 \
//!         SECONDS=10 cargo run --release --example ws_delivery

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// One subscriber in this many measures latency (parsing every frame of every subscriber would
/// cost this process more CPU than the server spends sending them).
const SAMPLE_EVERY: usize = 10;
const ACTION: &str = "\"action\":\"conversation.message_posted\"";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"))
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    events: u64,
    /// Frames whose offset was not above the previous one's.
    disordered: u64,
    /// Milliseconds from `created_at` to receipt (sampled subscribers only).
    latencies: Vec<f64>,
    /// How the connection ended early, if it did (a slow consumer is closed with 1013).
    closed: Option<String>,
}

/// The text after `"key":` up to the next `,`, `}` or `"` (a number, or a string's contents).
fn field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let start = frame.find(key)? + key.len();
    let rest = frame[start..].trim_start_matches('"');
    let end = rest.find([',', '}', '"'])?;
    Some(&rest[..end])
}

async fn subscribe(
    url: &str,
    auth: &str,
    sample: bool,
    done: Arc<AtomicU64>,
    expected: Arc<AtomicU64>,
) -> Seen {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connected");
    ws.send(Message::text(auth.to_string()))
        .await
        .expect("auth sent");
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"ready\"") => {}
        other => panic!("no ready frame: {other:?}"),
    }
    done.fetch_add(1, Ordering::Relaxed);
    let mut seen = Seen::default();
    let mut last_offset = 0u64;
    // Seconds without a frame since the producer finished: after ten, the rest is lost.
    let mut idle = 0;
    loop {
        let wanted = expected.load(Ordering::Relaxed);
        if wanted != u64::MAX && seen.events >= wanted {
            return seen;
        }
        let frame = match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(other) => {
                seen.closed = Some(format!("{other:?}"));
                return seen;
            }
            Err(_) if wanted == u64::MAX => continue,
            Err(_) if idle < 10 => {
                idle += 1;
                continue;
            }
            Err(_) => return seen,
        };
        let received = Utc::now();
        let frame = frame.as_str();
        let offset: u64 = field(frame, "\"offset\":")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        if offset <= last_offset {
            seen.disordered += 1;
        }
        last_offset = offset;
        if !frame.contains(ACTION) {
            continue;
        }
        seen.events += 1;
        if sample {
            let created = field(frame, "\"created_at\":")
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .expect("an activity's created_at");
            seen.latencies
                .push((received - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let http_url = var("HTTP_URL");
    let ws_url = format!("{}/api/v1/ws", http_url.replacen("http", "ws", 1));
    let (token, tenant) = (var("WS_TOKEN"), var("WS_TENANT"));
    let subscribers = number("SUBSCRIBERS", 1_000) as usize;
    let rate = number("RATE", 500);
    let seconds = number("SECONDS", 10);
    let auth = serde_json::json!({"type": "auth", "token": token, "tenant_id": tenant}).to_string();

    let ready = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (url, auth, opened, expected) = (
            ws_url.clone(),
            auth.clone(),
            ready.clone(),
            expected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            subscribe(&url, &auth, i % SAMPLE_EVERY == 0, opened, expected).await
        }));
        // Opened a few at a time: the server authenticates each one.
        while ready.load(Ordering::Relaxed) + 32 < i as u64 + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    while (ready.load(Ordering::Relaxed) as usize) < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The producer: `rate` messages a second for `seconds`, each its own POST.
    let client = reqwest::Client::new();
    let created = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(256));
    let total = rate * seconds;
    let started = Instant::now();
    let mut posts = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await.expect("open");
        let (client, created) = (client.clone(), created.clone());
        let (url, token, tenant) = (
            format!("{http_url}/api/v1/conversations/messages"),
            token.clone(),
            tenant.clone(),
        );
        posts.push(tokio::spawn(async move {
            let answer = client
                .post(url)
                .bearer_auth(token)
                .header("X-Tenant-ID", tenant)
                .json(
                    &serde_json::json!({"customer_handle": format!("+1555{:07}", n % 100),
                    "channel": "whatsapp", "sender_type": "customer", "message": format!("m{n}")}),
                )
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().as_u16() == 201) {
                created.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for post in posts {
        post.await.expect("a post");
    }
    let produced_in = started.elapsed();
    let sent = created.load(Ordering::Relaxed);
    expected.store(sent, Ordering::Relaxed);

    let mut latencies = Vec::new();
    let (mut lost, mut disordered, mut received, mut closed) = (0u64, 0u64, 0u64, 0u64);
    for task in tasks {
        let seen = task.await.expect("a subscriber");
        if let Some(how) = &seen.closed {
            closed += 1;
            if closed == 1 {
                eprintln!("a connection ended early: {how}");
            }
        }
        lost += sent.saturating_sub(seen.events);
        received += seen.events;
        disordered += seen.disordered;
        latencies.extend(seen.latencies);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "subscribers: {subscribers}, events created: {sent} of {total} in {:.1} s ({:.0}/s)",
        produced_in.as_secs_f64(),
        sent as f64 / produced_in.as_secs_f64()
    );
    println!(
        "frames expected: {}, received: {received}, lost: {lost}, repeated or out of order: {disordered}, connections closed early: {closed}",
        sent * subscribers as u64
    );
    println!(
        "latency ms (created_at to receipt, {} samples): p50 {:.1}  p99 {:.1}  max {:.1}",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );
    if lost > 0 || disordered > 0 || closed > 0 || sent < total {
        std::process::exit(1);
    }
}
