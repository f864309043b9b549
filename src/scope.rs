//! The per-request slot that extractors fill and the outer middleware reads on the way out.
//!
//! A leaf: extractors at any layer (auth, tenancy) record what they learn here, and
//! `telemetry::observe` takes it from the request's extensions when the response passes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::HeaderMap;
use tracing::{Span, field};
use uuid::Uuid;

/// Cheap to clone (one reference count): `observe` keeps one, the request's extensions another.
#[derive(Debug, Clone)]
pub struct RequestScope(Arc<ScopeInner>);

#[derive(Debug)]
struct ScopeInner {
    span: Span,
    /// Headers an extractor wants on the response whatever the handler answers (the
    /// rate-limit headers, also on a 429). A std mutex: held only to insert or take, never
    /// across an await.
    headers: Mutex<HeaderMap>,
    /// What the activity log records of this request.
    facts: RequestFacts,
    started: Instant,
    activity: Mutex<ActivitySlot>,
}

/// What a request knows about itself, for the activities it causes (SPEC §7).
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub method: &'static str,
    /// The route template (`/api/v1/products/{id}`).
    pub route: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
}

/// The tenant and member a request acted for, once known, and whether a data change already
/// wrote the request's activity (then `observe` writes no `request` row).
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivitySlot {
    pub tenant: Option<Uuid>,
    /// The member's id, or the API key's.
    pub actor: Option<Uuid>,
    /// The actor is an API key (`actor_type: api_key`), not a member.
    pub api_key: bool,
    pub data_recorded: bool,
}

impl RequestScope {
    /// A scope whose records go into `span` (which declares `tenant_id` and `actor`).
    pub fn new(span: Span, facts: RequestFacts, started: Instant) -> Self {
        Self(Arc::new(ScopeInner {
            span,
            headers: Mutex::new(HeaderMap::new()),
            facts,
            started,
            activity: Mutex::new(ActivitySlot::default()),
        }))
    }

    pub fn record_tenant(&self, tenant_id: Uuid) {
        self.0.span.record("tenant_id", field::display(tenant_id));
        self.slot().tenant = Some(tenant_id);
    }

    /// The member (users row) the request acts as.
    pub fn record_member(&self, user_id: Uuid) {
        self.slot().actor = Some(user_id);
    }

    /// The API key the request acts as.
    pub fn record_api_key(&self, key_id: Uuid) {
        let mut slot = self.slot();
        slot.actor = Some(key_id);
        slot.api_key = true;
    }

    /// A data change wrote this request's activity in its transaction.
    pub fn mark_data_recorded(&self) {
        self.slot().data_recorded = true;
    }

    pub fn activity(&self) -> ActivitySlot {
        *self.slot()
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.0.facts
    }

    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// Held only to read or set a field, never across an await.
    fn slot(&self) -> std::sync::MutexGuard<'_, ActivitySlot> {
        self.0.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record_actor(&self, actor: &str) {
        self.0.span.record("actor", actor);
    }

    /// Adds headers to the response, whatever the handler answers.
    pub fn add_headers(&self, add: impl FnOnce(&mut HeaderMap)) {
        add(&mut self.0.headers.lock().expect("scope headers lock"));
    }

    /// Moves the recorded headers onto `response`.
    pub fn apply_headers(&self, response: &mut HeaderMap) {
        let recorded = std::mem::take(&mut *self.0.headers.lock().expect("scope headers lock"));
        response.extend(recorded);
    }
}
