//! Audit events of platform admins: every action on a tenant, reads included, is logged on
//! the `audit` target with the acting subject, and counted by action.

use serde_json::Value;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Records that `actor` did `action` (e.g. `tenant.read`) on `tenant`.
pub fn record(
    metrics: &Metrics,
    actor: &str,
    tenant: Option<Uuid>,
    action: &'static str,
    details: Value,
) {
    metrics.audit_event(action);
    match tenant {
        Some(tenant_id) => {
            tracing::info!(target: "audit", actor, %tenant_id, action, %details, "platform admin action")
        }
        None => tracing::info!(target: "audit", actor, action, %details, "platform admin action"),
    }
}
