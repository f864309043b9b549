//! Outbox throughput: builds the server in this process on a fresh database (provisioned with
//! a superuser URL, like the tests), with `NOTIFY_WORKERS` workers and an in-process SMTP sink
//! that accepts every message, sends N urgent email notifications through
//! `POST /api/v1/notifications`, and prints how many notifications a second went out end to
//! end (first request to the sink's last 250). Prints figures; asserts nothing.
//!
//!     SUPERUSER_URL=postgres://postgres@127.0.0.1:5432/postgres N=2000 NOTIFY_WORKERS=4 \
//!         cargo run --release --example outbox_throughput

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use convcommerce::Application;
use convcommerce::config::Config;
use convcommerce::db::bootstrap::{self, RolePasswords};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "outbox-throughput-secret-0123456789abcdef";

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One SMTP session: every command accepted, each message counted at its final dot.
async fn session(socket: TcpStream, received: Arc<AtomicUsize>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut data = false;
    while let Some(line) = lines.next_line().await? {
        if data {
            if line == "." {
                data = false;
                received.fetch_add(1, Ordering::Relaxed);
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
            "DATA" => {
                data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 OK\r\n",
        };
        write.write_all(answer).await?;
    }
    Ok(())
}

async fn sink(listener: TcpListener, received: Arc<AtomicUsize>) {
    while let Ok((socket, _)) = listener.accept().await {
        tokio::spawn(session(socket, received.clone()));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let superuser = var(
        "SUPERUSER_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let n: usize = var("N", "2000").parse()?;
    let workers = var("NOTIFY_WORKERS", "4");
    let database = format!("convcommerce_outbox_{}", uuid::Uuid::now_v7().simple());
    let db = bootstrap::provision(
        &superuser,
        &database,
        &RolePasswords::from_secret(superuser.as_bytes()),
    )
    .await?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let smtp_port = listener.local_addr()?.port();
    let received = Arc::new(AtomicUsize::new(0));
    tokio::spawn(sink(listener, received.clone()));

    let media = std::env::temp_dir().join(&database);
    let vars: BTreeMap<String, String> = [
        ("DATABASE_URL", db.app_url.clone()),
        ("JWT_HS256_SECRET", SECRET.into()),
        ("PLATFORM_ADMIN_SUBJECTS", "bench-admin".into()),
        ("PORT", "0".into()),
        ("ENVIRONMENT", "test".into()),
        ("RATE_LIMITS", "off".into()),
        ("MEDIA_STORE", media.to_string_lossy().into_owned()),
        ("SMTP_HOST", "127.0.0.1".into()),
        ("SMTP_PORT", smtp_port.to_string()),
        ("SMTP_TLS", "none".into()),
        ("SMTP_FROM", "bench@outbox.example".into()),
        ("NOTIFY_WORKERS", workers.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let app = Application::build(Config::from_source(&vars)?).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped(false));

    let secret = SecretString::from(SECRET);
    let admin = convcommerce::auth::jwt::mint_hs256(
        &secret,
        None,
        "bench-admin",
        Duration::from_secs(3600),
    )?;
    let owner = convcommerce::auth::jwt::mint_hs256(
        &secret,
        None,
        "bench-owner",
        Duration::from_secs(3600),
    )?;
    let http = reqwest::Client::new();
    let tenant: Value = http
        .post(format!("{base}/api/v1/admin/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Bench", "slug": "outbox-bench",
                      "owner": {"external_id": "bench-owner", "email": "owner@outbox.example"}}))
        .send()
        .await?
        .json()
        .await?;
    let tenant = tenant["id"].as_str().expect("a tenant").to_string();
    tokio_postgres::connect(&db.superuser_url, tokio_postgres::NoTls)
        .await
        .map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })?
        .execute(
            "UPDATE tenants SET trust_level = 1 WHERE id = $1::text::uuid",
            &[&tenant],
        )
        .await?;
    http.put(format!("{base}/api/v1/notifications/settings"))
        .bearer_auth(&owner)
        .header("X-Tenant-ID", &tenant)
        .json(&json!({"channels": {"urgent": ["email"], "high": [], "medium": [], "low": []}}))
        .send()
        .await?
        .error_for_status()?;

    let started = Instant::now();
    for i in 0..n {
        http.post(format!("{base}/api/v1/notifications"))
            .bearer_auth(&owner)
            .header("X-Tenant-ID", &tenant)
            .json(
                &json!({"title": format!("Bench {i}"), "body": "b", "priority": "urgent",
                          "recipients": {"roles": ["owner"]}}),
            )
            .send()
            .await?
            .error_for_status()?;
    }
    let enqueued = started.elapsed();
    while received.load(Ordering::Relaxed) < n && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let sent = received.load(Ordering::Relaxed);
    println!(
        "outbox: {sent} of {n} emails with {workers} workers in {:.2} s ({:.0} notifications/s end to end; the {n} requests took {:.2} s)",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        enqueued.as_secs_f64()
    );
    shutdown.cancel();
    server.await??;
    tokio_postgres::connect(&superuser, tokio_postgres::NoTls)
        .await
        .map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })?
        .batch_execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
        .await?;
    std::fs::remove_dir_all(media).ok();
    Ok(())
}
