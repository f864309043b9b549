//! Platform admins and trust (SPEC §6): a tenant's trust document, recompute now, the
//! override, the document review queue and its decisions, and the risk list. Cross-tenant
//! reads go through the platform table `tenants` and the review queue; every tenant's own
//! rows are read and written with that tenant set. Every action is an audit event.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit;
use super::store;
use crate::auth::PlatformAdmin;
use crate::error::{AppError, AppResult, Fields};
use crate::extract::{ApiJson, IdPath, OptionalJson, Page, PageQuery, PageRequest};
use crate::monitoring::activity::model::Category;
use crate::monitoring::activity::{Change, Recorder};
use crate::notify::model::{Priority, Source, SourceType};
use crate::notify::templates::TemplateKey;
use crate::notify::{NewNotification, Recipients};
use crate::state::AppState;
use crate::tenancy::model::{Role, TenantStatus};
use crate::trust::model::{Decision, TrustDocument, Verification, VerificationKind};
use crate::trust::risk::Signal;
use crate::trust::store as trust_store;
use crate::types;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_trust, admin_set_trust))
        .routes(routes!(admin_recompute_trust))
        .routes(routes!(admin_verifications))
        .routes(routes!(admin_approve_verification))
        .routes(routes!(admin_reject_verification))
        .routes(routes!(admin_risk))
}

/// `PUT /api/v1/admin/tenants/{id}/trust`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"level": 2, "reason": "Documents checked by phone; long-standing seller.", "locked": true}))]
pub struct SetTrust {
    #[schema(minimum = 0, maximum = 3)]
    pub level: i16,
    /// Why (1-1000 characters): shown to the tenant as the level's reason.
    #[schema(schema_with = types::schema::name::<1000>)]
    pub reason: String,
    /// Keep the level as set: the recompute then leaves it alone (default false).
    #[serde(default)]
    pub locked: bool,
}

/// A verification in the review queue, with its tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedVerification {
    pub tenant_id: Uuid,
    #[serde(flatten)]
    pub verification: Verification,
    /// The queue's keyset (the submission's UUID v7).
    #[serde(skip)]
    #[schema(ignore)]
    pub submission: Uuid,
}

crate::commerce::text_enum! {
    /// The review queue's states.
    QueueStatus {
        Pending => "pending",
        Verified => "verified",
        Rejected => "rejected",
    }
}

/// `GET /api/v1/admin/verifications` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Default `pending`: the submissions waiting for a decision, oldest first.
    #[param(inline)]
    pub status: Option<QueueStatus>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A flagged tenant, for `GET /api/v1/admin/risk`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiskAssessment {
    pub tenant_id: Uuid,
    pub name: String,
    pub slug: String,
    pub status: TenantStatus,
    /// Why the tenant is suspended (an automatic suspension says which signal).
    #[schema(required = true)]
    pub status_reason: Option<String>,
    #[schema(minimum = 0, maximum = 3)]
    pub trust_level: i16,
    #[schema(required = true, minimum = 0, maximum = 100)]
    pub score: Option<i16>,
    /// The highest severity among the signals: `none`, `low`, `medium`, `high`, `critical`.
    pub risk_level: String,
    pub signals: Vec<Signal>,
    #[serde(serialize_with = "types::timestamp_opt")]
    #[schema(required = true)]
    pub assessed_at: Option<DateTime<Utc>>,
    /// Why a review is open (a risk flag or a score drop); null when none is.
    #[schema(required = true)]
    pub review_reason: Option<String>,
    #[serde(serialize_with = "types::timestamp_opt")]
    #[schema(required = true)]
    pub review_opened_at: Option<DateTime<Utc>>,
}

async fn existing(state: &AppState, id: Uuid) -> AppResult<()> {
    store::get(&state.db, id).await?;
    Ok(())
}

/// Any tenant's trust document.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/trust", tag = "admin",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The trust document", body = TrustDocument),
        (status = 404, description = "`not_found`"),
    ))]
pub async fn admin_trust(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    IdPath(id): IdPath,
) -> AppResult<Json<TrustDocument>> {
    existing(&state, id).await?;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(id),
        "trust.read",
        json!({}),
    );
    Ok(Json(state.trust.explain(id).await?))
}

/// Sets a tenant's level with a reason, optionally locked (the recompute then leaves it);
/// closes its open review. A level change is an activity of the tenant (`trust.level_changed`).
#[utoipa::path(put, path = "/api/v1/admin/tenants/{id}/trust", tag = "admin",
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = SetTrust,
    responses(
        (status = 200, description = "The trust document", body = TrustDocument),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed` (level 0-3, reason)"),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %id))]
pub async fn admin_set_trust(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<SetTrust>,
) -> AppResult<Json<TrustDocument>> {
    let mut f = Fields::default();
    let level = f.check(
        "level",
        if (0..=3).contains(&body.level) {
            Ok(body.level)
        } else {
            Err("must be 0-3")
        },
    );
    let reason = f.check("reason", types::name(&body.reason, 1000));
    let (level, reason) = f.finish(|| Some((level?, reason?)))?;
    existing(&state, id).await?;
    let doc = state
        .trust
        .set_level(id, level, &reason, body.locked)
        .await?;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(id),
        "trust.overridden",
        json!({"level": level, "locked": body.locked, "reason": reason}),
    );
    Ok(Json(doc))
}

/// Recomputes a tenant's trust now (score, risk signals, level and grace period).
#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/trust/recompute", tag = "admin",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The trust document after the recompute", body = TrustDocument),
        (status = 404, description = "`not_found`"),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %id))]
pub async fn admin_recompute_trust(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    IdPath(id): IdPath,
) -> AppResult<Json<TrustDocument>> {
    existing(&state, id).await?;
    let doc = state.trust.recompute(id, None).await?;
    audit::record(
        &state.metrics,
        &admin.subject,
        Some(id),
        "trust.recomputed",
        json!({"level": doc.level, "score": doc.score}),
    );
    Ok(Json(doc))
}

/// The review queue of business documents: pending ones oldest first (or the decided ones,
/// by `status`).
#[utoipa::path(get, path = "/api/v1/admin/verifications", tag = "admin",
    params(QueueQuery),
    responses(
        (status = 200, description = "A page of submissions", body = Page<QueuedVerification>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn admin_verifications(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    Query(query): Query<QueueQuery>,
) -> AppResult<Page<QueuedVerification>> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let status = query.status.unwrap_or(QueueStatus::Pending);
    audit::record(
        &state.metrics,
        &admin.subject,
        None,
        "verifications.listed",
        json!({"status": status}),
    );
    let items = queue_page(&state, status, page).await?;
    Ok(Page::from_rows(items, page, |v: &QueuedVerification| {
        v.submission
    }))
}

async fn queue_page(
    state: &AppState,
    status: QueueStatus,
    page: PageRequest,
) -> AppResult<Vec<QueuedVerification>> {
    let queued = state
        .db
        .platform()
        .await?
        .query(
            "SELECT verification_id, tenant, submission_id FROM verification_queue
             WHERE status = $1 AND ($2::uuid IS NULL OR submission_id > $2)
             ORDER BY submission_id LIMIT $3",
            &[&status, &page.after, &(page.limit + 1)],
        )
        .await?;
    let mut items = Vec::with_capacity(queued.len());
    for row in queued {
        let (id, tenant_id, submission): (Uuid, Uuid, Uuid) = (row.get(0), row.get(1), row.get(2));
        let tx = state.db.for_tenant(tenant_id).begin().await?;
        let verification = trust_store::verification(&tx, tenant_id, id).await?;
        tx.commit().await?;
        items.push(QueuedVerification {
            tenant_id,
            verification,
            submission,
        });
    }
    Ok(items)
}

/// Approves a pending document: the verification becomes `verified` and the tenant's level
/// is recomputed. The body, with its optional `reason`, may be left out.
#[utoipa::path(post, path = "/api/v1/admin/verifications/{id}/approve", tag = "admin",
    params(("id" = Uuid, Path, description = "Verification id")),
    request_body = Option<Decision>,
    responses(
        (status = 200, description = "The verification, verified", body = Verification),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state`: already decided (or not a document)"),
        (status = 422, description = "`validation_failed` (reason)"),
    ))]
#[tracing::instrument(skip_all, fields(verification_id = %id))]
pub async fn admin_approve_verification(
    State(state): State<AppState>,
    admin: PlatformAdmin,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<Decision>,
) -> AppResult<Json<Verification>> {
    let reason = body.validate(false)?;
    decide(&state, &admin, id, true, reason).await.map(Json)
}

/// Rejects a pending document with a reason (shown to the seller, who may submit again); no
/// body, or none with a `reason`, is 422 naming `reason`.
#[utoipa::path(post, path = "/api/v1/admin/verifications/{id}/reject", tag = "admin",
    params(("id" = Uuid, Path, description = "Verification id")),
    request_body = Decision,
    responses(
        (status = 200, description = "The verification, rejected", body = Verification),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state`: already decided (or not a document)"),
        (status = 422, description = "`validation_failed` (reason: required)"),
    ))]
#[tracing::instrument(skip_all, fields(verification_id = %id))]
pub async fn admin_reject_verification(
    State(state): State<AppState>,
    admin: PlatformAdmin,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<Decision>,
) -> AppResult<Json<Verification>> {
    let reason = body.validate(true)?;
    decide(&state, &admin, id, false, reason).await.map(Json)
}

async fn decide(
    state: &AppState,
    admin: &PlatformAdmin,
    id: Uuid,
    approve: bool,
    reason: Option<String>,
) -> AppResult<Verification> {
    let tenant_id: Uuid = state
        .db
        .platform()
        .await?
        .query_opt(
            "SELECT tenant FROM verification_queue WHERE verification_id = $1",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound("verification"))?
        .get(0);
    let tx = state.db.for_tenant(tenant_id).begin().await?;
    let now = state.clock.now();
    let kind = trust_store::decide_document(&tx, id, approve, reason.as_deref(), now).await?;
    let action = if approve {
        "verification.approved"
    } else {
        "verification.rejected"
    };
    let sent = state
        .notifier
        .enqueue(
            &tx,
            decision_notice(id, kind, approve, reason.as_deref()),
            Recipients::Roles(vec![Role::Owner]),
        )
        .await?;
    Recorder::system_to(tenant_id, state.activity_sink.clone())
        .commit(
            tx,
            Change::new(action, "verification", id)
                .category(Category::Trust)
                .details(json!({"kind": kind, "reason": reason})),
        )
        .await?;
    state.notifier.published(sent);
    audit::record(
        &state.metrics,
        &admin.0.subject,
        Some(tenant_id),
        action,
        json!({"verification_id": id, "kind": kind, "reason": reason}),
    );
    state.trust.verifications_changed(tenant_id).await;
    let tx = state.db.for_tenant(tenant_id).begin().await?;
    let verification = trust_store::verification(&tx, tenant_id, id).await?;
    tx.commit().await?;
    Ok(verification)
}

/// The owners' notice of a decision on their document (template
/// `trust.verification_decided`): an approval is news, a rejection needs a new submission.
fn decision_notice(
    id: Uuid,
    kind: VerificationKind,
    approve: bool,
    reason: Option<&str>,
) -> NewNotification {
    let (status, title, priority) = if approve {
        (
            "verified",
            format!("Your {} document is verified", kind.as_str()),
            Priority::Medium,
        )
    } else {
        (
            "rejected",
            format!("Your {} document was rejected", kind.as_str()),
            Priority::High,
        )
    };
    let body = match (approve, reason) {
        (_, Some(reason)) => reason.to_string(),
        (true, None) => "A platform admin approved it.".to_string(),
        (false, None) => "A platform admin rejected it.".to_string(),
    };
    NewNotification {
        variables: json!({"trust": {"kind": kind, "status": status, "reason": body}}),
        title,
        body,
        priority,
        category: "trust".into(),
        metadata: json!({"verification_id": id, "kind": kind, "status": status}),
        source: Source {
            kind: SourceType::Trust,
            id: Some(id),
        },
        template: TemplateKey::TrustVerificationDecided,
        channels: None,
    }
}

/// Tenants the platform flagged: a risk signal, or an open review (a risk flag or a score
/// drop), newest tenants first, with their signals. Platform data, never shown to tenants.
#[utoipa::path(get, path = "/api/v1/admin/risk", tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of flagged tenants", body = Page<RiskAssessment>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit)"),
    ))]
pub async fn admin_risk(
    State(state): State<AppState>,
    PlatformAdmin(admin): PlatformAdmin,
    Query(query): Query<PageQuery>,
) -> AppResult<Page<RiskAssessment>> {
    let page = query.parse()?;
    audit::record(
        &state.metrics,
        &admin.subject,
        None,
        "risk.listed",
        json!({}),
    );
    let rows = state
        .db
        .platform()
        .await?
        .query(
            "SELECT id, name, slug, status, status_reason, trust_level, trust_score, risk_level,
                    risk_signals, risk_assessed_at, review_reason, review_opened_at
             FROM tenants
             WHERE (risk_level <> 'none' OR review_opened_at IS NOT NULL)
               AND ($1::uuid IS NULL OR id < $1)
             ORDER BY id DESC LIMIT $2",
            &[&page.after, &(page.limit + 1)],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(RiskAssessment {
                tenant_id: r.get(0),
                name: r.get(1),
                slug: r.get(2),
                status: match r.get::<_, &str>(3) {
                    "suspended" => TenantStatus::Suspended,
                    _ => TenantStatus::Active,
                },
                status_reason: r.get(4),
                trust_level: r.get(5),
                score: r.get(6),
                risk_level: r.get(7),
                signals: crate::commerce::json_column(r, "risk_signals")?,
                assessed_at: r.get(9),
                review_reason: r.get(10),
                review_opened_at: r.get(11),
            })
        })
        .collect::<Result<Vec<_>, crate::db::DbError>>()?;
    Ok(Page::from_rows(items, page, |r: &RiskAssessment| {
        r.tenant_id
    }))
}
