//! The private development environment: with no `DATABASE_URL`, `serve` runs its own
//! PostgreSQL, provisions and migrates it, and mints a dev token.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use secrecy::SecretString;

use crate::config::Config;
use crate::db::bootstrap;
use crate::db::embedded::{Durability, EmbeddedPostgres};

pub const DEV_DATABASE: &str = "convcommerce";
/// The platform admin of a private development environment.
pub const DEV_ADMIN: &str = "dev-admin";
const SECRET_FILE: &str = "dev-jwt-secret";

/// The HS256 secret of the development environment under `data_dir`, created on first use and
/// kept so tokens survive restarts.
pub fn dev_secret(data_dir: &Path, create: bool) -> anyhow::Result<SecretString> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(SECRET_FILE);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(secret.trim().to_string()));
    }
    if !create {
        anyhow::bail!(
            "no JWT_HS256_SECRET and no development secret at {}; run `convcommerce serve` once \
             without DATABASE_URL, or set JWT_HS256_SECRET",
            path.display()
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    Ok(SecretString::from(secret))
}

/// A running private database and what it changed in the configuration.
pub struct DevEnvironment {
    pub postgres: EmbeddedPostgres,
    pub provisioned: bootstrap::Provisioned,
}

/// Starts (or reuses) the private PostgreSQL under `CONVCOMMERCE_DATA_DIR`, provisions and
/// migrates it, and points `config` at it with a development token secret and admin.
pub async fn start(config: &mut Config) -> anyhow::Result<DevEnvironment> {
    let postgres = EmbeddedPostgres::start(&config.data_dir, Durability::Durable)
        .await
        .context("starting the private development database")?;
    let provisioned = bootstrap::provision(
        &postgres.superuser_url("postgres"),
        DEV_DATABASE,
        postgres.passwords(),
    )
    .await?;
    config.database_url = Some(SecretString::from(provisioned.app_url.clone()));
    config.migration_database_url = Some(SecretString::from(provisioned.owner_url.clone()));
    if config.jwt.hs256_secret.is_none() {
        config.jwt.hs256_secret = Some(dev_secret(&config.data_dir, true)?);
    }
    if config.platform_admin_subjects.is_empty() {
        config.platform_admin_subjects.insert(DEV_ADMIN.to_string());
    }
    Ok(DevEnvironment {
        postgres,
        provisioned,
    })
}

/// What a newcomer needs to try the running server.
pub fn banner(config: &Config, env: &DevEnvironment, port: u16) -> anyhow::Result<String> {
    let secret = config
        .jwt
        .hs256_secret
        .as_ref()
        .context("the development environment always has a secret")?;
    let admin = config
        .platform_admin_subjects
        .iter()
        .min()
        .cloned()
        .unwrap_or_else(|| DEV_ADMIN.to_string());
    let token = crate::auth::jwt::mint_hs256(
        secret,
        config.jwt.issuer.as_deref(),
        &admin,
        Duration::from_secs(24 * 3600),
    )?;
    let base = format!("http://{}:{port}", config.host);
    Ok(format!(
        "\nconvcommerce is running at {base} with a private PostgreSQL (data: {data})\n\
         \n  DATABASE_URL={app}\n  MIGRATION_DATABASE_URL={owner}\n  \
         superuser (through its own socket): psql -h {socket} -p {port_pg} -U postgres {database}\n\
         \nPlatform-admin dev token (sub={admin}, valid 24 h):\n\n  {token}\n\
         \nTry it:\n  export TOKEN={token}\n  \
         curl -s -X POST {base}/api/v1/admin/tenants -H \"Authorization: Bearer $TOKEN\" \
         -H 'Content-Type: application/json' \\\n    -d '{{\"name\":\"Acme\",\"slug\":\"acme\",\"owner\":{{\"external_id\":\"{admin}\",\"email\":\"owner@acme.example\"}}}}'\n  \
         curl -s {base}/api/v1/tenant -H \"Authorization: Bearer $TOKEN\" -H 'X-Tenant-ID: <id from above>'\n\
         \nMore tokens: convcommerce dev-token --sub <subject>.  Docs: {base}/docs and {base}/redoc\n",
        data = env.postgres.data_dir().display(),
        app = env.provisioned.app_url,
        owner = env.provisioned.owner_url,
        socket = env.postgres.socket_dir().display(),
        port_pg = env.postgres.port(),
        database = env.provisioned.database,
        token = token.as_str(),
    ))
}
