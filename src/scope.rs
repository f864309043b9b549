//! The per-request slot that extractors fill and the outer middleware reads on the way out.
//!
//! A leaf: extractors at any layer (auth, tenancy) record what they learn here, and
//! `telemetry::observe` takes it from the request's extensions when the response passes.

use std::sync::{Arc, Mutex};

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
}

impl RequestScope {
    /// A scope whose records go into `span` (which declares `tenant_id` and `actor`).
    pub fn new(span: Span) -> Self {
        Self(Arc::new(ScopeInner {
            span,
            headers: Mutex::new(HeaderMap::new()),
        }))
    }

    pub fn record_tenant(&self, tenant_id: Uuid) {
        self.0.span.record("tenant_id", field::display(tenant_id));
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
