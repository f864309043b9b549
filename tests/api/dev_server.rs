//! `serve` without DATABASE_URL, as a newcomer runs it: a private PostgreSQL that is created,
//! migrated, reused by the next start (and by `demo` meanwhile) and stopped with the server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers;

struct Started {
    child: Child,
    base: String,
    token: String,
    /// The cluster's directory as the banner names it (under `data_dir`, or under /var/tmp
    /// when the `postgres` account cannot reach `data_dir`).
    cluster: PathBuf,
    /// The application role's URL the banner prints.
    database_url: String,
}

/// Starts `convcommerce serve` on a free port and reads its banner.
fn start(data_dir: &Path) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_convcommerce"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env_remove("JWT_HS256_SECRET")
        .env_remove("PLATFORM_ADMIN_SUBJECTS")
        .env("CONVCOMMERCE_DATA_DIR", data_dir)
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut cluster, mut database_url) = (None, None, None, None);
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("convcommerce is running at ") {
            base = rest.split_whitespace().next().map(str::to_string);
            cluster = rest.split("(data: ").nth(1).map(|d| {
                PathBuf::from(d.trim_end_matches(')'))
                    .parent()
                    .unwrap()
                    .to_path_buf()
            });
        }
        if let Some(url) = line.strip_prefix("  DATABASE_URL=") {
            database_url = Some(url.to_string());
        }
        if let Some(t) = line.strip_prefix("  export TOKEN=") {
            token = Some(t.trim().to_string());
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Started {
        child,
        base: base.expect("a base URL in the banner"),
        token: token.expect("a token in the banner"),
        cluster: cluster.expect("the data directory in the banner"),
        database_url: database_url.expect("DATABASE_URL in the banner"),
    }
}

fn stop(mut child: Child) {
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the server exits cleanly on SIGTERM: {status}"
    );
}

fn cluster_running(cluster: &Path) -> bool {
    let port = std::fs::read_to_string(cluster.join("port"));
    match port {
        Ok(port) => {
            std::net::TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>().unwrap())).is_ok()
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn serve_runs_its_own_database_and_keeps_the_data() {
    let data_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let Started {
        child,
        base,
        token,
        cluster,
        database_url,
    } = start(&data_dir);
    // The URL it prints logs in with its generated password, and nothing gets in without it.
    helpers::connect(&database_url).await;
    let mut bare = url::Url::parse(&database_url).unwrap();
    let password = bare
        .password()
        .expect("a password in DATABASE_URL")
        .to_string();
    assert_eq!(password.len(), 43, "{password}");
    bare.set_password(None).unwrap();
    let refused = tokio_postgres::connect(bare.as_str(), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "no login without the password");
    let ready = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let created = http
        .post(format!("{base}/api/v1/admin/tenants"))
        .bearer_auth(&token)
        .json(&json!({"name": "Kept", "slug": "kept-store", "owner": {"external_id": "dev-admin", "email": "me@kept.example"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cluster_running(&cluster));
    stop(child);
    assert!(
        !cluster_running(&cluster),
        "stopping the server stops its PostgreSQL"
    );

    let Started {
        child,
        base,
        token,
        database_url: again_url,
        ..
    } = start(&data_dir);
    assert_eq!(
        url::Url::parse(&again_url).unwrap().password(),
        Some(password.as_str()),
        "the restart keeps the password"
    );
    let tenant = http
        .get(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .header("X-Tenant-ID", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tenant.status(),
        200,
        "the second start reuses the data and the dev secret"
    );

    // `demo` while the server runs attaches to the server's cluster and leaves it running.
    let demo = Command::new(env!("CARGO_BIN_EXE_convcommerce"))
        .arg("demo")
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env_remove("JWT_HS256_SECRET")
        .env("CONVCOMMERCE_DATA_DIR", &data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo runs");
    assert!(demo.status.success(), "demo: {demo:?}");
    assert!(
        cluster_running(&cluster),
        "demo left the server's cluster running"
    );
    let again = http
        .get(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .header("X-Tenant-ID", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the server still reaches its database");
    stop(child);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&cluster);
}
