//! Idle WebSocket cost: opens N authenticated, idle connections to a running server and prints
//! the server's RSS growth per connection (from /proc/<pid>/status). Prints figures; asserts
//! nothing. See bench/README.md ("WebSocket idle cost").
//!
//!     WS_URL=ws://127.0.0.1:8000/api/v1/ws WS_TOKEN=... WS_TENANT=... SERVER_PID=... N=10000 \
//!         cargo run --release --example ws_idle

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"))
}

fn rss_kib(pid: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in the status")
}

/// Every connection is a descriptor here (and one in the server).
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(wanted);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur >= wanted,
        "RLIMIT_NOFILE's hard limit is {}: raise it (ulimit -Hn)",
        limit.rlim_max
    );
}

#[tokio::main]
async fn main() {
    let url = var("WS_URL");
    let token = var("WS_TOKEN");
    let tenant = var("WS_TENANT");
    let pid = var("SERVER_PID");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    raise_fd_limit(n as u64 + 1_024);
    let auth = serde_json::json!({"type": "auth", "token": token, "tenant_id": tenant}).to_string();

    let before = rss_kib(&pid);
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        ws.send(Message::text(auth.clone()))
            .await
            .expect("auth sent");
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"ready\"") => {}
            other => panic!("connection {i}: no ready frame: {other:?}"),
        }
        sockets.push(ws);
    }
    let opened = started.elapsed();
    // Let the server settle (allocator, first pings are 25 s away).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(&pid);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!("connections: {n} (opened in {:.1} s)", opened.as_secs_f64());
    println!("server RSS: {before} KiB before, {after} KiB after");
    println!("per idle connection: {per:.1} KiB");
    drop(sockets);
}
