//! Plain-SQL migrations, embedded in the binary and applied in order by the owner role.
//!
//! Each file runs in its own transaction; `schema_migrations` records its checksum so an
//! edited, already-applied migration is refused instead of silently diverging.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every file in `migrations/`, in order (a unit test keeps this list and the folder equal).
/// Numbers are handed out per branch, so one may be missing until its branch is merged.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_foundation.sql",
        sql: include_str!("../../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "0002_commerce.sql",
        sql: include_str!("../../migrations/0002_commerce.sql"),
    },
    Migration {
        version: 3,
        name: "0003_limits.sql",
        sql: include_str!("../../migrations/0003_limits.sql"),
    },
    Migration {
        version: 4,
        name: "0004_jobs.sql",
        sql: include_str!("../../migrations/0004_jobs.sql"),
    },
    Migration {
        version: 5,
        name: "0005_order_search.sql",
        sql: include_str!("../../migrations/0005_order_search.sql"),
    },
    Migration {
        version: 6,
        name: "0006_activity.sql",
        sql: include_str!("../../migrations/0006_activity.sql"),
    },
    Migration {
        version: 7,
        name: "0007_monitoring.sql",
        sql: include_str!("../../migrations/0007_monitoring.sql"),
    },
    Migration {
        version: 8,
        name: "0008_events.sql",
        sql: include_str!("../../migrations/0008_events.sql"),
    },
    Migration {
        version: 9,
        name: "0009_notifications.sql",
        sql: include_str!("../../migrations/0009_notifications.sql"),
    },
    Migration {
        version: 10,
        name: "0010_trust.sql",
        sql: include_str!("../../migrations/0010_trust.sql"),
    },
    Migration {
        version: 11,
        name: "0011_sms_routes.sql",
        sql: include_str!("../../migrations/0011_sms_routes.sql"),
    },
    Migration {
        version: 12,
        name: "0012_trust_fixes.sql",
        sql: include_str!("../../migrations/0012_trust_fixes.sql"),
    },
    Migration {
        version: 14,
        name: "0014_trust_followups.sql",
        sql: include_str!("../../migrations/0014_trust_followups.sql"),
    },
];

/// Serialises concurrent migrators (several instances or test processes starting at once).
const MIGRATION_LOCK: i64 = 0x0063_6f6e_766d_6967;

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A short fingerprint of the whole migration set.
pub fn fingerprint() -> String {
    let all: String = MIGRATIONS.iter().map(|m| checksum(m.sql)).collect();
    checksum(&all)[..12].to_string()
}

/// Applies pending migrations; returns how many ran.
pub async fn run(owner_url: &str) -> anyhow::Result<usize> {
    let mut client = super::connect_once(owner_url)
        .await
        .context("connecting with MIGRATION_DATABASE_URL")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn apply(client: &mut tokio_postgres::Client) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let applied = client
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?;
    let mut ran = 0;
    for migration in MIGRATIONS {
        let sum = checksum(migration.sql);
        if let Some(row) = applied
            .iter()
            .find(|r| r.get::<_, i32>(0) == migration.version)
        {
            if row.get::<_, String>(1) != sum {
                bail!(
                    "migration {} was changed after it was applied",
                    migration.name
                );
            }
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql)
            .await
            .with_context(|| format!("applying {}", migration.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &sum],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(migration = migration.name, "applied migration");
        ran += 1;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_folder_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for m in MIGRATIONS {
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}
