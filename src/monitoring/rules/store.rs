//! SQL for rules and alerts. Every statement also filters `tenant_id` explicitly.

use serde_json::json;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::model::{Alert, AlertQuery, AlertStatus, MAX_CUSTOM_RULES, NewRule, Recipients, Rule};
use crate::db::{DbError, TenantDb, TenantTx};
use crate::extract::PageRequest;
use crate::monitoring::activity::model::Activity;
use crate::monitoring::activity::{Change, Recorder};

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("no such rule")]
    NotFound,
    #[error("no such alert")]
    AlertNotFound,
    #[error("a built-in rule cannot be deleted")]
    BuiltinDelete,
    #[error("a built-in rule's {0} cannot change")]
    BuiltinField(&'static str),
    #[error("the tenant has its maximum of custom rules")]
    TooManyRules,
    #[error("recipients.user_ids[{0}] is not a user of the tenant")]
    UnknownRecipient(usize),
    #[error("the alert cannot move from its status")]
    InvalidState,
    #[error(transparent)]
    Db(#[from] DbError),
}

type Result<T, E = RuleError> = std::result::Result<T, E>;

fn json<T: serde::Serialize>(value: &Option<T>) -> Option<serde_json::Value> {
    value
        .as_ref()
        .map(|v| serde_json::to_value(v).unwrap_or_default())
}

/// A page of rules, newest first.
pub async fn page(db: &TenantDb, page: PageRequest) -> Result<Vec<Rule>> {
    let rows = db
        .read(
            &format!(
                "SELECT {} FROM monitoring_rules
                 WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
                Rule::COLUMNS
            ),
            &[&db.tenant_id(), &page.after, &(page.limit + 1)],
        )
        .await?;
    rows.iter()
        .map(|r| Rule::from_row(r).map_err(RuleError::from))
        .collect()
}

pub async fn get(db: &TenantDb, id: Uuid) -> Result<Rule> {
    let row = db
        .read_opt(
            &format!(
                "SELECT {} FROM monitoring_rules WHERE tenant_id = $1 AND id = $2",
                Rule::COLUMNS
            ),
            &[&db.tenant_id(), &id],
        )
        .await?
        .ok_or(RuleError::NotFound)?;
    Ok(Rule::from_row(&row)?)
}

/// The version the engine compares its compiled rules with (0: never changed). On the pool:
/// the read lanes are for requests, and this runs after every batch of activities.
pub async fn version(db: &TenantDb) -> Result<i64, DbError> {
    Ok(db
        .query_opt(
            "SELECT version FROM monitoring_rule_sets WHERE tenant_id = $1",
            &[&db.tenant_id()],
        )
        .await?
        .map_or(0, |r| r.get(0)))
}

/// The enabled rules and the version they are at, read in one transaction.
pub async fn enabled(db: &TenantDb) -> Result<(i64, Vec<Rule>)> {
    let tx = db.begin().await?;
    let version = tx
        .query_opt(
            "SELECT version FROM monitoring_rule_sets WHERE tenant_id = $1",
            &[&tx.tenant_id()],
        )
        .await?
        .map_or(0, |r| r.get(0));
    let rows = tx
        .query(
            &format!(
                "SELECT {} FROM monitoring_rules WHERE tenant_id = $1 AND enabled",
                Rule::COLUMNS
            ),
            &[&tx.tenant_id()],
        )
        .await?;
    tx.commit().await?;
    let rules = rows
        .iter()
        .map(|r| Rule::from_row(r).map_err(RuleError::from))
        .collect::<Result<Vec<_>>>()?;
    Ok((version, rules))
}

/// Fails when a listed user is not a member of this tenant.
async fn check_recipients(tx: &TenantTx, recipients: &Option<Recipients>) -> Result<()> {
    let Some(ids) = recipients.as_ref().and_then(|r| r.user_ids.as_ref()) else {
        return Ok(());
    };
    let found: Vec<Uuid> = tx
        .query(
            "SELECT id FROM users WHERE tenant_id = $1 AND id = ANY($2)",
            &[&tx.tenant_id(), ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match ids.iter().position(|id| !found.contains(id)) {
        Some(i) => Err(RuleError::UnknownRecipient(i)),
        None => Ok(()),
    }
}

/// Locks the tenant's rule-set row: serialises creates, so the cap holds under a race.
async fn lock_rule_set(tx: &TenantTx) -> Result<()> {
    tx.execute(
        "INSERT INTO monitoring_rule_sets (tenant_id, version) VALUES ($1, 0)
         ON CONFLICT (tenant_id) DO UPDATE SET version = monitoring_rule_sets.version",
        &[&tx.tenant_id()],
    )
    .await?;
    Ok(())
}

/// Creates a custom rule, with its activity (`rule.created`), in one transaction.
pub async fn create(db: &TenantDb, activity: &Recorder, new: &NewRule) -> Result<Rule> {
    let tx = db.begin().await?;
    lock_rule_set(&tx).await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM monitoring_rules WHERE tenant_id = $1 AND key IS NULL",
            &[&tx.tenant_id()],
        )
        .await?
        .get(0);
    if count >= MAX_CUSTOM_RULES {
        return Err(RuleError::TooManyRules);
    }
    check_recipients(&tx, &new.recipients).await?;
    let params = values(tx.tenant_id(), Uuid::now_v7(), new);
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO monitoring_rules (tenant_id, id, name, enabled, severity, condition,
                     threshold, schedule, cooldown_seconds, channels, recipients)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {}",
                Rule::COLUMNS
            ),
            &refs(&params),
        )
        .await?;
    let rule = Rule::from_row(&row)?;
    let change = Change::new("rule.created", "rule", rule.id).details(json!({
        "name": rule.name, "severity": rule.severity, "enabled": rule.enabled
    }));
    activity.commit(tx, change).await?;
    Ok(rule)
}

fn values(tenant: Uuid, id: Uuid, new: &NewRule) -> [Box<dyn ToSql + Sync + Send + '_>; 11] {
    [
        Box::new(tenant),
        Box::new(id),
        Box::new(new.name.as_str()),
        Box::new(new.enabled),
        Box::new(new.severity.as_str()),
        Box::new(&new.condition),
        Box::new(json(&new.threshold)),
        Box::new(json(&new.schedule)),
        Box::new(new.cooldown_seconds.map(|c| c as i32)),
        Box::new(json(&new.channels)),
        Box::new(json(&new.recipients)),
    ]
}

fn refs<'a>(params: &'a [Box<dyn ToSql + Sync + Send + 'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Replaces a rule; a built-in keeps its name, condition, threshold and schedule. Its
/// activity, in the same transaction, is `rule.enabled` or `rule.disabled` when `enabled`
/// changed, else `rule.updated`; `details.changed` names every field that changed.
pub async fn update(db: &TenantDb, activity: &Recorder, id: Uuid, new: &NewRule) -> Result<Rule> {
    let tx = db.begin().await?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT {} FROM monitoring_rules WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                Rule::COLUMNS
            ),
            &[&tx.tenant_id(), &id],
        )
        .await?
        .ok_or(RuleError::NotFound)?;
    let current = Rule::from_row(&row)?;
    if current.builtin
        && let Some(field) = current.fixed_field_changed(new)
    {
        return Err(RuleError::BuiltinField(field));
    }
    check_recipients(&tx, &new.recipients).await?;
    let params = values(tx.tenant_id(), id, new);
    let row = tx
        .query_one(
            &format!(
                "UPDATE monitoring_rules SET name = $3, enabled = $4, severity = $5,
                     condition = $6, threshold = $7, schedule = $8, cooldown_seconds = $9,
                     channels = $10, recipients = $11, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {}",
                Rule::COLUMNS
            ),
            &refs(&params),
        )
        .await?;
    let rule = Rule::from_row(&row)?;
    let changed = current.changes(&rule);
    let action = match (current.enabled, rule.enabled) {
        (false, true) => "rule.enabled",
        (true, false) => "rule.disabled",
        _ => "rule.updated",
    };
    let change = Change::new(action, "rule", id).details(json!({
        "name": rule.name, "key": rule.key, "changed": changed
    }));
    activity.commit(tx, change).await?;
    Ok(rule)
}

/// Deletes a custom rule, with its activity (`rule.deleted`), in one transaction.
pub async fn delete(db: &TenantDb, activity: &Recorder, id: Uuid) -> Result<()> {
    let tx = db.begin().await?;
    let row = tx
        .query_opt(
            "SELECT key, name FROM monitoring_rules WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tx.tenant_id(), &id],
        )
        .await?
        .ok_or(RuleError::NotFound)?;
    if row.get::<_, Option<String>>(0).is_some() {
        return Err(RuleError::BuiltinDelete);
    }
    tx.execute(
        "DELETE FROM monitoring_rules WHERE tenant_id = $1 AND id = $2",
        &[&tx.tenant_id(), &id],
    )
    .await?;
    let name: String = row.get(1);
    let change = Change::new("rule.deleted", "rule", id).details(json!({"name": name}));
    activity.commit(tx, change).await?;
    Ok(())
}

/// A page of alerts, newest first, filtered by status and severity.
pub async fn alerts(db: &TenantDb, query: &AlertQuery, page: PageRequest) -> Result<Vec<Alert>> {
    let status = query.status.map(AlertStatus::as_str);
    let severity = query.severity.map(|s| s.as_str());
    let mut sql = format!(
        "SELECT {} FROM monitoring_alerts WHERE tenant_id = $1",
        Alert::COLUMNS
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let tenant = db.tenant_id();
    params.push(&tenant);
    if let Some(s) = &status {
        params.push(s);
        sql += &format!(" AND status = ${}", params.len());
    }
    if let Some(s) = &severity {
        params.push(s);
        sql += &format!(" AND severity = ${}", params.len());
    }
    if let Some(after) = &page.after {
        params.push(after);
        sql += &format!(" AND id < ${}", params.len());
    }
    let limit = page.limit + 1;
    params.push(&limit);
    sql += &format!(" ORDER BY id DESC LIMIT ${}", params.len());
    let rows = db.query(&sql, &params).await?;
    rows.iter()
        .map(|r| Alert::from_row(r).map_err(RuleError::from))
        .collect()
}

pub async fn alert(db: &TenantDb, id: Uuid) -> Result<Alert> {
    let row = db
        .read_opt(
            &format!(
                "SELECT {} FROM monitoring_alerts WHERE tenant_id = $1 AND id = $2",
                Alert::COLUMNS
            ),
            &[&db.tenant_id(), &id],
        )
        .await?
        .ok_or(RuleError::AlertNotFound)?;
    Ok(Alert::from_row(&row)?)
}

/// Moves an alert to `to` (acknowledged: from firing; resolved: from firing or acknowledged),
/// with its activity (`alert.acknowledged`, `alert.resolved`) in the same transaction.
pub async fn transition(
    db: &TenantDb,
    activity: &Recorder,
    id: Uuid,
    to: AlertStatus,
) -> Result<Alert> {
    let (from, stamp, action): (&[&str], &str, &'static str) = match to {
        AlertStatus::Acknowledged => (&["firing"], "acknowledged_at", "alert.acknowledged"),
        AlertStatus::Resolved => (&["firing", "acknowledged"], "resolved_at", "alert.resolved"),
        AlertStatus::Firing => return Err(RuleError::InvalidState),
    };
    let tx = db.begin().await?;
    let was: String = tx
        .query_opt(
            "SELECT status FROM monitoring_alerts WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tx.tenant_id(), &id],
        )
        .await?
        .ok_or(RuleError::AlertNotFound)?
        .get(0);
    if !from.contains(&was.as_str()) {
        return Err(RuleError::InvalidState);
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE monitoring_alerts SET status = $3, {stamp} = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {}",
                Alert::COLUMNS
            ),
            &[&tx.tenant_id(), &id, &to.as_str()],
        )
        .await?;
    let alert = Alert::from_row(&row)?;
    let change = Change::new(action, "alert", id).details(json!({
        "rule_id": alert.rule_id, "severity": alert.severity, "from": was, "to": to
    }));
    activity.commit(tx, change).await?;
    Ok(alert)
}

/// The tenant's activities in `[since, until)`, oldest first, at most `limit` (a scan of the
/// tenant's `created_at` index, so it runs on the pool, not a read lane).
pub async fn activities_between(
    db: &TenantDb,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
    limit: usize,
) -> Result<Vec<Activity>> {
    let rows = db
        .query(
            &format!(
                "SELECT {} FROM activities WHERE tenant_id = $1 AND created_at >= $2
                 AND created_at < $3 ORDER BY created_at, id LIMIT $4",
                Activity::COLUMNS
            ),
            &[&db.tenant_id(), &since, &until, &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(Activity::from_row).collect())
}
