//! What a client may hold open (SPEC §10): half-sent requests are closed after the header
//! timeout, idle keep-alive connections after the idle timeout, and connections past the cap
//! at once, while the server keeps answering everyone else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn spawn(header: &str, idle: &str, cap: &str) -> TestApp {
    let (header, idle, cap) = (header.to_string(), idle.to_string(), cap.to_string());
    TestApp::spawn_with(move |vars| {
        vars.insert("HTTP_HEADER_READ_TIMEOUT_SECONDS".into(), header);
        vars.insert("HTTP_IDLE_TIMEOUT_SECONDS".into(), idle);
        vars.insert("HTTP_MAX_CONNECTIONS".into(), cap);
    })
    .await
}

async fn open(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Waits for the server to close `socket`; how long that took, or `None` within `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn get_health(socket: &mut TcpStream) -> String {
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let app = spawn("1", "60", "1000").await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut socket = open(&app).await;
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            .await
            .unwrap();
        sockets.push(socket);
    }
    let started = Instant::now();
    // Everyone else is served meanwhile.
    for _ in 0..5 {
        let asked = Instant::now();
        app.get("/health").send().await.expect(200);
        assert!(asked.elapsed() < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for socket in &mut sockets {
        let left = Duration::from_secs(3).saturating_sub(started.elapsed());
        assert!(
            closed_within(socket, left).await.is_some(),
            "a half-sent request is closed within the timeout (1 s) and a tick"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout_until_the_idle_one() {
    let app = spawn("1", "3", "1000").await;
    let mut socket = open(&app).await;
    assert!(get_health(&mut socket).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert!(
        get_health(&mut socket).await.starts_with("HTTP/1.1 200"),
        "an idle connection is not closed by the header timeout"
    );
    let closed = closed_within(&mut socket, Duration::from_secs(5))
        .await
        .expect("closed after the idle timeout");
    assert!(closed >= Duration::from_millis(2_500), "{closed:?}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let app = spawn("10", "60", "5").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut socket = open(&app).await;
        assert!(get_health(&mut socket).await.starts_with("HTTP/1.1 200"));
        held.push(socket);
    }
    let mut over = open(&app).await;
    let _ = over
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut over, Duration::from_secs(2))
            .await
            .is_some(),
        "the sixth connection is closed"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = open(&app).await;
    assert!(
        get_health(&mut again).await.starts_with("HTTP/1.1 200"),
        "room again once a connection closed"
    );
    let text = get_health(&mut held[0]).await;
    assert!(text.starts_with("HTTP/1.1 200"));
    drop(held);
    drop(again);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.metric("convcommerce_http_connections_refused_total")
            .await
            >= 1.0
    );
}
