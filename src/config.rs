//! One validated configuration, read from the environment (and an optional `.env`).
//!
//! Every variable is parsed here; a bad value stops start-up with a message naming it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Staging,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub jwks_url: Option<url::Url>,
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub hs256_secret: Option<SecretString>,
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches caused by an unknown `kid`.
    pub jwks_refetch_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `None` means "start the private development database".
    pub database_url: Option<SecretString>,
    pub migration_database_url: Option<SecretString>,
    /// The direct connection for `LISTEN` (`None`: `database_url`); behind PgBouncer in
    /// transaction mode `DATABASE_URL` cannot `LISTEN`, so this one goes straight to PostgreSQL.
    pub database_listen_url: Option<SecretString>,
    pub db_pool_size: usize,
    /// Connections for short reads, each shared by many requests (`db::lanes`); 0: none.
    pub db_read_lanes: usize,
    /// `DB_PREPARED_STATEMENTS=off`: statements go as PostgreSQL's unnamed statement, so no
    /// named one outlives its transaction (PgBouncer in transaction mode).
    pub db_prepared_statements: bool,
    pub host: IpAddr,
    pub port: u16,
    pub project_name: String,
    pub environment: Environment,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub jwt: JwtConfig,
    pub platform_admin_subjects: HashSet<String>,
    /// How long tenant and membership lookups stay cached.
    pub directory_ttl: Duration,
    /// Where the private development database and its secrets live.
    pub data_dir: PathBuf,
    pub public_base_url: Option<url::Url>,
    /// Shared rate-limit backend; in-process limits when unset.
    pub redis_url: Option<SecretString>,
    /// `RATE_LIMITS=off` disables rate limiting (benchmarks); quotas always apply.
    pub rate_limits_enabled: bool,
    /// How often admitted-request counts are written to `api_usage`.
    pub usage_flush_interval: Duration,
    /// How often the cleanup job runs (media, conversation retention, old usage buckets).
    pub cleanup_interval: Duration,
    /// Activities the batch writer may hold before it drops (and counts) them
    /// (`ACTIVITY_BUFFER`).
    pub activity_buffer: usize,
    /// Where media bytes are stored (`MEDIA_STORE`).
    pub media_store: MediaStoreConfig,
    /// The largest media upload accepted, in bytes.
    pub media_max_bytes: u64,
    /// Uploads streaming at once, over every tenant (`MEDIA_MAX_CONCURRENT_UPLOADS`); one more
    /// is answered 503 with `Retry-After`.
    pub media_max_concurrent_uploads: usize,
    /// What one client may hold open (`HTTP_HEADER_READ_TIMEOUT_SECONDS`,
    /// `HTTP_IDLE_TIMEOUT_SECONDS`, `HTTP_MAX_CONNECTIONS`).
    pub connection_limits: ConnectionLimits,
    /// The WebSocket hub's bounds (`WS_*`, docs/MONITORING.md).
    pub websocket: WebSocketLimits,
    /// How long a tenant keeps a trust level whose requirements it no longer meets
    /// (`TRUST_GRACE_SECONDS`, default 7 days).
    pub trust_grace: Duration,
    /// How often the trust recompute job runs over every tenant
    /// (`TRUST_RECOMPUTE_INTERVAL_SECONDS`, default 300).
    pub trust_recompute_interval: Duration,
    /// Notification delivery: SMTP, Twilio and the outbox workers (docs/NOTIFICATIONS.md).
    pub notify: NotifyConfig,
}

/// `SMTP_TLS`: how the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or a private network).
    None,
    /// Plain text upgraded with STARTTLS, which is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// The SMTP server email notifications go through (`SMTP_*`).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// Both set: AUTH with them; unset: no AUTH.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The `From` mailbox (`Shop <noreply@shop.example>` or a bare address).
    pub from: String,
    pub tls: SmtpTls,
    /// PEM certificates to trust instead of the system's (`SMTP_TLS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// The longest one message may take, connecting included.
    pub timeout: Duration,
}

/// Twilio's Messages API, for SMS notifications (`TWILIO_*`).
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: SecretString,
    pub from_number: String,
    /// `TWILIO_API_BASE_URL`, default `https://api.twilio.com`.
    pub api_base: url::Url,
    pub timeout: Duration,
}

/// How notifications are delivered (SPEC §8).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `None`: email deliveries are skipped ("email is not configured").
    pub smtp: Option<SmtpConfig>,
    /// `None`: SMS deliveries are skipped.
    pub twilio: Option<TwilioConfig>,
    /// Deliveries this instance sends at once (`NOTIFY_WORKERS`); 0: it sends none (other
    /// instances' sweeps pick its deliveries up).
    pub workers: usize,
    /// How long a claimed delivery is its worker's (`NOTIFY_LEASE_SECONDS`, at most 30 s).
    pub lease: Duration,
    /// Attempts before a delivery that keeps failing is `failed` (`NOTIFY_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// The first retry's delay; each next one doubles, jittered (`NOTIFY_RETRY_BASE_MILLISECONDS`).
    pub retry_base: Duration,
    /// The longest delay between two attempts (`NOTIFY_RETRY_MAX_SECONDS`).
    pub retry_max: Duration,
    /// How often every tenant is swept for due deliveries (`NOTIFY_SWEEP_SECONDS`).
    pub sweep_interval: Duration,
}

/// What WebSocket clients may hold (SPEC §7), enforced by `monitoring::ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// Open WebSockets of one tenant on this instance; over it: close 4429.
    pub per_tenant: usize,
    /// Open WebSockets on this instance; over it: 503 before the upgrade.
    pub total: usize,
    /// Frames queued for one connection; a connection that falls further behind: close 1013.
    pub send_queue: usize,
    /// How long a connection may wait before its `auth` message: close 4408.
    pub auth_timeout: Duration,
    /// Server pings this often; two unanswered in a row close the connection.
    pub ping_interval: Duration,
}

/// What one client may hold open (SPEC §10), enforced by `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection that sent part of a request but not its headers within this is closed.
    pub header_read: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle: Duration,
    /// Open connections in total; over it a new one is closed at once.
    pub max_connections: usize,
}

/// `MEDIA_STORE`: where media bytes are stored.
#[derive(Debug, Clone)]
pub enum MediaStoreConfig {
    /// A local directory (a path or a `file://` URL), created if missing.
    Directory(PathBuf),
    /// An S3-compatible bucket (`s3://bucket[/prefix]`), reached as the `AWS_*` variables say.
    S3(S3Config),
}

/// An S3 bucket, and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// The objects' common prefix (`media` in `s3://bucket/media`); empty: the bucket's root.
    pub prefix: String,
    /// `AWS_ENDPOINT_URL`: an S3-compatible service instead of AWS's, addressed path-style
    /// (`{endpoint}/{bucket}/{key}`); plain `http://` is accepted, for a local service.
    pub endpoint: Option<url::Url>,
    /// The other `AWS_*` variables that are set, from [`AWS_VARIABLES`], for the S3 client.
    /// All wrapped, so credentials never print.
    pub aws: Vec<(&'static str, SecretString)>,
}

/// What the S3 client reads besides `AWS_ENDPOINT_URL`: static credentials, the region
/// (`AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`), and a role's web identity
/// (EKS) or task credentials (ECS). With none of these, the instance metadata service (EC2).
pub const AWS_VARIABLES: [&str; 9] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// Reads variables from any source: the process environment in `main`, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

struct Reader<'a>(&'a dyn Source);

impl Reader<'_> {
    /// A set, non-blank value.
    fn text(&self, name: &'static str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.text(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| invalid(name, format!("expected {what}, got {raw:?}"))),
        }
    }

    /// `on` or `off` (unset: `default`).
    fn on_off(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(name).as_deref() {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(invalid(name, format!("expected on or off, got {other:?}"))),
        }
    }

    /// A whole number within `range`, else an error naming the variable and the range.
    fn bounded(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let what = format!("a whole number from {} to {}", range.start(), range.end());
        let value = self.parsed(name, default, &what)?;
        if !range.contains(&value) {
            return Err(invalid(name, format!("expected {what}, got {value}")));
        }
        Ok(value)
    }

    fn url(&self, name: &'static str) -> Result<Option<url::Url>, ConfigError> {
        self.text(name)
            .map(|raw| {
                let parsed =
                    url::Url::parse(&raw).map_err(|e| invalid(name, format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(name, "must be an http or https URL"));
                }
                Ok(parsed)
            })
            .transpose()
    }

    fn postgres_url(&self, name: &'static str) -> Result<Option<SecretString>, ConfigError> {
        self.text(name)
            .map(|raw| {
                crate::db::tls::PgTarget::parse(&raw).map_err(|e| invalid(name, e.to_string()))?;
                Ok(SecretString::from(raw))
            })
            .transpose()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is an error worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(invalid("(.env)", e.to_string())),
        }
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);

        let environment = match r.text("ENVIRONMENT").as_deref() {
            None | Some("development") | Some("dev") | Some("local") => Environment::Development,
            Some("test") => Environment::Test,
            Some("staging") => Environment::Staging,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(invalid(
                    "ENVIRONMENT",
                    format!("expected development, test, staging or production, got {other:?}"),
                ));
            }
        };
        let log_format = match r.text("LOG_FORMAT").as_deref() {
            None if environment == Environment::Production => LogFormat::Json,
            None => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };

        let cors_origins = match r.text("BACKEND_CORS_ORIGINS") {
            None => Vec::new(),
            Some(raw) => {
                let list: Vec<String> = serde_json::from_str(&raw).map_err(|_| {
                    invalid(
                        "BACKEND_CORS_ORIGINS",
                        "expected a JSON list of origins, e.g. [\"http://localhost:3000\"]",
                    )
                })?;
                for origin in &list {
                    let parsed = url::Url::parse(origin).map_err(|_| {
                        invalid(
                            "BACKEND_CORS_ORIGINS",
                            format!("{origin:?} is not an origin"),
                        )
                    })?;
                    if parsed.path() != "/" && !parsed.path().is_empty() {
                        return Err(invalid(
                            "BACKEND_CORS_ORIGINS",
                            format!("{origin:?} must be an origin without a path"),
                        ));
                    }
                }
                list.into_iter()
                    .map(|o| o.trim_end_matches('/').to_string())
                    .collect()
            }
        };

        let hs256_secret = match r.text("JWT_HS256_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(invalid(
                    "JWT_HS256_SECRET",
                    "must be at least 32 characters long",
                ));
            }
            other => other.map(SecretString::from),
        };
        let jwt = JwtConfig {
            jwks_url: r.url("JWT_JWKS_URL")?,
            issuer: r.text("JWT_ISSUER"),
            audience: r.text("JWT_AUDIENCE").map(|raw| {
                raw.split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect()
            }),
            hs256_secret,
            leeway: Duration::from_secs(r.parsed(
                "JWT_LEEWAY_SECONDS",
                5,
                "a number of seconds",
            )?),
            jwks_refetch_interval: Duration::from_secs(r.parsed(
                "JWT_JWKS_REFETCH_SECONDS",
                30,
                "a number of seconds",
            )?),
        };

        let db_pool_size: usize = r.parsed("DB_POOL_SIZE", 16, "a positive integer")?;
        if db_pool_size == 0 {
            return Err(invalid("DB_POOL_SIZE", "must be at least 1"));
        }
        // A lane's connection keeps one PostgreSQL backend, so one core, busy; a short read
        // costs PostgreSQL about as much CPU as it costs the server (bench/README.md).
        let default_lanes =
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let db_read_lanes: usize =
            r.parsed("DB_LANES", default_lanes, "a number of connections")?;
        if db_read_lanes > 64 {
            return Err(invalid("DB_LANES", "must be between 0 and 64"));
        }
        let directory_ttl_secs: u64 =
            r.parsed("TENANT_CACHE_TTL_SECONDS", 30, "a number of seconds")?;
        if directory_ttl_secs == 0 || directory_ttl_secs > 3600 {
            return Err(invalid(
                "TENANT_CACHE_TTL_SECONDS",
                "must be between 1 and 3600",
            ));
        }

        let data_dir = r
            .text("CONVCOMMERCE_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".convcommerce"));
        let media_store = match r.text("MEDIA_STORE") {
            None => MediaStoreConfig::Directory(data_dir.join("media")),
            Some(raw) => media_store(&raw, &r)?,
        };
        let media_max_bytes: u64 =
            r.parsed("MEDIA_MAX_BYTES", 10 * 1024 * 1024, "a number of bytes")?;
        if media_max_bytes == 0 || media_max_bytes > 1 << 30 {
            return Err(invalid(
                "MEDIA_MAX_BYTES",
                "must be between 1 and 1073741824",
            ));
        }

        let connection_limits = ConnectionLimits {
            header_read: Duration::from_secs(r.bounded(
                "HTTP_HEADER_READ_TIMEOUT_SECONDS",
                10,
                1..=3_600,
            )?),
            idle: Duration::from_secs(r.bounded("HTTP_IDLE_TIMEOUT_SECONDS", 60, 1..=86_400)?),
            max_connections: r.bounded("HTTP_MAX_CONNECTIONS", 10_000, 1..=1_000_000)? as usize,
        };
        let database_url = r.postgres_url("DATABASE_URL")?;
        let notify = notify_config(&r)?;
        if environment == Environment::Production {
            production_refusals(database_url.is_some(), &jwt)?;
        }

        Ok(Self {
            database_url,
            migration_database_url: r.postgres_url("MIGRATION_DATABASE_URL")?,
            database_listen_url: r.postgres_url("DATABASE_LISTEN_URL")?,
            db_pool_size,
            db_read_lanes,
            db_prepared_statements: r.on_off("DB_PREPARED_STATEMENTS", true)?,
            host: r.parsed("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address")?,
            port: r.parsed("PORT", 8000, "a port number (0-65535)")?,
            project_name: r
                .text("PROJECT_NAME")
                .unwrap_or_else(|| "convcommerce".to_string()),
            environment,
            log_format,
            cors_origins,
            jwt,
            platform_admin_subjects: r
                .text("PLATFORM_ADMIN_SUBJECTS")
                .map(|raw| {
                    raw.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            directory_ttl: Duration::from_secs(directory_ttl_secs),
            data_dir,
            public_base_url: r.url("PUBLIC_BASE_URL")?,
            redis_url: r
                .text("REDIS_URL")
                .map(|raw| {
                    let parsed = url::Url::parse(&raw)
                        .map_err(|e| invalid("REDIS_URL", format!("not a URL: {e}")))?;
                    if !matches!(parsed.scheme(), "redis" | "rediss") {
                        return Err(invalid("REDIS_URL", "must be a redis:// or rediss:// URL"));
                    }
                    Ok(SecretString::from(raw))
                })
                .transpose()?,
            rate_limits_enabled: r.on_off("RATE_LIMITS", true)?,
            usage_flush_interval: Duration::from_millis(r.parsed(
                "USAGE_FLUSH_MILLISECONDS",
                2_000,
                "a number of milliseconds",
            )?)
            .max(Duration::from_millis(10)),
            cleanup_interval: Duration::from_secs(r.parsed(
                "CLEANUP_INTERVAL_SECONDS",
                3_600,
                "a number of seconds",
            )?)
            .max(Duration::from_secs(1)),
            activity_buffer: r.bounded("ACTIVITY_BUFFER", 10_000, 1..=1_000_000)? as usize,
            media_store,
            media_max_bytes,
            media_max_concurrent_uploads: r.bounded(
                "MEDIA_MAX_CONCURRENT_UPLOADS",
                16,
                1..=10_000,
            )? as usize,
            connection_limits,
            websocket: WebSocketLimits {
                per_tenant: r.bounded("WS_MAX_CONNECTIONS_PER_TENANT", 5_000, 1..=1_000_000)?
                    as usize,
                total: r.bounded("WS_MAX_CONNECTIONS", 50_000, 1..=1_000_000)? as usize,
                send_queue: r.bounded("WS_SEND_QUEUE", 256, 1..=65_536)? as usize,
                auth_timeout: Duration::from_millis(r.bounded(
                    "WS_AUTH_TIMEOUT_MILLISECONDS",
                    10_000,
                    100..=600_000,
                )?),
                ping_interval: Duration::from_millis(r.bounded(
                    "WS_PING_INTERVAL_MILLISECONDS",
                    25_000,
                    100..=600_000,
                )?),
            },
            trust_grace: Duration::from_secs(r.bounded(
                "TRUST_GRACE_SECONDS",
                7 * 86_400,
                0..=365 * 86_400,
            )?),
            trust_recompute_interval: Duration::from_secs(r.bounded(
                "TRUST_RECOMPUTE_INTERVAL_SECONDS",
                300,
                1..=86_400,
            )?),
            notify,
        })
    }
}

/// `SMTP_*`, `TWILIO_*` and `NOTIFY_*`: a channel is configured when its first variable is
/// set, and then needs the others it cannot do without.
fn notify_config(r: &Reader<'_>) -> Result<NotifyConfig, ConfigError> {
    let smtp = match r.text("SMTP_HOST") {
        None => None,
        Some(host) => {
            let tls = match r.text("SMTP_TLS").as_deref() {
                None | Some("starttls") => SmtpTls::StartTls,
                Some("none") => SmtpTls::None,
                Some("tls") => SmtpTls::Tls,
                Some(other) => {
                    return Err(invalid(
                        "SMTP_TLS",
                        format!("expected none, starttls or tls, got {other:?}"),
                    ));
                }
            };
            let default_port = match tls {
                SmtpTls::None => 25,
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
            };
            let from = r
                .text("SMTP_FROM")
                .ok_or_else(|| invalid("SMTP_FROM", "is required with SMTP_HOST"))?;
            from.parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("SMTP_FROM", format!("not a mailbox: {e}")))?;
            let username = r.text("SMTP_USERNAME");
            let password = r.text("SMTP_PASSWORD").map(SecretString::from);
            if username.is_some() != password.is_some() {
                return Err(invalid(
                    "SMTP_PASSWORD",
                    "SMTP_USERNAME and SMTP_PASSWORD are set together or not at all",
                ));
            }
            let ca_file = r.text("SMTP_TLS_CA_FILE").map(PathBuf::from);
            if let Some(path) = &ca_file
                && std::fs::metadata(path).is_err()
            {
                return Err(invalid("SMTP_TLS_CA_FILE", "cannot be read"));
            }
            Some(SmtpConfig {
                host,
                port: r.bounded("SMTP_PORT", default_port, 1..=65_535)? as u16,
                username,
                password,
                from,
                tls,
                ca_file,
                timeout: Duration::from_millis(r.bounded(
                    "SMTP_TIMEOUT_MILLISECONDS",
                    10_000,
                    100..=25_000,
                )?),
            })
        }
    };
    let twilio = match r.text("TWILIO_ACCOUNT_SID") {
        None => None,
        Some(account_sid) => {
            if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid("TWILIO_ACCOUNT_SID", "must be letters and digits"));
            }
            let auth_token = r.text("TWILIO_AUTH_TOKEN").ok_or_else(|| {
                invalid("TWILIO_AUTH_TOKEN", "is required with TWILIO_ACCOUNT_SID")
            })?;
            let from_number = r.text("TWILIO_FROM_NUMBER").ok_or_else(|| {
                invalid("TWILIO_FROM_NUMBER", "is required with TWILIO_ACCOUNT_SID")
            })?;
            crate::types::Phone::parse(&from_number)
                .map_err(|e| invalid("TWILIO_FROM_NUMBER", e))?;
            Some(TwilioConfig {
                account_sid,
                auth_token: SecretString::from(auth_token),
                from_number,
                api_base: r.url("TWILIO_API_BASE_URL")?.unwrap_or_else(|| {
                    url::Url::parse("https://api.twilio.com").expect("a valid URL")
                }),
                timeout: Duration::from_millis(r.bounded(
                    "TWILIO_TIMEOUT_MILLISECONDS",
                    10_000,
                    100..=25_000,
                )?),
            })
        }
    };
    // A send must end (or time out) within its claim's lease, or another worker could claim
    // and send it again meanwhile.
    let lease = Duration::from_secs(r.bounded("NOTIFY_LEASE_SECONDS", 30, 1..=30)?);
    let longest_send = [
        smtp.as_ref().map(|s| s.timeout),
        twilio.as_ref().map(|t| t.timeout),
    ]
    .into_iter()
    .flatten()
    .max();
    if longest_send.is_some_and(|t| t >= lease) {
        return Err(invalid(
            "NOTIFY_LEASE_SECONDS",
            "must be longer than SMTP_TIMEOUT_MILLISECONDS and TWILIO_TIMEOUT_MILLISECONDS",
        ));
    }
    Ok(NotifyConfig {
        smtp,
        twilio,
        workers: r.bounded("NOTIFY_WORKERS", 4, 0..=64)? as usize,
        lease,
        max_attempts: r.bounded("NOTIFY_MAX_ATTEMPTS", 8, 1..=50)? as i32,
        retry_base: Duration::from_millis(r.bounded(
            "NOTIFY_RETRY_BASE_MILLISECONDS",
            2_000,
            10..=3_600_000,
        )?),
        retry_max: Duration::from_secs(r.bounded("NOTIFY_RETRY_MAX_SECONDS", 3_600, 1..=86_400)?),
        sweep_interval: Duration::from_secs(r.bounded("NOTIFY_SWEEP_SECONDS", 60, 1..=3_600)?),
    })
}

/// SPEC §10: production runs only on a database of its own, with no development secret, and
/// verifies the issuer of JWKS-signed tokens. These are its only refusals.
fn production_refusals(has_database: bool, jwt: &JwtConfig) -> Result<(), ConfigError> {
    if !has_database {
        return Err(invalid(
            "DATABASE_URL",
            "is required in production (the private database is for development only)",
        ));
    }
    if jwt.hs256_secret.is_some() {
        return Err(invalid(
            "JWT_HS256_SECRET",
            "must not be set in production (HS256 tokens are for development and tests)",
        ));
    }
    if jwt.jwks_url.is_some() && jwt.issuer.is_none() {
        return Err(invalid(
            "JWT_ISSUER",
            "is required in production when JWT_JWKS_URL is set",
        ));
    }
    Ok(())
}

/// `MEDIA_STORE`: a directory (a path or a `file://` URL), or `s3://bucket[/prefix]`.
fn media_store(raw: &str, r: &Reader<'_>) -> Result<MediaStoreConfig, ConfigError> {
    if !raw.contains("://") {
        return Ok(MediaStoreConfig::Directory(PathBuf::from(raw)));
    }
    let parsed =
        url::Url::parse(raw).map_err(|e| invalid("MEDIA_STORE", format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "file" => parsed
            .to_file_path()
            .map(MediaStoreConfig::Directory)
            .map_err(|_| invalid("MEDIA_STORE", "a file:// URL needs an absolute path")),
        "s3" => s3_bucket(&parsed, r).map(MediaStoreConfig::S3),
        other => Err(invalid(
            "MEDIA_STORE",
            format!("{other}:// stores are not supported; use a directory, file:// or s3://"),
        )),
    }
}

fn s3_bucket(url: &url::Url, r: &Reader<'_>) -> Result<S3Config, ConfigError> {
    let bucket = url.host_str().unwrap_or_default().to_string();
    // S3's rules for bucket names, which also keep path-style URLs well-formed.
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid_bucket {
        return Err(invalid(
            "MEDIA_STORE",
            "s3://bucket[/prefix] needs a bucket name of 3-63 lowercase letters, digits, '.' or '-'",
        ));
    }
    if url.port().is_some() || !url.username().is_empty() || url.query().is_some() {
        return Err(invalid(
            "MEDIA_STORE",
            "s3://bucket[/prefix] takes no port, credentials or query; the AWS_* variables say how to reach the bucket",
        ));
    }
    let prefix = url.path().trim_matches('/').to_string();
    object_store::path::Path::parse(&prefix).map_err(|e| {
        invalid(
            "MEDIA_STORE",
            format!("the prefix is not an object path: {e}"),
        )
    })?;
    let aws: Vec<(&'static str, SecretString)> = AWS_VARIABLES
        .into_iter()
        .filter_map(|name| Some((name, SecretString::from(r.text(name)?))))
        .collect();
    let has = |name: &str| aws.iter().any(|(n, _)| *n == name);
    for (set, missing) in [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    ] {
        if has(set) && !has(missing) {
            return Err(invalid(missing, format!("must be set with {set}")));
        }
    }
    Ok(S3Config {
        bucket,
        prefix,
        endpoint: r.url("AWS_ENDPOINT_URL")?,
        aws,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_source(&map)
    }

    #[test]
    fn defaults_apply() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert!(c.database_url.is_none());
        assert_eq!(c.environment, Environment::Development);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.db_read_lanes, (cores / 2).max(1));
        // SPEC §10's defaults of what a stranger may hold open.
        assert_eq!(
            c.connection_limits,
            ConnectionLimits {
                header_read: Duration::from_secs(10),
                idle: Duration::from_secs(60),
                max_connections: 10_000,
            }
        );
    }

    #[test]
    fn connection_limits_are_configurable() {
        let c = config(&[
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "7"),
            ("HTTP_MAX_CONNECTIONS", "50"),
        ])
        .unwrap();
        assert_eq!(
            c.connection_limits,
            ConnectionLimits {
                header_read: Duration::from_secs(3),
                idle: Duration::from_secs(7),
                max_connections: 50,
            }
        );
        for (var, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "86401"),
            ("HTTP_MAX_CONNECTIONS", "0"),
        ] {
            assert_eq!(config(&[(var, value)]).unwrap_err().variable, var);
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("HOST", "localhost:80"),
            ("ENVIRONMENT", "moon"),
            ("BACKEND_CORS_ORIGINS", "http://a.example"),
            ("JWT_HS256_SECRET", "short"),
            ("JWT_JWKS_URL", "ftp://keys"),
            ("DATABASE_URL", "postgres://[broken"),
            ("DB_POOL_SIZE", "0"),
            ("DB_LANES", "65"),
            ("DB_LANES", "-1"),
            ("REDIS_URL", "http://cache:6379"),
            ("RATE_LIMITS", "maybe"),
            ("MEDIA_STORE", "gs://bucket/media"),
            ("MEDIA_STORE", "s3://Bucket/media"),
            ("MEDIA_STORE", "s3://bucket:9000/media"),
            ("MEDIA_STORE", "s3://bucket/a//b"),
            ("MEDIA_MAX_BYTES", "0"),
            ("NOTIFY_WORKERS", "65"),
            ("NOTIFY_LEASE_SECONDS", "31"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    fn media_directory(pairs: &[(&str, &str)]) -> PathBuf {
        match config(pairs).unwrap().media_store {
            MediaStoreConfig::Directory(dir) => dir,
            other => panic!("not a directory: {other:?}"),
        }
    }

    #[test]
    fn media_store_is_a_directory_under_the_data_dir_by_default() {
        let c = config(&[("CONVCOMMERCE_DATA_DIR", "/srv/cc")]).unwrap();
        assert!(
            matches!(c.media_store, MediaStoreConfig::Directory(d) if d == Path::new("/srv/cc/media"))
        );
        assert_eq!(c.media_max_bytes, 10 * 1024 * 1024);
        assert_eq!(
            media_directory(&[("MEDIA_STORE", "file:///var/lib/media")]),
            Path::new("/var/lib/media")
        );
        assert_eq!(
            media_directory(&[("MEDIA_STORE", "uploads")]),
            Path::new("uploads")
        );
    }

    #[test]
    fn media_store_can_be_an_s3_bucket_reached_through_the_aws_variables() {
        let c = config(&[
            ("MEDIA_STORE", "s3://media.example-1/convcommerce/media/"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap();
        let MediaStoreConfig::S3(s3) = &c.media_store else {
            panic!("an S3 store");
        };
        assert_eq!(s3.bucket, "media.example-1");
        assert_eq!(s3.prefix, "convcommerce/media");
        assert_eq!(
            s3.endpoint.as_ref().unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        let names: Vec<&str> = s3.aws.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
        );
        assert!(!format!("{c:?}").contains("very-secret"));

        let MediaStoreConfig::S3(root) = config(&[("MEDIA_STORE", "s3://bucket")])
            .unwrap()
            .media_store
        else {
            panic!("an S3 store");
        };
        assert_eq!((root.prefix.as_str(), root.endpoint), ("", None));

        let half = config(&[
            ("MEDIA_STORE", "s3://bucket"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ])
        .unwrap_err();
        assert_eq!(half.variable, "AWS_SECRET_ACCESS_KEY");
        let endpoint = config(&[
            ("MEDIA_STORE", "s3://bucket"),
            ("AWS_ENDPOINT_URL", "minio:9000"),
        ])
        .unwrap_err();
        assert_eq!(endpoint.variable, "AWS_ENDPOINT_URL");
    }

    #[test]
    fn the_outbox_lease_outlasts_a_send() {
        let smtp = [
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_FROM", "a@b.example"),
            ("SMTP_TIMEOUT_MILLISECONDS", "5000"),
        ];
        let err =
            config(&[smtp.as_slice(), &[("NOTIFY_LEASE_SECONDS", "5")]].concat()).unwrap_err();
        assert_eq!(err.variable, "NOTIFY_LEASE_SECONDS");
        let ok = config(&[smtp.as_slice(), &[("NOTIFY_LEASE_SECONDS", "6")]].concat()).unwrap();
        assert_eq!(ok.notify.lease, Duration::from_secs(6));
        assert_eq!(
            config(&[("SMTP_HOST", "x")]).unwrap_err().variable,
            "SMTP_FROM"
        );
        assert_eq!(
            config(&[("TWILIO_ACCOUNT_SID", "AC1")])
                .unwrap_err()
                .variable,
            "TWILIO_AUTH_TOKEN"
        );
    }

    #[test]
    fn lists_are_parsed() {
        let c = config(&[
            ("PLATFORM_ADMIN_SUBJECTS", " a, b ,,c"),
            ("BACKEND_CORS_ORIGINS", r#"["http://localhost:3000/"]"#),
        ])
        .unwrap();
        assert_eq!(c.platform_admin_subjects.len(), 3);
        assert_eq!(c.cors_origins, vec!["http://localhost:3000".to_string()]);
    }
}
