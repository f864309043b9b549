//! `/api/v1/monitoring/rules` and `/api/v1/monitoring/alerts` (owners and admins).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::engine;
use super::model::{
    Alert, AlertQuery, AlertStatus, Backtest, BacktestAlert, BacktestRange, CompiledRule,
    MAX_BACKTEST_DAYS, MAX_BACKTEST_EVENTS, Rule, RuleBody, TestOutcome, TestRule,
};
use super::store::{self, RuleError};
use super::window;
use crate::error::{AppError, AppResult, FieldError};
use crate::extract::{ApiJson, IdPath, Page, PageQuery};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::trust::gate::{CustomMonitoringRules, Unlocked};
use crate::trust::level::Feature;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, put_rule, delete_rule))
        .routes(routes!(test_rule))
        .routes(routes!(backtest_rule))
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
}

/// The tenant's rules (built-ins included), newest first.
#[utoipa::path(get, path = "/api/v1/monitoring/rules", tag = "monitoring",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of rules", body = Page<Rule>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_rules(ctx: TenantCtx, Query(query): Query<PageQuery>) -> AppResult<Page<Rule>> {
    ctx.require_manager()?;
    let page = query.parse()?;
    let rules = store::page(ctx.db(), page).await?;
    Ok(Page::from_rows(rules, page, |r: &Rule| r.id))
}

/// Creates a custom rule (trust level 2).
#[utoipa::path(post, path = "/api/v1/monitoring/rules", tag = "monitoring",
    request_body = RuleBody,
    responses(
        (status = 201, description = "Created", body = Rule),
        (status = 403, description = "`forbidden` (staff), `feature_not_available` (custom rules need trust level 2)"),
        (status = 409, description = "`rule_limit` (100 custom rules)"),
        (status = 422, description = "`validation_failed`, `errors[].field` the JSON path of the fault (e.g. `condition.all[1].op`)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_rule(
    ctx: Unlocked<CustomMonitoringRules>,
    ApiJson(body): ApiJson<RuleBody>,
) -> AppResult<(StatusCode, Json<Rule>)> {
    ctx.require_manager()?;
    let (new, _) = body.validate("")?;
    let rule = store::create(ctx.db(), ctx.activity(), &new).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/monitoring/rules/{id}", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    responses(
        (status = 200, description = "The rule", body = Rule),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found` (also another tenant's rule)"),
    ))]
pub async fn get_rule(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<Rule>> {
    ctx.require_manager()?;
    Ok(Json(store::get(ctx.db(), id).await?))
}

/// Replaces a rule. A built-in accepts its GET body; only `enabled`, `severity`,
/// `cooldown_seconds`, `channels` and `recipients` of a built-in may change.
#[utoipa::path(put, path = "/api/v1/monitoring/rules/{id}", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    request_body = RuleBody,
    responses(
        (status = 200, description = "The saved rule", body = Rule),
        (status = 403, description = "`forbidden` (staff), `feature_not_available` (a custom rule below trust level 2)"),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed` (also a built-in's fixed field)"),
    ))]
#[tracing::instrument(skip_all, fields(rule_id = %id))]
pub async fn put_rule(
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> AppResult<Json<Rule>> {
    ctx.require_manager()?;
    // A custom rule is a trust level 2 feature (built-ins need no level): the gate comes
    // before the body is read as a rule.
    if !store::get(ctx.db(), id).await?.builtin {
        Feature::CustomMonitoringRules.check(ctx.tenant.trust_level)?;
    }
    let body: RuleBody = crate::extract::from_value(body)?;
    let (new, _) = body.validate("")?;
    Ok(Json(
        store::update(ctx.db(), ctx.activity(), id, &new).await?,
    ))
}

/// Deletes a custom rule (its alerts stay, with `rule_id` null). Built-ins can be disabled,
/// not deleted: 409 `invalid_state`.
#[utoipa::path(delete, path = "/api/v1/monitoring/rules/{id}", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (a built-in rule)"),
    ))]
#[tracing::instrument(skip_all, fields(rule_id = %id))]
pub async fn delete_rule(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<StatusCode> {
    ctx.require_manager()?;
    store::delete(ctx.db(), ctx.activity(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How often a saved rule would have fired over a past range of the activity log (each
/// cooldown honoured, whether or not the rule is enabled), with the first alerts as samples.
#[utoipa::path(post, path = "/api/v1/monitoring/rules/{id}/backtest", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    request_body = BacktestRange,
    responses(
        (status = 200, description = "What the rule would have raised", body = Backtest),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed`: `until` not after `since`, or more than 31 days after it"),
    ))]
#[tracing::instrument(skip_all, fields(rule_id = %id))]
pub async fn backtest_rule(
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(range): ApiJson<BacktestRange>,
) -> AppResult<Json<Backtest>> {
    ctx.require_manager()?;
    if range.until <= range.since {
        return Err(AppError::validation("until", "must be after since"));
    }
    if range.until - range.since > chrono::Duration::days(MAX_BACKTEST_DAYS) {
        return Err(AppError::validation(
            "until",
            format!("must be at most {MAX_BACKTEST_DAYS} days after since"),
        ));
    }
    let rule = store::get(ctx.db(), id).await?;
    let compiled = CompiledRule::from_rule(&rule)
        .ok_or_else(|| anyhow::anyhow!("stored rule {id} does not compile"))?;
    let mut activities =
        store::activities_between(ctx.db(), range.since, range.until, MAX_BACKTEST_EVENTS + 1)
            .await?;
    let truncated = activities.len() > MAX_BACKTEST_EVENTS;
    activities.truncate(MAX_BACKTEST_EVENTS);
    let matched: Vec<_> = activities
        .iter()
        .filter(|a| compiled.parts.matches(*a, a.created_at))
        .map(|a| (a.created_at, a.id, compiled.parts.group_key(a)))
        .collect();
    let fired = window::replay(
        &compiled.evaluator,
        matched
            .iter()
            .map(|(at, id, group)| (*at, *id, group.as_str())),
    );
    Ok(Json(Backtest {
        alerts: fired.len() as u64,
        scanned: activities.len() as u64,
        truncated,
        samples: fired
            .into_iter()
            .take(20)
            .map(|(group_key, firing)| BacktestAlert {
                group_key,
                event_count: firing.event_count,
                first_event_at: firing.first_event_at,
                last_event_at: firing.last_event_at,
                sample_activity_ids: firing.samples,
            })
            .collect(),
    }))
}

/// Dry run: whether a rule (not saved) matches one event, and why. Thresholds are not applied
/// to a single event.
#[utoipa::path(post, path = "/api/v1/monitoring/rules/test", tag = "monitoring",
    request_body = TestRule,
    responses(
        (status = 200, description = "The outcome", body = TestOutcome),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (fields under `rule.`)"),
    ))]
pub async fn test_rule(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<TestRule>,
) -> AppResult<Json<TestOutcome>> {
    ctx.require_manager()?;
    let (_, parts) = body.rule.validate("rule.")?;
    let event = &body.event;
    let mut reasons = Vec::new();
    let at = match event.get("created_at") {
        None | Some(serde_json::Value::Null) => chrono::Utc::now(),
        Some(value) => value
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok_or_else(|| {
                AppError::validation("event.created_at", "must be an RFC 3339 timestamp")
            })?,
    };
    if let Some(d) = event.get("details")
        && !d.is_object()
        && !d.is_null()
    {
        return Err(AppError::Validation(vec![FieldError::new(
            "event.details",
            "must be an object",
        )]));
    }
    let in_schedule = parts.schedule.as_ref().is_none_or(|s| s.contains(at));
    if parts.schedule.is_some() {
        reasons.push(format!(
            "schedule: {} at {}",
            if in_schedule { "active" } else { "inactive" },
            at.to_rfc3339()
        ));
    }
    let held = parts.condition.explain(event, "condition", &mut reasons);
    if parts.count > 1 {
        reasons.push(format!(
            "threshold: not applied to one event ({} events within {} s would fire)",
            parts.count,
            parts.window.num_seconds()
        ));
    }
    Ok(Json(TestOutcome {
        matched: in_schedule && held,
        reasons,
    }))
}

/// The tenant's alerts, newest first.
#[utoipa::path(get, path = "/api/v1/monitoring/alerts", tag = "monitoring",
    params(AlertQuery),
    responses(
        (status = 200, description = "A page of alerts", body = Page<Alert>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn list_alerts(
    ctx: TenantCtx,
    Query(query): Query<AlertQuery>,
) -> AppResult<Page<Alert>> {
    ctx.require_manager()?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse()?;
    let alerts = store::alerts(ctx.db(), &query, page).await?;
    Ok(Page::from_rows(alerts, page, |a: &Alert| a.id))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/monitoring/alerts/{id}", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Alert id")),
    responses(
        (status = 200, description = "The alert", body = Alert),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found` (also another tenant's alert)"),
    ))]
pub async fn get_alert(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<Alert>> {
    ctx.require_manager()?;
    Ok(Json(store::alert(ctx.db(), id).await?))
}

/// firing -> acknowledged.
#[utoipa::path(post, path = "/api/v1/monitoring/alerts/{id}/acknowledge", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Alert id")),
    responses(
        (status = 200, description = "The alert", body = Alert),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (not firing)"),
    ))]
#[tracing::instrument(skip_all, fields(alert_id = %id))]
pub async fn acknowledge_alert(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<Json<Alert>> {
    ctx.require_manager()?;
    let alert = store::transition(ctx.db(), ctx.activity(), id, AlertStatus::Acknowledged).await?;
    engine::announce(&state.publisher, ctx.tenant_id(), &alert);
    Ok(Json(alert))
}

/// firing or acknowledged -> resolved (final).
#[utoipa::path(post, path = "/api/v1/monitoring/alerts/{id}/resolve", tag = "monitoring",
    params(("id" = uuid::Uuid, Path, description = "Alert id")),
    responses(
        (status = 200, description = "The alert", body = Alert),
        (status = 403, description = "`forbidden` (staff)"),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (already resolved)"),
    ))]
#[tracing::instrument(skip_all, fields(alert_id = %id))]
pub async fn resolve_alert(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
) -> AppResult<Json<Alert>> {
    ctx.require_manager()?;
    let alert = store::transition(ctx.db(), ctx.activity(), id, AlertStatus::Resolved).await?;
    engine::announce(&state.publisher, ctx.tenant_id(), &alert);
    Ok(Json(alert))
}

impl From<RuleError> for AppError {
    #[track_caller]
    fn from(err: RuleError) -> Self {
        match err {
            RuleError::NotFound => Self::NotFound("rule"),
            RuleError::AlertNotFound => Self::NotFound("alert"),
            RuleError::BuiltinDelete => Self::Conflict {
                code: "invalid_state",
                detail: "A built-in rule cannot be deleted; disable it instead.".into(),
            },
            RuleError::BuiltinField(field) => Self::validation(
                field,
                "cannot change on a built-in rule (only enabled, severity, cooldown_seconds, channels and recipients can)",
            ),
            RuleError::TooManyRules => Self::Conflict {
                code: "rule_limit",
                detail: format!(
                    "The tenant has {} custom rules, the most it may have.",
                    super::model::MAX_CUSTOM_RULES
                ),
            },
            RuleError::UnknownRecipient(i) => Self::validation(
                format!("recipients.user_ids[{i}]"),
                "is not a user of this tenant",
            ),
            RuleError::InvalidState => Self::Conflict {
                code: "invalid_state",
                detail: "The alert cannot take this action in its current status.".into(),
            },
            RuleError::Db(e) => e.into(),
        }
    }
}
