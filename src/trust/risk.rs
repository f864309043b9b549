//! Risk signals (SPEC §6): what the platform watches in a tenant's own activity, against the
//! tenant's own baseline. Computed by platform code only (the recompute), stored on the
//! platform's row of the tenant and shown to platform admins (`GET /api/v1/admin/risk`),
//! never to the tenant. The one signal that reads several tenants, a customer phone ordering
//! across many of them, is computed by `platform::shared_phones`. Only the signals of the
//! tenant's own doing count against it ([`Signal::counts_against_tenant`]).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::{Conn, DbError, Params};

crate::commerce::text_enum! {
    /// How bad a signal is: `high` opens a review for platform admins, `critical` also
    /// suspends the tenant at once.
    RiskSeverity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
}

impl RiskSeverity {
    fn rank(self) -> u8 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Critical => 4,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Signal {
    /// `order_velocity`, `cancellation_burst`, `dispute_burst`, `auth_failure_burst` (shown
    /// only: anyone naming the tenant can cause it, so it never counts against the tenant),
    /// `shared_customer_phone`.
    pub name: String,
    pub severity: RiskSeverity,
    /// What was measured (orders in the last hour, cancellations, tenants, ...).
    pub value: f64,
    /// The threshold it passed.
    pub threshold: f64,
    pub detail: String,
}

/// The signal of several tenants sharing a customer phone.
pub const SHARED_PHONE: &str = "shared_customer_phone";

/// The signal of failed authentications naming the tenant.
pub const AUTH_FAILURES: &str = "auth_failure_burst";

impl Signal {
    /// Whether the signal may lower the tenant's standing (open a review, count as a
    /// compliance flag, suspend). Failed authentications may not: a stranger causes them by
    /// naming the tenant (a garbage key ending in its id, a bad token with its `X-Tenant-ID`),
    /// so they are shown to platform admins and nothing more.
    pub fn counts_against_tenant(&self) -> bool {
        self.name != AUTH_FAILURES
    }
}

/// The highest severity among `signals` (`none` without any): what platform admins see.
pub fn level(signals: &[Signal]) -> &'static str {
    signals
        .iter()
        .map(|s| s.severity)
        .max_by_key(|s| s.rank())
        .map_or("none", RiskSeverity::as_str)
}

/// The signals that count against the tenant and are at least `severity`.
pub fn against_tenant(signals: &[Signal], severity: RiskSeverity) -> impl Iterator<Item = &Signal> {
    signals
        .iter()
        .filter(move |s| s.counts_against_tenant() && s.severity.rank() >= severity.rank())
}

/// Whether a signal of the tenant's own doing is high or critical: a risk flag, which opens a
/// review and counts as a compliance flag.
pub fn flagged(signals: &[Signal]) -> bool {
    against_tenant(signals, RiskSeverity::High).next().is_some()
}

/// What a tenant's own data says, as of `now`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Orders placed in the last hour, and in the 7 days before it.
    pub orders_last_hour: i64,
    pub orders_prior_week: i64,
    /// Orders placed in the last 24 hours, and how many of them are cancelled.
    pub orders_last_day: i64,
    pub cancelled_last_day: i64,
    /// Orders moved to `disputed` in the last 24 hours.
    pub disputes_last_day: i64,
    /// Failed authentications recorded in the tenant's log in the last hour (anyone's: shown
    /// to platform admins, never held against the tenant).
    pub auth_failures_last_hour: i64,
}

/// The smallest UUID v7 of instant `t`: activity ids are UUID v7, so an id range is a time
/// range on the activity log's action index.
fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let millis = t.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

/// Reads [`Counts`] for the tenant (two statements, pipelined). With `since`, the evidence
/// (every window but the baseline's week) is counted only from that instant on: what an
/// admin's reactivation or override has not seen yet.
pub async fn counts(
    conn: &Conn,
    tenant_id: Uuid,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Result<Counts, DbError> {
    let from = |window: DateTime<Utc>| since.map_or(window, |at| at.max(window));
    let hour = from(now - Duration::hours(1));
    let day = from(now - Duration::days(1));
    let week_before = now - Duration::hours(1) - Duration::days(7);
    let (day_id, hour_id) = (uuid_v7_floor(day), uuid_v7_floor(hour));
    let baseline_end = now - Duration::hours(1);
    let orders_params: Params = &[&tenant_id, &hour, &day, &week_before, &baseline_end];
    let orders = conn.query_one(
        "SELECT count(*) FILTER (WHERE created_at >= $2),
                count(*) FILTER (WHERE created_at < $5),
                count(*) FILTER (WHERE created_at >= $3),
                count(*) FILTER (WHERE created_at >= $3 AND status = 'cancelled')
         FROM orders WHERE tenant_id = $1 AND created_at >= $4",
        orders_params,
    );
    let activity_params: Params = &[&tenant_id, &day_id, &hour_id];
    let activity = conn.query_one(
        "SELECT
             (SELECT count(*) FROM activities
              WHERE tenant_id = $1 AND action = 'order.status_changed' AND id >= $2
                AND details->>'to' = 'disputed'),
             (SELECT count(*) FROM activities
              WHERE tenant_id = $1 AND action = 'auth.failed' AND id >= $3)",
        activity_params,
    );
    let (orders, activity) = tokio::try_join!(orders, activity)?;
    Ok(Counts {
        orders_last_hour: orders.get(0),
        orders_prior_week: orders.get(1),
        orders_last_day: orders.get(2),
        cancelled_last_day: orders.get(3),
        disputes_last_day: activity.get(0),
        auth_failures_last_hour: activity.get(1),
    })
}

/// [`counts`] from `since` on, when an evidence window reaches back past it (`None`: the
/// full windows' counts apply as they are).
pub async fn counts_since(
    conn: &Conn,
    tenant_id: Uuid,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Result<Option<Counts>, DbError> {
    match since {
        Some(at) if at > now - Duration::days(1) => {
            counts(conn, tenant_id, now, Some(at)).await.map(Some)
        }
        _ => Ok(None),
    }
}

fn signal(
    name: &str,
    severity: RiskSeverity,
    value: f64,
    threshold: f64,
    detail: String,
) -> Signal {
    Signal {
        name: name.into(),
        severity,
        value,
        threshold,
        detail,
    }
}

/// The tenant's own signals (docs/TRUST.md, "Risk signals" gives every threshold).
pub fn assess(c: &Counts) -> Vec<Signal> {
    let mut found = Vec::new();
    // Velocity: the last hour against the tenant's average hour of the week before (at least
    // half an order an hour, so a new tenant's first sales are compared with something).
    let baseline = (c.orders_prior_week as f64 / (7.0 * 24.0)).max(0.5);
    let hour = c.orders_last_hour as f64;
    let velocity = match () {
        _ if c.orders_last_hour >= 200 && hour >= 50.0 * baseline => {
            Some((RiskSeverity::Critical, 50.0 * baseline))
        }
        _ if c.orders_last_hour >= 20 && hour >= 10.0 * baseline => {
            Some((RiskSeverity::High, 10.0 * baseline))
        }
        _ => None,
    };
    if let Some((severity, threshold)) = velocity {
        found.push(signal(
            "order_velocity",
            severity,
            hour,
            threshold,
            format!(
                "{} orders in the last hour against a baseline of {baseline:.1} an hour",
                c.orders_last_hour
            ),
        ));
    }
    if c.cancelled_last_day >= 10 && c.cancelled_last_day * 2 >= c.orders_last_day {
        found.push(signal(
            "cancellation_burst",
            RiskSeverity::High,
            c.cancelled_last_day as f64,
            10.0,
            format!(
                "{} of the {} orders of the last 24 hours were cancelled",
                c.cancelled_last_day, c.orders_last_day
            ),
        ));
    }
    let disputes = match c.disputes_last_day {
        n if n >= 50 => Some((RiskSeverity::Critical, 50.0)),
        n if n >= 5 => Some((RiskSeverity::High, 5.0)),
        _ => None,
    };
    if let Some((severity, threshold)) = disputes {
        found.push(signal(
            "dispute_burst",
            severity,
            c.disputes_last_day as f64,
            threshold,
            format!(
                "{} orders disputed in the last 24 hours",
                c.disputes_last_day
            ),
        ));
    }
    let failures = match c.auth_failures_last_hour {
        n if n >= 1000 => Some((RiskSeverity::High, 1000.0)),
        n if n >= 100 => Some((RiskSeverity::Medium, 100.0)),
        _ => None,
    };
    if let Some((severity, threshold)) = failures {
        found.push(signal(
            AUTH_FAILURES,
            severity,
            c.auth_failures_last_hour as f64,
            threshold,
            format!(
                "{} failed authentications in the last hour (anyone naming the tenant can \
                 cause them: shown, never held against it)",
                c.auth_failures_last_hour
            ),
        ));
    }
    found
}

/// The shared-phone signal for a tenant whose customers' phones also ordered at `others`
/// other tenants (the most for any one phone) in the last 7 days.
pub fn shared_phone(others: i64) -> Option<Signal> {
    let severity = match others {
        n if n >= 10 => RiskSeverity::High,
        n if n >= 3 => RiskSeverity::Medium,
        _ => return None,
    };
    Some(signal(
        SHARED_PHONE,
        severity,
        others as f64,
        if severity == RiskSeverity::High {
            10.0
        } else {
            3.0
        },
        format!(
            "a customer phone of this tenant also ordered at {others} other tenants in the last 7 days"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_is_measured_against_the_tenants_own_baseline() {
        let busy = Counts {
            orders_last_hour: 60,
            orders_prior_week: 7 * 24 * 50,
            ..Default::default()
        };
        assert!(assess(&busy).is_empty(), "a busy seller's normal hour");
        let spike = Counts {
            orders_last_hour: 60,
            orders_prior_week: 7 * 24,
            ..Default::default()
        };
        assert_eq!(assess(&spike)[0].severity, RiskSeverity::High);
        let new = Counts {
            orders_last_hour: 250,
            ..Default::default()
        };
        assert_eq!(assess(&new)[0].severity, RiskSeverity::Critical);
        assert_eq!(level(&assess(&new)), "critical");
        let small = Counts {
            orders_last_hour: 8,
            ..Default::default()
        };
        assert!(assess(&small).is_empty(), "a few first sales are no burst");
    }

    #[test]
    fn bursts_and_shared_phones() {
        let c = Counts {
            orders_last_day: 12,
            cancelled_last_day: 10,
            disputes_last_day: 6,
            auth_failures_last_hour: 150,
            ..Default::default()
        };
        let names: Vec<String> = assess(&c).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["cancellation_burst", "dispute_burst", "auth_failure_burst"]
        );
        assert!(flagged(&assess(&c)), "cancellations and disputes");
        assert_eq!(shared_phone(2), None);
        assert_eq!(shared_phone(3).unwrap().severity, RiskSeverity::Medium);
        assert_eq!(shared_phone(12).unwrap().severity, RiskSeverity::High);
    }

    #[test]
    fn failed_authentications_are_shown_but_never_flag_the_tenant() {
        let c = Counts {
            auth_failures_last_hour: 5000,
            ..Default::default()
        };
        let found = assess(&c);
        assert_eq!(found[0].name, AUTH_FAILURES);
        assert_eq!(level(&found), "high");
        assert!(!flagged(&found));
        assert_eq!(against_tenant(&found, RiskSeverity::Low).count(), 0);
    }

    #[test]
    fn the_id_floor_orders_with_real_ids() {
        let t = Utc::now() - Duration::seconds(5);
        let floor = uuid_v7_floor(t);
        assert!(Uuid::now_v7() > floor);
        assert!(uuid_v7_floor(t - Duration::seconds(1)) < floor);
        assert_eq!(floor.get_version_num(), 7);
    }
}
