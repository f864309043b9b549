//! SQL of trust, against a tenant transaction (every statement also filters the tenant
//! explicitly): the tenant's standing (its row of the platform table `tenants`), the figures
//! the score is computed from, verifications, one-time codes and document submissions.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::model::{NewDocument, Verification, VerificationKind, VerificationStatus};
use super::risk::Signal;
use super::score::{FULFILMENT_GRACE_DAYS, Figures, RESPONSE_NONE};
use crate::commerce::profile::model::SellerProfile;
use crate::db::{Conn, DbError, OnConstraint, Params, TenantTx, Violation};

/// What can go wrong with verifications, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no such verification")]
    NotFound,
    /// A document submission while one is pending or verified, or a decision on a decided one.
    #[error("the verification is {0:?}")]
    InvalidState(VerificationStatus),
    /// `media_ids[i]` is not a media of this tenant.
    #[error("media_ids[{0}]: media missing")]
    MediaMissing(usize),
    /// The last code was sent less than a minute ago, or five in the last hour: retry in
    /// this many seconds.
    #[error("code sent too recently")]
    ResendTooSoon(u64),
    /// No live code: used, expired or voided (or never sent).
    #[error("no live code")]
    CodeExpired,
    /// A wrong code; this many tries are left (0: the code is void now).
    #[error("wrong code")]
    CodeInvalid(i16),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Violation for TrustError {
    fn violated(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.violated(),
            _ => None,
        }
    }
}

type Result<T, E = TrustError> = std::result::Result<T, E>;

/// A tenant's standing as the platform keeps it (its row of `tenants`).
#[derive(Debug, Clone)]
pub struct TrustRow {
    pub level: i16,
    pub locked: bool,
    pub reason: Option<String>,
    pub score: Option<i16>,
    pub computed_at: Option<DateTime<Utc>>,
    pub grace_started_at: Option<DateTime<Utc>>,
    pub suspended: bool,
    pub status_reason: Option<String>,
    pub risk_signals: Vec<Signal>,
    pub review_opened_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When a platform admin last set the suspended tenant active again.
    pub reactivated_at: Option<DateTime<Utc>>,
    /// When a platform admin last overrode the level, and the score then.
    pub overridden_at: Option<DateTime<Utc>>,
    pub override_score: Option<i16>,
}

const STANDING: &str = "SELECT trust_level, trust_locked, trust_reason, trust_score, \
    trust_computed_at, trust_grace_started_at, status, status_reason, risk_signals, \
    review_opened_at, created_at, reactivated_at, trust_overridden_at, trust_override_score \
    FROM tenants WHERE id = $1";

fn trust_row_from(row: &tokio_postgres::Row) -> Result<TrustRow, DbError> {
    Ok(TrustRow {
        level: row.get(0),
        locked: row.get(1),
        reason: row.get(2),
        score: row.get(3),
        computed_at: row.get(4),
        grace_started_at: row.get(5),
        suspended: row.get::<_, &str>(6) == "suspended",
        status_reason: row.get(7),
        risk_signals: crate::commerce::json_column(row, "risk_signals")?,
        review_opened_at: row.get(9),
        created_at: row.get(10),
        reactivated_at: row.get(11),
        overridden_at: row.get(12),
        override_score: row.get(13),
    })
}

/// The tenant's standing, as read now.
pub async fn trust_row(conn: &Conn, tenant_id: Uuid) -> Result<TrustRow, DbError> {
    let row = conn.query_one(STANDING, &[&tenant_id]).await?;
    trust_row_from(&row)
}

/// The tenant's standing, locked for the rest of `tx` (every change to a tenant's trust
/// holds this lock, so recomputes, overrides and decisions of one tenant serialise).
pub async fn lock_trust_row(tx: &TenantTx) -> Result<TrustRow, DbError> {
    let row = tx
        .query_one(&format!("{STANDING} FOR UPDATE"), &[&tx.tenant_id()])
        .await?;
    trust_row_from(&row)
}

/// Writes what a recompute found and decided.
pub struct Outcome<'a> {
    pub level: i16,
    pub reason: Option<&'a str>,
    pub level_changed: bool,
    pub score: i16,
    pub now: DateTime<Utc>,
    pub grace_started_at: Option<DateTime<Utc>>,
    pub suspend_reason: Option<&'a str>,
    pub risk_level: &'a str,
    pub risk_signals: &'a [Signal],
    pub review_reason: Option<&'a str>,
}

pub async fn save_outcome(tx: &TenantTx, o: &Outcome<'_>) -> Result<(), DbError> {
    let signals = crate::commerce::to_json(&o.risk_signals)?;
    tx.execute(
        "UPDATE tenants SET
             trust_level = $2,
             trust_reason = CASE WHEN $3 THEN $4 ELSE trust_reason END,
             trust_changed_at = CASE WHEN $3 THEN $6 ELSE trust_changed_at END,
             trust_score = $5, trust_computed_at = $6,
             trust_grace_started_at = $7,
             status = CASE WHEN $8::text IS NULL THEN status ELSE 'suspended' END,
             status_reason = coalesce($8, status_reason),
             risk_level = $9, risk_signals = $10, risk_assessed_at = $6,
             review_reason = CASE WHEN $11::text IS NULL THEN review_reason ELSE $11 END,
             review_opened_at = CASE WHEN $11::text IS NULL THEN review_opened_at ELSE $6 END,
             updated_at = CASE WHEN $3 OR $8::text IS NOT NULL THEN now() ELSE updated_at END
         WHERE id = $1",
        &[
            &tx.tenant_id(),
            &o.level,
            &o.level_changed,
            &o.reason,
            &o.score,
            &o.now,
            &o.grace_started_at,
            &o.suspend_reason,
            &o.risk_level,
            &signals,
            &o.review_reason,
        ],
    )
    .await?;
    Ok(())
}

/// A platform admin's override.
pub struct Override<'a> {
    pub level: i16,
    pub reason: &'a str,
    pub locked: bool,
    /// The score as the admin saw it (none for the demo's seed, made before any score).
    pub score: Option<i16>,
    pub now: DateTime<Utc>,
}

/// Saves an override: the level, its reason and lock, and when and at which score it was
/// made (a new review needs evidence newer than that); the open review is closed and any
/// grace period ends (an admin has looked at the tenant).
pub async fn save_override(tx: &TenantTx, o: &Override<'_>) -> Result<(), DbError> {
    tx.execute(
        "UPDATE tenants SET trust_level = $2, trust_reason = $3, trust_locked = $4,
             trust_changed_at = $5, trust_grace_started_at = NULL,
             trust_score = coalesce($6, trust_score), trust_overridden_at = $5,
             trust_override_score = $6,
             review_reason = NULL, review_opened_at = NULL, updated_at = now()
         WHERE id = $1",
        &[
            &tx.tenant_id(),
            &o.level,
            &o.reason,
            &o.locked,
            &o.now,
            &o.score,
        ],
    )
    .await?;
    Ok(())
}

/// The figures of the score's factors for the tenant as of `now` (docs/TRUST.md gives
/// each window). Four statements, pipelined on the transaction's connection.
pub async fn figures(
    conn: &Conn,
    tenant_id: Uuid,
    now: DateTime<Utc>,
    created_at: DateTime<Utc>,
    risk_flagged: bool,
) -> Result<Figures, DbError> {
    let days = |n: i64| now - Duration::days(n);
    let (d1, d3, d30, d90, d180) = (
        days(1),
        days(FULFILMENT_GRACE_DAYS),
        days(30),
        days(90),
        days(180),
    );
    let orders_params: Params = &[&tenant_id, &d90, &d3];
    let orders = conn.query_one(
        "SELECT
             count(*) FILTER (WHERE created_at < $3),
             count(*) FILTER (WHERE created_at < $3
                                AND status IN ('shipped', 'delivered', 'disputed')),
             count(*),
             count(*) FILTER (WHERE status = 'cancelled'),
             count(*) FILTER (WHERE status IN ('shipped', 'delivered', 'disputed')),
             count(*) FILTER (WHERE status = 'disputed'),
             count(*) FILTER (WHERE status = 'delivered')
         FROM orders WHERE tenant_id = $1 AND created_at >= $2",
        orders_params,
    );
    let history_params: Params = &[&tenant_id, &d180];
    let history = conn.query_one(
        "SELECT
             (SELECT count(*) FROM orders WHERE tenant_id = $1 AND status = 'delivered'),
             (SELECT count(*) FROM order_ratings WHERE tenant_id = $1 AND created_at >= $2),
             (SELECT coalesce(sum(stars), 0) FROM order_ratings
              WHERE tenant_id = $1 AND created_at >= $2),
             (SELECT count(*) FROM trust_verifications
              WHERE tenant_id = $1 AND status = 'rejected' AND decided_at >= $2)",
        history_params,
    );
    // A thread counts when its customer first wrote in the window and was answered, or has
    // waited more than a day (then it counts as a day).
    let responses_params: Params = &[&tenant_id, &d30, &d1, &RESPONSE_NONE];
    let responses = conn.query_one(
        "WITH asked AS (
             SELECT thread_id, min(created_at) AS at FROM conversation_history
             WHERE tenant_id = $1 AND sender_type = 'customer' AND created_at >= $2
             GROUP BY thread_id),
         waits AS (
             SELECT extract(epoch FROM coalesce(
                 (SELECT min(h.created_at) FROM conversation_history h
                  WHERE h.tenant_id = $1 AND h.thread_id = a.thread_id
                    AND h.sender_type <> 'customer' AND h.created_at >= a.at),
                 CASE WHEN a.at < $3 THEN a.at + make_interval(secs => $4) END) - a.at)::float8 AS s
             FROM asked a)
         SELECT count(s), percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM waits",
        responses_params,
    );
    let (orders, history, responses) = tokio::try_join!(orders, history, responses)?;
    Ok(Figures {
        account_age_days: (now - created_at).num_days().max(0),
        fulfilment_orders: orders.get(0),
        fulfilled: orders.get(1),
        orders: orders.get(2),
        cancelled: orders.get(3),
        shipped: orders.get(4),
        disputed: orders.get(5),
        delivered: orders.get(6),
        settled: history.get(0),
        ratings: history.get(1),
        rating_stars: history.get(2),
        compliance_flags: history.get::<_, i64>(3) + i64::from(risk_flagged),
        response_threads: responses.get(0),
        median_response_seconds: responses.get(1),
    })
}

/// Every kind's verification, in the list's order; business information and store setup
/// as the seller profile makes them.
pub async fn verifications(conn: &Conn, tenant_id: Uuid) -> Result<Vec<Verification>, DbError> {
    let params: Params = &[&tenant_id];
    let rows_sql = format!(
        "SELECT {} FROM trust_verifications v WHERE v.tenant_id = $1",
        Verification::COLUMNS
    );
    let profile_sql = format!(
        "SELECT {} FROM seller_profiles WHERE tenant_id = $1",
        SellerProfile::COLUMNS
    );
    let rows = conn.query(&rows_sql, params);
    let profile = conn.query_opt(&profile_sql, params);
    let (rows, profile) = tokio::try_join!(rows, profile)?;
    let profile = profile.map(|r| SellerProfile::from_row(&r)).transpose()?;
    let mut all = rows
        .iter()
        .map(Verification::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    for v in &mut all {
        v.derive(profile.as_ref());
    }
    all.sort_by_key(|v| VerificationKind::ALL.iter().position(|k| *k == v.kind));
    Ok(all)
}

/// One verification by kind, locked for the rest of `tx`.
async fn lock_kind(tx: &TenantTx, kind: VerificationKind) -> Result<(Uuid, VerificationStatus)> {
    let row = tx
        .query_opt(
            "SELECT id, status FROM trust_verifications
             WHERE tenant_id = $1 AND kind = $2 FOR UPDATE",
            &[&tx.tenant_id(), &kind],
        )
        .await?
        .ok_or(TrustError::NotFound)?;
    Ok((row.get(0), row.get(1)))
}

/// One verification, as the API shows it.
pub async fn verification(conn: &Conn, tenant_id: Uuid, id: Uuid) -> Result<Verification> {
    let row = conn
        .query_opt(
            &format!(
                "SELECT {} FROM trust_verifications v WHERE v.tenant_id = $1 AND v.id = $2",
                Verification::COLUMNS
            ),
            &[&tenant_id, &id],
        )
        .await?
        .ok_or(TrustError::NotFound)?;
    Ok(Verification::from_row(&row)?)
}

/// A code's hash: SHA-256 of its id and its six digits (the id salts it, so equal codes
/// hash apart).
pub fn code_hash(id: Uuid, code: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    hasher.update(code.as_bytes());
    hasher.finalize().into()
}

/// At most one code a minute and five an hour, per kind.
const RESEND_AFTER: Duration = Duration::seconds(60);
const CODES_PER_HOUR: i64 = 5;
pub const CODE_LIFETIME: Duration = Duration::minutes(10);
pub const CODE_TRIES: i16 = 5;

/// Stores a new code for `kind` to `address` (the earlier live ones are voided) and marks the
/// verification pending; returns the verification's id and the code's expiry. Throttled: 429 when the last code
/// went out less than a minute ago, or five did in the last hour.
pub async fn new_code(
    tx: &TenantTx,
    kind: VerificationKind,
    address: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<(Uuid, DateTime<Utc>)> {
    let tenant_id = tx.tenant_id();
    let (verification_id, _) = lock_kind(tx, kind).await?;
    let recent = tx
        .query_one(
            "SELECT count(*), max(created_at), min(created_at) FROM trust_codes
             WHERE tenant_id = $1 AND kind = $2 AND created_at > $3",
            &[&tenant_id, &kind, &(now - Duration::hours(1))],
        )
        .await?;
    let (sent, last, first): (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (recent.get(0), recent.get(1), recent.get(2));
    let wait = match (last, first) {
        (Some(last), _) if now - last < RESEND_AFTER => Some(last + RESEND_AFTER - now),
        (_, Some(first)) if sent >= CODES_PER_HOUR => Some(first + Duration::hours(1) - now),
        _ => None,
    };
    if let Some(wait) = wait {
        return Err(TrustError::ResendTooSoon(wait.num_seconds().max(1) as u64));
    }
    tx.execute(
        "UPDATE trust_codes SET voided_at = $3
         WHERE tenant_id = $1 AND kind = $2 AND used_at IS NULL AND voided_at IS NULL",
        &[&tenant_id, &kind, &now],
    )
    .await?;
    let id = Uuid::now_v7();
    let expires_at = now + CODE_LIFETIME;
    tx.execute(
        "INSERT INTO trust_codes (tenant_id, id, kind, address, code_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &tenant_id,
            &id,
            &kind,
            &address,
            &code_hash(id, code).as_slice(),
            &now,
            &expires_at,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE trust_verifications SET status = 'pending', address = $3, reason = NULL,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &verification_id, &address],
    )
    .await?;
    Ok((verification_id, expires_at))
}

/// Checks `code` against the live code of `kind`. Right: the code is used and the
/// verification verified (its id is returned). Wrong: one try is spent (the fifth voids the
/// code) and [`TrustError::CodeInvalid`] says how many are left; the caller commits either way.
pub async fn confirm_code(
    tx: &TenantTx,
    kind: VerificationKind,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Result<Uuid>> {
    let tenant_id = tx.tenant_id();
    let (verification_id, _) = lock_kind(tx, kind).await?;
    let Some(live) = tx
        .query_opt(
            "SELECT id, code_hash, attempts, address FROM trust_codes
             WHERE tenant_id = $1 AND kind = $2 AND used_at IS NULL AND voided_at IS NULL
               AND expires_at > $3
             ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
            &[&tenant_id, &kind, &now],
        )
        .await?
    else {
        return Ok(Err(TrustError::CodeExpired));
    };
    let id: Uuid = live.get(0);
    let stored: &[u8] = live.get(1);
    let attempts: i16 = live.get(2);
    let address: String = live.get(3);
    if !constant_time_eq(&code_hash(id, code), stored) {
        let attempts = attempts + 1;
        let void = (attempts >= CODE_TRIES).then_some(now);
        tx.execute(
            "UPDATE trust_codes SET attempts = $3, voided_at = $4
             WHERE tenant_id = $1 AND id = $2",
            &[&tenant_id, &id, &attempts, &void],
        )
        .await?;
        return Ok(Err(TrustError::CodeInvalid(CODE_TRIES - attempts)));
    }
    tx.execute(
        "UPDATE trust_codes SET used_at = $3 WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &id, &now],
    )
    .await?;
    tx.execute(
        "UPDATE trust_verifications SET status = 'verified', address = $3, reason = NULL,
             decided_at = $4, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &verification_id, &address, &now],
    )
    .await?;
    Ok(Ok(verification_id))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Records a document submission: its files and fields replace the last ones, it goes to
/// `pending` and into the platform's review queue. Refused while one is pending or verified.
pub async fn submit_document(tx: &TenantTx, doc: &NewDocument, now: DateTime<Utc>) -> Result<Uuid> {
    let tenant_id = tx.tenant_id();
    let (id, status) = lock_kind(tx, doc.kind).await?;
    if matches!(
        status,
        VerificationStatus::Pending | VerificationStatus::Verified
    ) {
        return Err(TrustError::InvalidState(status));
    }
    let found: Vec<Uuid> = tx
        .query(
            "SELECT id FROM media WHERE tenant_id = $1 AND id = ANY($2)",
            &[&tenant_id, &doc.media_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(i) = doc.media_ids.iter().position(|m| !found.contains(m)) {
        return Err(TrustError::MediaMissing(i));
    }
    tx.execute(
        "DELETE FROM verification_media WHERE tenant_id = $1 AND verification_id = $2",
        &[&tenant_id, &id],
    )
    .await?;
    tx.execute(
        "INSERT INTO verification_media (tenant_id, verification_id, media_id, position)
         SELECT $1, $2, m.id, (m.n - 1)::smallint
         FROM unnest($3::uuid[]) WITH ORDINALITY AS m(id, n)",
        &[&tenant_id, &id, &doc.media_ids],
    )
    .await
    .on_constraint("verification_media_media_fkey", || {
        TrustError::MediaMissing(0)
    })?;
    let submission = Uuid::now_v7();
    let fields = json!(doc.fields);
    tx.execute(
        "UPDATE trust_verifications SET status = 'pending', reason = NULL, fields = $3,
             submission_id = $4, submitted_at = $5, decided_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &id, &fields, &submission, &now],
    )
    .await?;
    tx.execute(
        "INSERT INTO verification_queue (verification_id, tenant, kind, status, submission_id,
             submitted_at)
         VALUES ($1, $2, $3, 'pending', $4, $5)
         ON CONFLICT (verification_id) DO UPDATE SET status = 'pending',
             submission_id = EXCLUDED.submission_id, submitted_at = EXCLUDED.submitted_at,
             decided_at = NULL",
        &[&id, &tenant_id, &doc.kind, &submission, &now],
    )
    .await?;
    Ok(id)
}

/// A platform admin's decision on a pending document: verified or rejected with `reason`.
/// A decided one is [`TrustError::InvalidState`]. Returns its kind.
pub async fn decide_document(
    tx: &TenantTx,
    id: Uuid,
    approve: bool,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<VerificationKind> {
    let tenant_id = tx.tenant_id();
    let row = tx
        .query_opt(
            "SELECT kind, status FROM trust_verifications
             WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tenant_id, &id],
        )
        .await?
        .ok_or(TrustError::NotFound)?;
    let (kind, status): (VerificationKind, VerificationStatus) = (row.get(0), row.get(1));
    if status != VerificationStatus::Pending || !kind.is_document() {
        return Err(TrustError::InvalidState(status));
    }
    let decided = if approve {
        VerificationStatus::Verified
    } else {
        VerificationStatus::Rejected
    };
    tx.execute(
        "UPDATE trust_verifications SET status = $3, reason = $4, decided_at = $5,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &id, &decided, &reason, &now],
    )
    .await?;
    tx.execute(
        "UPDATE verification_queue SET status = $2, decided_at = $3 WHERE verification_id = $1",
        &[&id, &decided, &now],
    )
    .await?;
    Ok(kind)
}
