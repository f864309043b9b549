//! SQL for the AI configuration. Every statement also filters `tenant_id` explicitly.

use super::model::{AiConfig, AiConfigInput};
use crate::commerce::to_json;
use crate::db::{DbError, TenantDb};
use crate::monitoring::activity::{Change, Recorder};

/// The saved configuration, or the defaults when none was saved (by key, on a read lane).
pub async fn get(db: &TenantDb) -> Result<AiConfig, DbError> {
    match db
        .read_opt(
            &format!(
                "SELECT {} FROM ai_config WHERE tenant_id = $1",
                AiConfig::COLUMNS
            ),
            &[&db.tenant_id()],
        )
        .await?
    {
        Some(row) => AiConfig::from_row(&row),
        None => Ok(AiConfig::default_config()),
    }
}

/// Saves the configuration, with its activity (the tenant is its resource id), in one pooled
/// transaction.
pub async fn put(
    db: &TenantDb,
    activity: &Recorder,
    input: &AiConfigInput,
) -> Result<AiConfig, DbError> {
    let hours = to_json(&input.active_hours)?;
    let tx = db.begin().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO ai_config AS c (tenant_id, bot_name, style_tone, auto_reply_enabled,
                     active_hours, languages, system_prompt)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant_id) DO UPDATE SET
                     bot_name = EXCLUDED.bot_name, style_tone = EXCLUDED.style_tone,
                     auto_reply_enabled = EXCLUDED.auto_reply_enabled,
                     active_hours = EXCLUDED.active_hours, languages = EXCLUDED.languages,
                     system_prompt = EXCLUDED.system_prompt, updated_at = now()
                 WHERE c.tenant_id = $1
                 RETURNING {}",
                AiConfig::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &input.bot_name,
                &input.style_tone,
                &input.auto_reply_enabled,
                &hours,
                &input.languages,
                &input.system_prompt,
            ],
        )
        .await?;
    let config = AiConfig::from_row(&row)?;
    let change = Change::new("ai_config.updated", "ai_config", tx.tenant_id());
    activity.commit(tx, change).await?;
    Ok(config)
}
