//! Provisioning of a database for development and tests, as a superuser: the owner role that
//! runs migrations, the application role the server connects as, the database, its schema.
//!
//! Production databases are provisioned by their operators (docs/OPERATIONS.md); this is the
//! same recipe, automated for machines where we hold the superuser.

use anyhow::Context;

use super::{connect_once, migrate};

pub const OWNER_ROLE: &str = "convcommerce_owner";
pub const APP_ROLE: &str = "convcommerce_app";
/// Only for private development and test clusters, which accept connections on 127.0.0.1 only.
const DEV_PASSWORD: &str = "convcommerce-dev";
/// Serialises provisioners (parallel test processes) on the maintenance database.
const PROVISION_LOCK: i64 = 0x636f_6e76_7072_6f76;

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub database: String,
    pub owner_url: String,
    pub app_url: String,
    pub superuser_url: String,
}

/// Creates the roles and `database` when missing and migrates it. Idempotent and safe to run
/// from several processes at once.
pub async fn provision(superuser_url: &str, database: &str) -> anyhow::Result<Provisioned> {
    let client = connect_once(superuser_url)
        .await
        .context("connecting as the database superuser")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PROVISION_LOCK])
        .await?;
    let created = ensure_roles_and_database(&client, database).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&PROVISION_LOCK])
        .await?;
    created?;

    let provisioned = Provisioned {
        database: database.to_string(),
        owner_url: with_credentials(superuser_url, OWNER_ROLE, database)?,
        app_url: with_credentials(superuser_url, APP_ROLE, database)?,
        superuser_url: with_database(superuser_url, database)?,
    };
    migrate::run(&provisioned.owner_url).await?;
    Ok(provisioned)
}

async fn ensure_roles_and_database(
    client: &tokio_postgres::Client,
    database: &str,
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
                .batch_execute(&format!(
                    "CREATE ROLE {role} LOGIN {extra} PASSWORD '{DEV_PASSWORD}'"
                ))
                .await?;
        }
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

fn with_credentials(url: &str, role: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = parse(&with_database(url, database)?)?;
    parsed
        .set_username(role)
        .map_err(|_| anyhow::anyhow!("cannot set a user on {url}"))?;
    parsed
        .set_password(Some(DEV_PASSWORD))
        .map_err(|_| anyhow::anyhow!("cannot set a password on {url}"))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_urls_keep_host_and_port() {
        let url = with_credentials(
            "postgres://postgres@127.0.0.1:5555/postgres",
            APP_ROLE,
            "db1",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://convcommerce_app:convcommerce-dev@127.0.0.1:5555/db1"
        );
    }
}
