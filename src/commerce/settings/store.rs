//! SQL for the tenant settings. Every statement also filters `tenant_id` explicitly.

use chrono_tz::Tz;
use serde_json::json;

use super::model::{SettingsInput, TenantSettings};
use crate::db::{Conn, DbError, TenantDb};
use crate::monitoring::activity::{Change, Recorder};

/// What can go wrong saving settings, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The time zone is valid but PostgreSQL's time zone database lacks it (analytics group
    /// days there).
    #[error("time zone unknown to the database")]
    UnknownZone,
    #[error(transparent)]
    Db(#[from] DbError),
}

const SELECT: &str =
    "SELECT timezone, auto_confirm_orders, updated_at FROM tenant_settings WHERE tenant_id = $1";

fn from_row(row: &tokio_postgres::Row) -> TenantSettings {
    TenantSettings {
        timezone: row.get(0),
        auto_confirm_orders: row.get(1),
        updated_at: row.get(2),
    }
}

/// The saved settings, or the defaults (by key, on a read lane).
pub async fn get(db: &TenantDb) -> Result<TenantSettings, DbError> {
    Ok(db
        .read_opt(SELECT, &[&db.tenant_id()])
        .await?
        .map(|r| from_row(&r))
        .unwrap_or_else(TenantSettings::defaults))
}

/// The tenant's time zone inside a transaction of its own (UTC when never set).
pub async fn timezone(conn: &Conn, tenant_id: uuid::Uuid) -> Result<Tz, DbError> {
    let name: Option<String> = conn
        .query_opt(
            "SELECT timezone FROM tenant_settings WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?
        .map(|r| r.get(0));
    Ok(name.and_then(|n| n.parse().ok()).unwrap_or(Tz::UTC))
}

/// Saves the settings with their activity (one transaction: the zone is checked against
/// PostgreSQL's own time zone database, then upserted; the tenant is the resource id).
pub async fn put(
    db: &TenantDb,
    activity: &Recorder,
    input: &SettingsInput,
) -> Result<TenantSettings, SettingsError> {
    let tx = db.begin().await?;
    let known = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)",
            &[&input.timezone.name()],
        )
        .await?
        .get::<_, bool>(0);
    if !known {
        return Err(SettingsError::UnknownZone);
    }
    let row = tx
        .query_one(
            "INSERT INTO tenant_settings AS s (tenant_id, timezone, auto_confirm_orders)
             VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET
                 timezone = EXCLUDED.timezone,
                 auto_confirm_orders = EXCLUDED.auto_confirm_orders, updated_at = now()
             WHERE s.tenant_id = $1
             RETURNING timezone, auto_confirm_orders, updated_at",
            &[
                &tx.tenant_id(),
                &input.timezone.name(),
                &input.auto_confirm_orders,
            ],
        )
        .await?;
    let saved = from_row(&row);
    let change =
        Change::new("tenant_settings.updated", "tenant_settings", tx.tenant_id()).details(json!({
            "timezone": saved.timezone,
            "auto_confirm_orders": saved.auto_confirm_orders
        }));
    activity.commit(tx, change).await?;
    Ok(saved)
}
