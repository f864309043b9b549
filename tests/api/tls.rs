//! TLS to PostgreSQL: a private cluster that accepts only TLS connections (`hostssl`), with a
//! CA and a server certificate for 127.0.0.1 and localhost made here; `sslmode` and
//! `sslrootcert` in the server's URLs mean what they mean to libpq.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convcommerce::Application;
use convcommerce::config::Config;
use convcommerce::db::bootstrap::{self, Provisioned};
use convcommerce::db::connect_once;
use convcommerce::db::embedded::{Durability, EmbeddedPostgres, ServerSetup};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::helpers::*;

/// The TLS-only cluster, its database, and the CA files the tests name in `sslrootcert`.
struct TlsCluster {
    db: Provisioned,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server holds.
    other_ca: PathBuf,
}

/// Only TLS from this machine, every role with SCRAM; trust only on the cluster's own socket,
/// where it sets the superuser's password.
const HBA: &str = "local all all trust\n\
                   hostssl all all 127.0.0.1/32 scram-sha-256\n";

/// Started once and shared by the test processes, like the main test cluster; the first
/// process makes the certificates (under a lock) and the others read them.
async fn cluster() -> &'static TlsCluster {
    static CLUSTER: OnceCell<TlsCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-postgres");
            let certs = dir.join("certs");
            let made = tokio::task::spawn_blocking({
                let certs = certs.clone();
                move || certificates(&certs)
            })
            .await
            .unwrap();
            let setup = ServerSetup {
                settings: vec![("ssl".into(), "on".into())],
                files: vec![
                    ("ssl_cert_file".into(), made.server_cert.into_bytes()),
                    ("ssl_key_file".into(), made.server_key.into_bytes()),
                    ("hba_file".into(), HBA.as_bytes().to_vec()),
                ],
            };
            let pg = EmbeddedPostgres::start_with(&dir, Durability::Ephemeral, setup)
                .await
                .expect("starting the TLS test PostgreSQL");
            let superuser = format!("{}?sslmode=require", pg.superuser_url("postgres"));
            let db = bootstrap::provision(&superuser, "convcommerce_tls", pg.passwords())
                .await
                .expect("provisioning the TLS test database over TLS");
            TlsCluster {
                db,
                ca: certs.join("ca.pem"),
                other_ca: certs.join("other-ca.pem"),
            }
        })
        .await
}

struct Certificates {
    server_cert: String,
    server_key: String,
}

/// The CA, the server's certificate and key, and the other CA, under `dir`: read when there,
/// made once otherwise.
fn certificates(dir: &Path) -> Certificates {
    fs::create_dir_all(dir).unwrap();
    let lock = File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    if !key.exists() {
        let ca = authority("convcommerce test CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(["127.0.0.1".to_string(), "localhost".into()])
            .expect("valid names");
        params
            .distinguished_name
            .push(DnType::CommonName, "convcommerce test PostgreSQL");
        let server = params.signed_by(&server_key, &ca).unwrap();
        fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        fs::write(dir.join("other-ca.pem"), authority("an unrelated CA").pem()).unwrap();
        fs::write(&cert, server.pem()).unwrap();
        fs::write(&key, server_key.serialize_pem()).unwrap();
    }
    Certificates {
        server_cert: fs::read_to_string(cert).unwrap(),
        server_key: fs::read_to_string(key).unwrap(),
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// `url` with its query replaced by `params`.
fn with_params(url: &str, params: &str) -> String {
    let base = url.split('?').next().unwrap();
    format!("{base}?{params}")
}

fn verify_full(url: &str, ca: &Path) -> String {
    with_params(
        url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
}

/// The app role's URL under another host name that resolves nowhere, reaching the server
/// through `hostaddr`: its certificate does not name that host.
fn misnamed(url: &str, params: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_host(Some("db.invalid")).unwrap();
    with_params(parsed.as_str(), &format!("hostaddr=127.0.0.1&{params}"))
}

/// Why `Application::build` refuses `database_url`.
async fn build_error(db: &Provisioned, database_url: &str) -> String {
    let mut vars = config_vars(db);
    vars.insert("DATABASE_URL".into(), database_url.to_string());
    match Application::build(Config::from_source(&vars).unwrap()).await {
        Ok(_) => panic!("the server must refuse to start"),
        Err(e) => format!("{e:#}"),
    }
}

async fn connects(url: &str) -> Result<bool, String> {
    let client = connect_once(url).await.map_err(|e| format!("{e:#}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test]
async fn verify_full_serves_and_migrates_over_verified_tls() {
    let tls = cluster().await;
    let url = verify_full(&tls.db.app_url, &tls.ca);
    let app = TestApp::spawn_on(tls.db.clone(), |vars| {
        vars.insert("DATABASE_URL".into(), url.clone());
    })
    .await;
    let tenant = app.tenant().await;
    app.product(&tenant, json!({"name": "Encrypted"})).await;
    let listed = app
        .get("/api/v1/products")
        .owner_of(&tenant)
        .send()
        .await
        .expect(200);
    assert_eq!(listed.body["items"][0]["name"], "Encrypted");
    app.get("/health/ready").send().await.expect(200);

    // The pool, the read lane and the listener: all encrypted (the cluster accepts nothing else).
    let admin = connect_once(&tls.db.superuser_url).await.unwrap();
    let rows = admin
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.usename = 'convcommerce_app' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(rows.iter().all(|r| r.get::<_, bool>(1)), "{names:?}");
    for name in ["convcommerce", "convcommerce-lane"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    app.stop().await;

    let owner = SecretString::from(verify_full(&tls.db.owner_url, &tls.ca));
    assert_eq!(convcommerce::migrate(&owner).await.unwrap(), 0);
}

#[tokio::test]
async fn serve_stops_at_once_naming_a_certificate_it_cannot_verify() {
    let tls = cluster().await;
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_convcommerce"))
        .arg("serve")
        .env("DATABASE_URL", verify_full(&tls.db.app_url, &tls.other_ca))
        .env_remove("MIGRATION_DATABASE_URL")
        .env("JWT_HS256_SECRET", SECRET)
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "convcommerce: connecting with DATABASE_URL: TLS to PostgreSQL failed \
         (sslmode=verify-full, roots from sslrootcert {}): error performing TLS handshake: \
         invalid peer certificate: UnknownIssuer",
        tls.other_ca.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let password = url::Url::parse(&tls.db.app_url).unwrap();
    let password = password
        .password()
        .expect("the role's URL carries its password");
    assert!(!stderr.contains(password), "no password: {stderr}");

    let owner = SecretString::from(verify_full(&tls.db.owner_url, &tls.other_ca));
    let err = format!("{:#}", convcommerce::migrate(&owner).await.unwrap_err());
    assert!(
        err.starts_with("connecting with MIGRATION_DATABASE_URL: TLS to PostgreSQL failed"),
        "{err}"
    );
}

#[tokio::test]
async fn require_serves_without_verifying_and_disable_is_refused() {
    let tls = cluster().await;
    // The CA is in no root store: require encrypts and checks nothing.
    let require = with_params(&tls.db.app_url, "sslmode=require");
    let app = TestApp::spawn_on(tls.db.clone(), |vars| {
        vars.insert("DATABASE_URL".into(), require);
    })
    .await;
    app.get("/health/ready").send().await.expect(200);
    app.stop().await;
    let err = build_error(&tls.db, &with_params(&tls.db.app_url, "sslmode=disable")).await;
    assert!(
        err.starts_with("connecting with DATABASE_URL: ") && err.contains("no encryption"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_ca_trusts_the_chain_and_verify_full_also_the_host_name() {
    let tls = cluster().await;
    let ca = tls.ca.display();
    let app_url = &tls.db.app_url;
    for host in ["127.0.0.1", "localhost"] {
        let mut url = url::Url::parse(app_url).unwrap();
        url.set_host(Some(host)).unwrap();
        assert_eq!(
            connects(&verify_full(url.as_str(), &tls.ca)).await,
            Ok(true),
            "{host}"
        );
    }
    assert_eq!(
        connects(&misnamed(
            app_url,
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .await,
        Ok(true),
        "verify-ca does not check the host name"
    );
    let err = connects(&misnamed(
        app_url,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err();
    assert!(
        err.contains("certificate not valid for name \"db.invalid\""),
        "{err}"
    );
    let other = tls.other_ca.display();
    for mode in ["verify-ca", "require", "prefer"] {
        // With a root file, libpq checks the chain even in require and prefer.
        let err = connects(&with_params(
            app_url,
            &format!("sslmode={mode}&sslrootcert={other}"),
        ))
        .await
        .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{mode}: {err}");
    }
    assert_eq!(
        connects(&with_params(app_url, "sslmode=prefer")).await,
        Ok(true),
        "prefer encrypts when the server offers TLS"
    );
}
