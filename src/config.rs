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
    pub db_pool_size: usize,
    /// Connections for short reads, each shared by many requests (`db::lanes`); 0: none.
    pub db_read_lanes: usize,
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
    /// The directory media bytes are stored in (`MEDIA_STORE`).
    pub media_store: PathBuf,
    /// The largest media upload accepted, in bytes.
    pub media_max_bytes: u64,
}

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
            None => data_dir.join("media"),
            Some(raw) => media_directory(&raw)?,
        };
        let media_max_bytes: u64 =
            r.parsed("MEDIA_MAX_BYTES", 10 * 1024 * 1024, "a number of bytes")?;
        if media_max_bytes == 0 || media_max_bytes > 1 << 30 {
            return Err(invalid(
                "MEDIA_MAX_BYTES",
                "must be between 1 and 1073741824",
            ));
        }

        let database_url = r.postgres_url("DATABASE_URL")?;
        if environment == Environment::Production {
            production_refusals(database_url.is_some(), &jwt)?;
        }

        Ok(Self {
            database_url,
            migration_database_url: r.postgres_url("MIGRATION_DATABASE_URL")?,
            db_pool_size,
            db_read_lanes,
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
            rate_limits_enabled: match r.text("RATE_LIMITS").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(invalid(
                        "RATE_LIMITS",
                        format!("expected on or off, got {other:?}"),
                    ));
                }
            },
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
            media_store,
            media_max_bytes,
        })
    }
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

/// `MEDIA_STORE`: a directory, as a path or a `file://` URL. Only the local file system is
/// compiled in.
fn media_directory(raw: &str) -> Result<PathBuf, ConfigError> {
    if !raw.contains("://") {
        return Ok(PathBuf::from(raw));
    }
    let parsed =
        url::Url::parse(raw).map_err(|e| invalid("MEDIA_STORE", format!("not a URL: {e}")))?;
    if parsed.scheme() != "file" {
        return Err(invalid(
            "MEDIA_STORE",
            format!(
                "{}:// stores are not supported by this build; use a directory or a file:// URL",
                parsed.scheme()
            ),
        ));
    }
    parsed
        .to_file_path()
        .map_err(|_| invalid("MEDIA_STORE", "a file:// URL needs an absolute path"))
}

#[cfg(test)]
mod tests {
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
            ("MEDIA_STORE", "s3://bucket/media"),
            ("MEDIA_MAX_BYTES", "0"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn media_store_is_a_directory_under_the_data_dir_by_default() {
        let c = config(&[("CONVCOMMERCE_DATA_DIR", "/srv/cc")]).unwrap();
        assert_eq!(c.media_store, PathBuf::from("/srv/cc/media"));
        assert_eq!(c.media_max_bytes, 10 * 1024 * 1024);
        let c = config(&[("MEDIA_STORE", "file:///var/lib/media")]).unwrap();
        assert_eq!(c.media_store, PathBuf::from("/var/lib/media"));
        let c = config(&[("MEDIA_STORE", "uploads")]).unwrap();
        assert_eq!(c.media_store, PathBuf::from("uploads"));
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
