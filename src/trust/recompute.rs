//! Where a tenant's level is decided: the recompute (promotion, grace period, demotion, risk
//! review and suspension), the platform admin's override, and the trust document that
//! explains the result. One tenant at a time, in that tenant's transaction, under the lock
//! of its row of `tenants`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::level::{self, PREMIUM};
use super::model::{Grace, NextLevel, TrustDocument, Verification, VerificationStatus};
use super::platform::SharedPhone;
use super::risk::{self, SHARED_PHONE, Signal};
use super::score::{self, Factor, Standing};
use super::store::{self, Outcome, TrustRow};
use crate::clock::Clock;
use crate::db::{Conn, Db, DbError, TenantTx};
use crate::monitoring::activity::model::Category;
use crate::monitoring::activity::{ActivitySink, Change, Recorder};
use crate::notify::model::{Priority, Source, SourceType};
use crate::notify::templates::TemplateKey;
use crate::notify::{Enqueued, NewNotification, Notifier, Recipients};
use crate::tenancy::directory::{Directory, Invalidation};
use crate::tenancy::model::Role;

/// A score this much below the last one opens a review for platform admins.
pub const SCORE_DROP: i16 = 20;

/// The trust service: what the routes, the admin endpoints and the recompute job share.
#[derive(Clone)]
pub struct Trust {
    db: Db,
    clock: Arc<dyn Clock>,
    /// How long a tenant keeps a level whose requirements it no longer meets.
    grace: Duration,
    directory: Directory,
    sink: Arc<dyn ActivitySink>,
    /// Level changes, grace periods and suspensions are told to the tenant's owners.
    notifier: Notifier,
}

/// What a tenant's figures say, as of one instant.
struct Evaluation {
    factors: Vec<Factor>,
    score: i16,
    verifications: Vec<Verification>,
    standing: Standing,
}

/// What the recompute decides about the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes.
    Stay,
    /// The requirements of a higher level are met.
    Promote(i16),
    /// The level's requirements are no longer met: the grace period starts now.
    StartGrace,
    /// They are met again before the grace period ended.
    EndGrace,
    /// The grace period is over: down to the level whose requirements are met.
    Demote(i16),
}

/// The level decision (a locked level never moves, nor starts a grace period).
pub fn decide(
    level: i16,
    locked: bool,
    qualified: i16,
    grace_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Step {
    if locked {
        return if grace_started.is_some() {
            Step::EndGrace
        } else {
            Step::Stay
        };
    }
    match (qualified.cmp(&level), grace_started) {
        (std::cmp::Ordering::Greater, _) => Step::Promote(qualified),
        (std::cmp::Ordering::Equal, Some(_)) => Step::EndGrace,
        (std::cmp::Ordering::Equal, None) => Step::Stay,
        (std::cmp::Ordering::Less, None) => Step::StartGrace,
        (std::cmp::Ordering::Less, Some(started)) if now >= started + grace => {
            Step::Demote(qualified)
        }
        (std::cmp::Ordering::Less, Some(_)) => Step::Stay,
    }
}

impl Trust {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        grace: std::time::Duration,
        directory: Directory,
        sink: Arc<dyn ActivitySink>,
        notifier: Notifier,
    ) -> Self {
        Self {
            db,
            clock,
            grace: Duration::from_std(grace).unwrap_or(Duration::days(7)),
            directory,
            sink,
            notifier,
        }
    }

    /// Queues `notice` for the tenant's owners in `tx`.
    async fn tell_owners(
        &self,
        tx: &TenantTx,
        notice: NewNotification,
    ) -> Result<Enqueued, DbError> {
        self.notifier
            .enqueue(tx, notice, Recipients::Roles(vec![Role::Owner]))
            .await
    }

    async fn evaluate(
        &self,
        conn: &Conn,
        tenant_id: Uuid,
        row: &TrustRow,
        review_open: bool,
        risk_flagged: bool,
        now: DateTime<Utc>,
    ) -> Result<Evaluation, DbError> {
        let (figures, verifications) = tokio::try_join!(
            store::figures(conn, tenant_id, now, row.created_at, risk_flagged),
            store::verifications(conn, tenant_id)
        )?;
        let factors = score::factors(&figures);
        let score = score::score(&factors);
        let standing = Standing {
            verified: verifications
                .iter()
                .filter(|v| v.status == VerificationStatus::Verified)
                .map(|v| v.kind)
                .collect(),
            score,
            account_age_days: figures.account_age_days,
            delivered_orders: figures.delivered,
            review_open,
        };
        Ok(Evaluation {
            factors,
            score,
            verifications,
            standing,
        })
    }

    fn document(&self, row: &TrustRow, eval: Evaluation, now: DateTime<Utc>) -> TrustDocument {
        let level = row.level;
        let grace = row.grace_started_at.map(|started_at| Grace {
            started_at,
            ends_at: started_at + self.grace,
            unmet: score::unmet(level, &eval.standing),
        });
        let next_level = (level < PREMIUM).then(|| NextLevel {
            level: level + 1,
            level_name: level::level_name(level + 1),
            requirements: score::requirements(level + 1, &eval.standing),
        });
        TrustDocument {
            level,
            level_name: level::level_name(level),
            score: eval.score,
            locked: row.locked,
            reason: row.reason.clone(),
            factors: eval.factors,
            verifications: eval.verifications,
            features: level::features_at(level),
            product_cap: level::product_cap(level),
            grace,
            next_level,
            computed_at: now,
        }
    }

    /// The trust document as things stand (read only).
    pub async fn explain(&self, tenant_id: Uuid) -> Result<TrustDocument, DbError> {
        let now = self.clock.now();
        let tx = self.db.for_tenant(tenant_id).begin().await?;
        let row = store::trust_row(&tx, tenant_id).await?;
        let flagged = risk::flagged(&row.risk_signals);
        let eval = self
            .evaluate(
                &tx,
                tenant_id,
                &row,
                row.review_opened_at.is_some(),
                flagged,
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(self.document(&row, eval, now))
    }

    /// The tenant's verifications (read only).
    pub async fn verifications(&self, tenant_id: Uuid) -> Result<Vec<Verification>, DbError> {
        let tx = self.db.for_tenant(tenant_id).begin().await?;
        let all = store::verifications(&tx, tenant_id).await?;
        tx.commit().await?;
        Ok(all)
    }

    /// Recomputes one tenant: score, risk signals (`shared_phone`: the cluster pass's finding of
    /// how many other tenants share a customer phone with it; `None` keeps the last finding),
    /// review, level and grace, suspension. Every change is an activity (category `trust`) in
    /// the same transaction.
    pub async fn recompute(
        &self,
        tenant_id: Uuid,
        shared_phone: Option<SharedPhone>,
    ) -> Result<TrustDocument, DbError> {
        let now = self.clock.now();
        let tx = self.db.for_tenant(tenant_id).begin().await?;
        let mut row = store::lock_trust_row(&tx).await?;

        // The full windows, and the evidence newer than an admin's reactivation (what may
        // suspend again) and override (what may open a review again).
        let (counts, since_reactivation, since_override) = tokio::try_join!(
            risk::counts(&tx, tenant_id, now, None),
            risk::counts_since(&tx, tenant_id, now, row.reactivated_at),
            risk::counts_since(&tx, tenant_id, now, row.overridden_at),
        )?;
        let mut signals = risk::assess(&counts);
        match shared_phone {
            Some(found) => signals.extend(risk::shared_phone(found.others)),
            None => signals.extend(
                row.risk_signals
                    .iter()
                    .filter(|s| s.name == SHARED_PHONE)
                    .cloned(),
            ),
        }
        // Every signal is kept for platform admins; only the tenant's own doing counts against
        // it (failed authentications do not).
        let risk_level = risk::level(&signals);
        let flagged = risk::flagged(&signals);
        // A review needs evidence the last override has not seen: the tenant's own signals
        // from the override on, and the shared phones that ordered since (only the cluster
        // pass knows those; a one-tenant recompute keeps its finding for the list alone).
        let mut fresh = risk::assess(&since_override.unwrap_or(counts));
        fresh.extend(shared_phone.and_then(|found| risk::shared_phone(found.since_mark)));

        // The review is decided on the score without it, then counted in the requirements.
        let mut eval = self
            .evaluate(
                &tx,
                tenant_id,
                &row,
                row.review_opened_at.is_some(),
                flagged,
                now,
            )
            .await?;
        let review_reason = match row.review_opened_at {
            Some(_) => None,
            None if risk::flagged(&fresh) => Some(review_for(&fresh)),
            None => score_drop(&row, eval.score),
        };
        eval.standing.review_open = row.review_opened_at.is_some() || review_reason.is_some();
        let qualified = score::qualified_level(&eval.standing);
        let step = decide(
            row.level,
            row.locked,
            qualified,
            row.grace_started_at,
            now,
            self.grace,
        );

        let mut changes = Vec::new();
        let mut notices = Vec::new();
        let from = row.level;
        let (level, grace_started_at, reason) = match step {
            Step::Stay => (row.level, row.grace_started_at, None),
            Step::EndGrace => {
                changes.push(trust_change(
                    "trust.grace_ended",
                    tenant_id,
                    json!({"level": row.level}),
                ));
                (row.level, None, None)
            }
            Step::StartGrace => {
                let unmet = score::unmet(row.level, &eval.standing);
                let ends_at = now + self.grace;
                changes.push(trust_change(
                    "trust.grace_started",
                    tenant_id,
                    json!({"level": row.level, "ends_at": ends_at, "unmet": unmet}),
                ));
                notices.push(level_notice(
                    tenant_id,
                    row.level,
                    qualified,
                    format!(
                        "Your trust level {} ({}) drops on {} unless it is met again",
                        row.level,
                        level::level_name(row.level),
                        ends_at.format("%Y-%m-%d %H:%M UTC")
                    ),
                    format!("Level {} needs: {}.", row.level, unmet.join(", ")),
                    Priority::High,
                ));
                (row.level, Some(now), None)
            }
            Step::Promote(to) => (
                to,
                None,
                Some(format!(
                    "Promoted: the requirements of level {to} ({}) are met.",
                    level::level_name(to)
                )),
            ),
            Step::Demote(to) => {
                let unmet = score::unmet(from, &eval.standing);
                (
                    to,
                    None,
                    Some(format!(
                        "Demoted after the grace period: level {from} needs {}.",
                        unmet.join(", ")
                    )),
                )
            }
        };
        if let Some(reason) = &reason {
            changes.push(trust_change(
                "trust.level_changed",
                tenant_id,
                json!({"from": from, "to": level, "reason": reason}),
            ));
            notices.push(changed_notice(tenant_id, from, level, reason));
        }
        // A platform admin's reactivation sticks: only evidence newer than it suspends again
        // (the windows can hold the burst that led to the suspension for up to a day).
        let fresh = risk::assess(&since_reactivation.unwrap_or(counts));
        let critical: Vec<&str> = risk::against_tenant(&fresh, risk::RiskSeverity::Critical)
            .map(|s| s.detail.as_str())
            .collect();
        let suspend_reason = (!critical.is_empty() && !row.suspended).then(|| {
            let since = row
                .reactivated_at
                .filter(|at| *at > now - Duration::days(1))
                .map(|at| {
                    format!(
                        " (counted since the reactivation at {})",
                        at.format("%Y-%m-%d %H:%M UTC")
                    )
                })
                .unwrap_or_default();
            format!(
                "Suspended automatically for review: {}{since}.",
                critical.join("; ")
            )
        });
        if let Some(why) = &suspend_reason {
            changes.push(trust_change(
                "trust.suspended",
                tenant_id,
                json!({"reason": why}),
            ));
            notices.push(NewNotification {
                title: "Your store is suspended".into(),
                body: why.clone(),
                priority: Priority::Urgent,
                category: "trust".into(),
                metadata: json!({"status": "suspended"}),
                source: Source {
                    kind: SourceType::Trust,
                    id: Some(tenant_id),
                },
                template: TemplateKey::ManualMessage,
                variables: json!({}),
                channels: None,
            });
        }
        store::save_outcome(
            &tx,
            &Outcome {
                level,
                reason: reason.as_deref(),
                level_changed: reason.is_some(),
                score: eval.score,
                now,
                grace_started_at,
                suspend_reason: suspend_reason.as_deref(),
                risk_level,
                risk_signals: &signals,
                review_reason: review_reason.as_deref(),
            },
        )
        .await?;
        let mut sent = Vec::with_capacity(notices.len());
        for notice in notices {
            sent.push(self.tell_owners(&tx, notice).await?);
        }
        let visible = reason.is_some() || suspend_reason.is_some();
        self.finish(tx, tenant_id, changes, visible, sent).await?;

        row.level = level;
        row.grace_started_at = grace_started_at;
        if reason.is_some() {
            row.reason = reason;
        }
        Ok(self.document(&row, eval, now))
    }

    /// The recompute after a verification changed (a code confirmed, a document decided, the
    /// seller profile saved), so a promotion follows at once. The change itself is committed:
    /// a failure here is logged, and the recompute job catches up.
    pub async fn verifications_changed(&self, tenant_id: Uuid) {
        if let Err(e) = self.recompute(tenant_id, None).await {
            tracing::warn!(%tenant_id, error = %e, "trust recompute after a verification failed");
        }
    }

    /// A platform admin's override: sets the level with a reason, locked or not; closes the
    /// tenant's open review.
    pub async fn set_level(
        &self,
        tenant_id: Uuid,
        level: i16,
        reason: &str,
        locked: bool,
    ) -> Result<TrustDocument, DbError> {
        let now = self.clock.now();
        let tx = self.db.for_tenant(tenant_id).begin().await?;
        let mut row = store::lock_trust_row(&tx).await?;
        let flagged = risk::flagged(&row.risk_signals);
        let eval = self
            .evaluate(&tx, tenant_id, &row, false, flagged, now)
            .await?;
        store::save_override(
            &tx,
            &store::Override {
                level,
                reason,
                locked,
                score: Some(eval.score),
                now,
            },
        )
        .await?;
        let mut changes = Vec::new();
        let mut sent = Vec::new();
        if level != row.level {
            changes.push(trust_change(
                "trust.level_changed",
                tenant_id,
                json!({"from": row.level, "to": level, "reason": reason, "locked": locked}),
            ));
            sent.push(
                self.tell_owners(&tx, changed_notice(tenant_id, row.level, level, reason))
                    .await?,
            );
        } else if locked != row.locked {
            changes.push(trust_change(
                if locked {
                    "trust.locked"
                } else {
                    "trust.unlocked"
                },
                tenant_id,
                json!({"level": level, "reason": reason}),
            ));
        }
        let changed = level != row.level;
        row.level = level;
        row.locked = locked;
        row.reason = Some(reason.to_string());
        row.grace_started_at = None;
        row.review_opened_at = None;
        self.finish(tx, tenant_id, changes, changed, sent).await?;
        Ok(self.document(&row, eval, now))
    }

    /// Records the changes' activities and commits; a change the directory caches (the level,
    /// the status) is announced to every instance; the notifications go out after the commit.
    async fn finish(
        &self,
        tx: TenantTx,
        tenant_id: Uuid,
        changes: Vec<Change>,
        announce: bool,
        sent: Vec<Enqueued>,
    ) -> Result<(), DbError> {
        if announce {
            Directory::announce(&tx, &Invalidation::tenant(tenant_id)).await?;
        }
        Recorder::system_to(tenant_id, self.sink.clone())
            .commit_all(tx, changes)
            .await?;
        if announce {
            self.directory
                .invalidate(&Invalidation::tenant(tenant_id))
                .await;
        }
        for enqueued in sent {
            self.notifier.published(enqueued);
        }
        Ok(())
    }
}

/// A notice about the level, for the owners (template `trust.level_changed`).
fn level_notice(
    tenant_id: Uuid,
    from: i16,
    to: i16,
    title: String,
    body: String,
    priority: Priority,
) -> NewNotification {
    NewNotification {
        variables: json!({"trust": {
            "from": from, "to": to, "level_name": level::level_name(to), "reason": body
        }}),
        title,
        body,
        priority,
        category: "trust".into(),
        metadata: json!({"from": from, "to": to}),
        source: Source {
            kind: SourceType::Trust,
            id: Some(tenant_id),
        },
        template: TemplateKey::TrustLevelChanged,
        channels: None,
    }
}

/// The owners' notice of a level change: a promotion is news, a demotion needs attention.
fn changed_notice(tenant_id: Uuid, from: i16, to: i16, reason: &str) -> NewNotification {
    let title = format!("Your trust level is now {to} ({})", level::level_name(to));
    let priority = if to < from {
        Priority::High
    } else {
        Priority::Medium
    };
    level_notice(tenant_id, from, to, title, reason.to_string(), priority)
}

fn trust_change(action: &'static str, tenant_id: Uuid, details: serde_json::Value) -> Change {
    Change::new(action, "tenant", tenant_id)
        .category(Category::Trust)
        .details(details)
}

/// A score-drop review's reason: a drop of [`SCORE_DROP`] since the last recompute, or since
/// the last override (the score an admin saw then; so a slow slide after it counts too).
fn score_drop(row: &TrustRow, score: i16) -> Option<String> {
    if let Some(last) = row.score.filter(|last| last - score >= SCORE_DROP) {
        return Some(format!("The trust score dropped from {last} to {score}."));
    }
    let (at, then) = row.overridden_at.zip(row.override_score)?;
    (then - score >= SCORE_DROP).then(|| {
        format!(
            "The trust score dropped from {then} at the override of {} to {score}.",
            at.format("%Y-%m-%d %H:%M UTC")
        )
    })
}

/// What an admin reads first in a review opened by risk signals.
fn review_for(signals: &[Signal]) -> String {
    let high: Vec<String> = risk::against_tenant(signals, risk::RiskSeverity::High)
        .map(|s| format!("{} ({})", s.name, s.detail))
        .collect();
    format!("Risk signals: {}.", high.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(score: i16, override_score: Option<i16>) -> TrustRow {
        let now = Utc::now();
        TrustRow {
            level: 2,
            locked: false,
            reason: None,
            score: Some(score),
            computed_at: Some(now),
            grace_started_at: None,
            suspended: false,
            status_reason: None,
            risk_signals: Vec::new(),
            review_opened_at: None,
            created_at: now - Duration::days(200),
            reactivated_at: None,
            overridden_at: override_score.map(|_| now - Duration::days(2)),
            override_score,
        }
    }

    #[test]
    fn after_an_override_only_a_further_drop_below_its_score_opens_a_review() {
        // A drop since the last recompute, with or without an override.
        let reason = score_drop(&standing(80, None), 55).unwrap();
        assert_eq!(reason, "The trust score dropped from 80 to 55.");
        assert!(score_drop(&standing(80, None), 61).is_none());
        // The admin overrode at 50 (the score the review was about): the same score, or a
        // few points less, opens none; a slide of 20 below it does, step by step or not.
        assert!(score_drop(&standing(50, Some(50)), 50).is_none());
        assert!(score_drop(&standing(45, Some(50)), 35).is_none());
        let slid = score_drop(&standing(35, Some(50)), 30).unwrap();
        assert!(
            slid.starts_with("The trust score dropped from 50 at the override of "),
            "{slid}"
        );
        assert!(slid.ends_with(" to 30."), "{slid}");
    }

    #[test]
    fn promotion_grace_and_demotion() {
        let now = Utc::now();
        let week = Duration::days(7);
        assert_eq!(decide(0, false, 2, None, now, week), Step::Promote(2));
        assert_eq!(decide(2, false, 2, None, now, week), Step::Stay);
        assert_eq!(decide(3, false, 2, None, now, week), Step::StartGrace);
        let started = now - Duration::days(3);
        assert_eq!(decide(3, false, 2, Some(started), now, week), Step::Stay);
        assert_eq!(
            decide(3, false, 3, Some(started), now, week),
            Step::EndGrace
        );
        let long_ago = now - Duration::days(8);
        assert_eq!(
            decide(3, false, 1, Some(long_ago), now, week),
            Step::Demote(1)
        );
        // A locked level neither moves nor waits for a demotion.
        assert_eq!(decide(3, true, 0, None, now, week), Step::Stay);
        assert_eq!(decide(0, true, 3, None, now, week), Step::Stay);
        assert_eq!(
            decide(3, true, 0, Some(long_ago), now, week),
            Step::EndGrace
        );
    }
}
