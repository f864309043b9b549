//! Provisioning of a database for development and tests, as a superuser: the owner role that
//! runs migrations, the application role the server connects as, the database, its schema.
//!
//! Production databases are provisioned by their operators (docs/OPERATIONS.md); this is the
//! same recipe, automated for machines where we hold the superuser.

use anyhow::Context;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{connect_once, migrate};

pub const OWNER_ROLE: &str = "convcommerce_owner";
pub const APP_ROLE: &str = "convcommerce_app";
/// Serialises provisioners (parallel test processes) on the maintenance database.
const PROVISION_LOCK: i64 = 0x636f_6e76_7072_6f76;

/// The passwords a cluster's roles log in with over TCP: one secret per cluster, and a password
/// per role derived from it, so the application role's password says nothing of the others'.
#[derive(Clone)]
pub struct RolePasswords {
    key: [u8; 32],
}

impl RolePasswords {
    /// Passwords derived from `secret` (random bytes kept with a private cluster, or the
    /// superuser URL of a test server, which already grants everything they would).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: Self::mac(b"convcommerce role passwords", secret),
        }
    }

    pub fn password(&self, role: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Self::mac(&self.key, role.as_bytes()))
    }

    fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for RolePasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolePasswords(..)")
    }
}

/// `ALTER ROLE role PASSWORD` with a SCRAM-SHA-256 verifier computed here: the password itself
/// never reaches the server, its logs or its statistics.
pub(crate) fn set_password(role: &str, password: &str) -> String {
    format!("ALTER ROLE {role} PASSWORD {}", scram_literal(password))
}

fn scram_literal(password: &str) -> String {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    format!("'{}'", verifier.replace('\'', "''"))
}

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub database: String,
    pub owner_url: String,
    pub app_url: String,
    pub superuser_url: String,
}

/// Creates the roles and `database` when missing, sets the roles' `passwords`, and migrates it.
/// Idempotent and safe to run from several processes at once.
pub async fn provision(
    superuser_url: &str,
    database: &str,
    passwords: &RolePasswords,
) -> anyhow::Result<Provisioned> {
    let client = connect_once(superuser_url)
        .await
        .context("connecting as the database superuser")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PROVISION_LOCK])
        .await?;
    let created = ensure_roles_and_database(&client, database, passwords).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&PROVISION_LOCK])
        .await?;
    created?;

    let provisioned = Provisioned {
        database: database.to_string(),
        owner_url: with_credentials(
            superuser_url,
            OWNER_ROLE,
            &passwords.password(OWNER_ROLE),
            database,
        )?,
        app_url: with_credentials(
            superuser_url,
            APP_ROLE,
            &passwords.password(APP_ROLE),
            database,
        )?,
        superuser_url: with_database(superuser_url, database)?,
    };
    migrate::run(&provisioned.owner_url).await?;
    Ok(provisioned)
}

async fn ensure_roles_and_database(
    client: &tokio_postgres::Client,
    database: &str,
    passwords: &RolePasswords,
) -> anyhow::Result<()> {
    for (role, extra) in [
        (OWNER_ROLE, "NOSUPERUSER NOCREATEROLE NOBYPASSRLS"),
        (APP_ROLE, "NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS"),
    ] {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE ROLE {role} LOGIN {extra}"))
                .await?;
        }
        // Every time: a cluster whose roles predate its password secret gets them too.
        client
            .batch_execute(&set_password(role, &passwords.password(role)))
            .await?;
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {OWNER_ROLE} ENCODING 'UTF8'",
                quote_ident(database)
            ))
            .await?;
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn parse(url: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(url).context("the superuser URL must be a postgres:// URL")?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        anyhow::bail!("the superuser URL must be a postgres:// URL");
    }
    Ok(parsed)
}

fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = parse(url)?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

fn with_credentials(
    url: &str,
    role: &str,
    password: &str,
    database: &str,
) -> anyhow::Result<String> {
    let mut parsed = parse(&with_database(url, database)?)?;
    parsed
        .set_username(role)
        .map_err(|_| anyhow::anyhow!("cannot set a user on {url}"))?;
    parsed
        .set_password(Some(password))
        .map_err(|_| anyhow::anyhow!("cannot set a password on {url}"))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_urls_keep_host_and_port() {
        let url = with_credentials(
            "postgres://postgres:su@127.0.0.1:5555/postgres",
            APP_ROLE,
            "pw",
            "db1",
        )
        .unwrap();
        assert_eq!(url, "postgres://convcommerce_app:pw@127.0.0.1:5555/db1");
    }

    #[test]
    fn each_role_has_its_own_password_fixed_by_the_secret() {
        let passwords = RolePasswords::from_secret(b"one cluster");
        let app = passwords.password(APP_ROLE);
        assert_eq!(
            app,
            RolePasswords::from_secret(b"one cluster").password(APP_ROLE)
        );
        assert_ne!(app, passwords.password(OWNER_ROLE));
        assert_ne!(
            app,
            RolePasswords::from_secret(b"another").password(APP_ROLE)
        );
        assert_eq!(app.len(), 43, "256 bits, URL-safe: {app}");
        assert!(!format!("{passwords:?}").contains(&app));
    }

    #[test]
    fn a_password_is_set_as_a_scram_verifier() {
        let sql = set_password(APP_ROLE, "plain-secret");
        assert!(
            sql.starts_with("ALTER ROLE convcommerce_app PASSWORD 'SCRAM-SHA-256$4096:"),
            "{sql}"
        );
        assert!(!sql.contains("plain-secret"));
    }
}
