//! The test harness: a real PostgreSQL (TEST_DATABASE_URL, or a private cluster started like
//! `serve` does), the real server on port 0, and a small HTTP client for it.
//!
//! Tests share one migrated database per migration set and isolate themselves by creating
//! fresh tenants; the few that need a database of their own make one.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use convcommerce::Application;
use convcommerce::clock::ManualClock;
use convcommerce::config::Config;
use convcommerce::db::bootstrap::{self, Provisioned, RolePasswords};
use convcommerce::db::embedded::{Durability, EmbeddedPostgres};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-that-is-long-enough-0123456789";
pub const ADMIN: &str = "platform-admin";

/// The superuser URL of the test cluster's maintenance database.
pub async fn superuser_url() -> String {
    test_cluster().await.0.clone()
}

/// The test cluster's superuser URL and the passwords its roles get.
async fn test_cluster() -> &'static (String, RolePasswords) {
    static CLUSTER: OnceCell<(String, RolePasswords)> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
                // Every process (and worktree) using this server derives the same passwords.
                let passwords = RolePasswords::from_secret(url.as_bytes());
                return (url, passwords);
            }
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-postgres");
            let pg = EmbeddedPostgres::start(&dir, Durability::Ephemeral)
                .await
                .expect("starting the private test PostgreSQL");
            (pg.superuser_url("postgres"), pg.passwords().clone())
        })
        .await
}

/// The shared test database, provisioned and migrated once per migration set.
pub async fn database() -> Provisioned {
    static DB: OnceCell<Provisioned> = OnceCell::const_new();
    DB.get_or_init(|| async {
        let name = format!(
            "convcommerce_test_{}",
            convcommerce::db::migrate::fingerprint()
        );
        let (url, passwords) = test_cluster().await;
        bootstrap::provision(url, &name, passwords)
            .await
            .expect("provisioning the test database")
    })
    .await
    .clone()
}

/// A database of the test's own (for tests that alter the schema).
pub async fn private_database() -> Provisioned {
    let name = format!("convcommerce_own_{}", Uuid::now_v7().simple());
    let (url, passwords) = test_cluster().await;
    bootstrap::provision(url, &name, passwords)
        .await
        .expect("provisioning a private database")
}

/// A direct connection to the database, outside the server.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the database accepts the connection");
    tokio::spawn(conn);
    client
}

/// A transaction with `tenant` set, the way the server opens its own.
pub async fn tenant_tx(
    client: &mut tokio_postgres::Client,
    tenant: Uuid,
) -> tokio_postgres::Transaction<'_> {
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('my.tenant_id', $1, true)",
        &[&tenant.to_string()],
    )
    .await
    .unwrap();
    tx
}

pub fn config_vars(db: &Provisioned) -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", db.app_url.as_str()),
        ("JWT_HS256_SECRET", SECRET),
        ("PLATFORM_ADMIN_SUBJECTS", ADMIN),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("ENVIRONMENT", "test"),
        ("DB_POOL_SIZE", "4"),
        // One read lane whatever the machine's core count (the default follows it).
        ("DB_LANES", "1"),
        ("MEDIA_MAX_BYTES", "262144"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        // A directory per server: the cleanup job reconciles the whole store with its rows.
        "MEDIA_STORE".to_string(),
        format!(
            "{}/media/{}",
            env!("CARGO_TARGET_TMPDIR"),
            Uuid::now_v7().simple()
        ),
    )])
    .collect()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Provisioned,
    /// The configuration the server was built with (for jobs a test runs beside it).
    pub config: Config,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The instance's hub publisher (SPEC §7), as its producers use it.
    pub publisher: convcommerce::monitoring::hub::fanout::Publisher,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    /// The problem document's `code`, for error responses.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        self
    }

    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(self.code(), code, "{}", self.body);
        self
    }
}

/// A request under construction.
pub struct Call {
    builder: reqwest::RequestBuilder,
}

impl Call {
    pub fn token(mut self, token: &str) -> Self {
        self.builder = self.builder.bearer_auth(token);
        self
    }

    pub fn user(self, sub: &str) -> Self {
        self.token(&token(sub))
    }

    /// As `tenant`'s owner, in `tenant`.
    pub fn owner_of(self, tenant: &TestTenant) -> Self {
        self.user(&tenant.owner).tenant(tenant.id)
    }

    pub fn tenant(mut self, tenant: impl std::fmt::Display) -> Self {
        self.builder = self.builder.header("X-Tenant-ID", tenant.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }

    pub fn multipart(mut self, form: reqwest::multipart::Form) -> Self {
        self.builder = self.builder.multipart(form);
        self
    }

    pub async fn send(self) -> Response {
        let response = self.builder.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Response {
            status,
            headers,
            body,
        }
    }
}

/// A tenant made for one test, with its owner.
pub struct TestTenant {
    pub id: Uuid,
    pub owner: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut BTreeMap<String, String>)) -> Self {
        let db = database().await;
        Self::spawn_on(db, adjust).await
    }

    pub async fn spawn_on(
        db: Provisioned,
        adjust: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Self {
        Self::spawn_full(db, None, adjust).await
    }

    /// The server on `db`, reading `clock` when given (else the system clock).
    pub async fn spawn_full(
        db: Provisioned,
        clock: Option<ManualClock>,
        adjust: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Self {
        let mut vars = config_vars(&db);
        adjust(&mut vars);
        let config = Config::from_source(&vars).expect("a valid test configuration");
        let app = match clock {
            Some(clock) => Application::build_with_clock(config.clone(), Arc::new(clock)).await,
            None => Application::build(config.clone()).await,
        }
        .expect("the server builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let publisher = app.publisher();
        let server = tokio::spawn(app.run_until_stopped(false));
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            db,
            config,
            shutdown,
            server,
            publisher,
        }
    }

    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            builder: self.http.request(method, format!("{}{path}", self.base)),
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> Call {
        self.call(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> Call {
        self.call(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }

    /// A tenant for tests of features other than trust: made through the admin API, then put
    /// at trust level 3 and locked there (straight in the database, so no trust activity or
    /// notification is recorded), so that trust's caps and gates stay out of their way.
    pub async fn tenant(&self) -> TestTenant {
        let tenant = self.new_tenant().await;
        // Through the service's own connector, which honours the URL's `sslmode`.
        convcommerce::db::connect_once(&self.db.app_url)
            .await
            .expect("the database accepts the connection")
            .execute(
                "UPDATE tenants SET trust_level = 3, trust_locked = true,
                     trust_reason = 'test fixture' WHERE id = $1",
                &[&tenant.id],
            )
            .await
            .unwrap();
        tenant
    }

    /// Creates a tenant with a fresh owner through the admin API: trust level 0, as every new
    /// tenant starts.
    pub async fn new_tenant(&self) -> TestTenant {
        let owner = format!("owner-{}", Uuid::now_v7().simple());
        let slug = format!("t-{}", Uuid::now_v7().simple());
        let created = self
            .post("/api/v1/admin/tenants")
            .user(ADMIN)
            .json(&json!({
                "name": "Test store",
                "slug": slug,
                "owner": {"external_id": owner, "email": format!("{owner}@test.example")}
            }))
            .send()
            .await
            .expect(201);
        TestTenant {
            id: created.body["id"].as_str().unwrap().parse().unwrap(),
            owner,
        }
    }

    /// Adds a member with `role` to `tenant` (as its owner); returns the member's subject.
    pub async fn member(&self, tenant: &TestTenant, role: &str) -> (String, Uuid) {
        let sub = format!("{role}-{}", Uuid::now_v7().simple());
        let created = self
            .post("/api/v1/users")
            .owner_of(tenant)
            .json(
                &json!({"external_id": sub, "email": format!("{sub}@test.example"), "role": role}),
            )
            .send()
            .await
            .expect(201);
        (sub, created.body["id"].as_str().unwrap().parse().unwrap())
    }

    /// The user id of `tenant`'s first owner (the member `tenant.owner` names).
    pub async fn owner_id(&self, tenant: &TestTenant) -> Uuid {
        self.get("/api/v1/users?limit=100")
            .owner_of(tenant)
            .send()
            .await
            .expect(200)
            .body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["external_id"] == tenant.owner.as_str())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Sets `tenant`'s limits through the admin API.
    pub async fn set_limits(&self, tenant: &TestTenant, limits: Value) {
        self.patch(&format!("/api/v1/admin/tenants/{}", tenant.id))
            .user(ADMIN)
            .json(&json!({ "limits": limits }))
            .send()
            .await
            .expect(200);
    }

    /// The value of a metric line starting with `prefix` (labels included), summed.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").send().await.expect(200).body;
        text.as_str()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Creates a product in `tenant` (as its owner) from `fields` over defaults: active,
    /// 10.00 USD, 10 in stock.
    pub async fn product(&self, tenant: &TestTenant, fields: Value) -> Value {
        let mut body = json!({"name": "Thing", "price_cents": 1000, "currency": "USD",
                              "stock": 10, "status": "active"});
        for (k, v) in fields.as_object().expect("an object") {
            body[k] = v.clone();
        }
        self.post("/api/v1/products")
            .owner_of(tenant)
            .json(&body)
            .send()
            .await
            .expect(201)
            .body
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
    }
}

/// The `field`s of a 422's `errors`, in order.
pub fn error_fields(response: &Response) -> Vec<String> {
    response.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The `id`s of a list page, in order.
pub fn ids(response: &Response) -> Vec<String> {
    response.body["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid HS256 token for `sub`.
pub fn token(sub: &str) -> String {
    sign(
        Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now() + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

pub fn sign(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("signing")
}

/// A redis-server of the test's own on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a test's media bytes go. Media tests run once per backend ([`for_each_media_backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaBackend {
    /// The shared test directory (`config_vars`).
    Directory,
    /// A bucket of the test's own on the test S3 server, under a prefix as deployments use.
    S3,
}

/// The prefix of the S3 tests' media objects in their bucket.
pub const S3_PREFIX: &str = "media/objects";

impl MediaBackend {
    /// Points `MEDIA_STORE` at this backend (creating the S3 bucket first).
    pub async fn configure(self) -> impl FnOnce(&mut BTreeMap<String, String>) {
        let s3 = match self {
            Self::Directory => None,
            Self::S3 => Some(S3Bucket::create().await),
        };
        move |vars| {
            if let Some(bucket) = s3 {
                vars.extend(bucket.vars());
            }
        }
    }
}

/// Runs each named test body, an `async fn(MediaBackend)` beside it, once per media backend:
/// as the tests `<name>::directory` and `<name>::s3`.
macro_rules! for_each_media_backend {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn directory() {
                super::$name($crate::helpers::MediaBackend::Directory).await
            }

            #[tokio::test]
            async fn s3() {
                super::$name($crate::helpers::MediaBackend::S3).await
            }
        }
    )+};
}
pub(crate) use for_each_media_backend;

/// The test S3 server: a moto server (PyPI `moto[server]`, which .ci/run installs), started
/// once per test process on a free port. It reads its stdin until end of file, so it ends with
/// this process however that ends (the pipe closes).
struct S3Server {
    endpoint: String,
    _process: std::process::Child,
}

pub async fn s3_endpoint() -> String {
    static SERVER: OnceCell<S3Server> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(start_moto)
                .await
                .expect("starting moto")
        })
        .await
        .endpoint
        .clone()
}

/// Request logs go to /dev/null once the server is up: nobody reads its stderr pipe then.
const MOTO: &str = "import os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
server.start()
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
";

fn start_moto() -> S3Server {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
    let install = "the S3 media tests need moto's server: run .ci/run, or \
                   `pip install 'moto[server]'` and set MOTO_PYTHON to that python";
    let mut process = Command::new(&python)
        .args(["-c", MOTO])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{install} (running {python}: {e})"));
    let mut port = String::new();
    BufReader::new(process.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let Ok(port) = port.trim().parse::<u16>() else {
        let mut stderr = String::new();
        process
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .ok();
        panic!("{install}; {python} said:\n{stderr}");
    };
    S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        _process: process,
    }
}

/// A bucket made for one test on the test S3 server.
pub struct S3Bucket {
    pub endpoint: String,
    pub name: String,
}

impl S3Bucket {
    pub async fn create() -> Self {
        let endpoint = s3_endpoint().await;
        let name = format!("cc-test-{}", Uuid::now_v7().simple());
        // moto checks no signatures, so a plain PUT creates the bucket.
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .await
            .expect("the S3 server answers");
        assert!(created.status().is_success(), "creating bucket {name}");
        Self { endpoint, name }
    }

    /// The server's variables for this bucket under [`S3_PREFIX`].
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("MEDIA_STORE", format!("s3://{}/{S3_PREFIX}", self.name)),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The keys of the bucket's objects and their sizes, read from S3 itself.
    pub async fn objects(&self) -> Vec<(String, u64)> {
        let listing = reqwest::get(format!("{}/{}?list-type=2", self.endpoint, self.name))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing
            .split("<Contents>")
            .skip(1)
            .map(|entry| {
                let field = |tag: &str| {
                    let open = format!("<{tag}>");
                    let start = entry.find(&open).unwrap() + open.len();
                    let end = entry[start..].find('<').unwrap() + start;
                    entry[start..end].to_string()
                };
                (field("Key"), field("Size").parse().unwrap())
            })
            .collect()
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture exists")
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Drops a database a test made for itself.
pub async fn drop_database(db: &Provisioned) {
    connect(&superuser_url().await)
        .await
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            db.database
        ))
        .await
        .unwrap();
}

/// The plans PostgreSQL picks for a list's search statement, as the application role in
/// `tenant`: the statement with its parameters (a custom plan), and the generic plan a
/// prepared statement may switch to after a few executions. `literals` are the statement's
/// parameters, in order, as SQL literals (EXECUTE takes no protocol parameters). The search
/// must find exactly one row.
pub async fn search_plans(
    app_url: &str,
    tenant: Uuid,
    statement: &convcommerce::commerce::filter::Statement,
    literals: &str,
) -> [String; 2] {
    let mut client = connect(app_url).await;
    let tx = tenant_tx(&mut client, tenant).await;
    let lines = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let custom = tx
        .query(
            &format!("EXPLAIN (FORMAT TEXT) {}", statement.sql),
            &statement.params(),
        )
        .await
        .unwrap();
    let found = tx.query(&statement.sql, &statement.params()).await.unwrap();
    assert_eq!(found.len(), 1, "the search finds the one matching row");
    tx.batch_execute(&format!(
        "SET LOCAL plan_cache_mode = force_generic_plan; PREPARE search AS {}",
        statement.sql
    ))
    .await
    .unwrap();
    let generic = tx
        .query(&format!("EXPLAIN EXECUTE search({literals})"), &[])
        .await
        .unwrap();
    [lines(custom), lines(generic)]
}
