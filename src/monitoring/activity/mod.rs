//! The activity log (SPEC §7): a data change writes its activity in its own transaction
//! ([`Recorder`]); every other tenant-scoped request, auth failure and rate-limit rejection
//! goes through the batch [`writer`]. Durable rows are handed to the [`ActivitySink`].

pub mod model;
pub mod routes;
pub mod store;
pub mod writer;

use std::sync::Arc;

use uuid::Uuid;

use crate::db::{DbError, TenantTx};
use crate::scope::RequestScope;
use model::{Activity, ActorType, Category, NewActivity};

/// Where activities go once they are durable (after their COMMIT): the rules engine and the
/// WebSocket hub. Called on the request's or the writer's task, so it must not block.
pub trait ActivitySink: Send + Sync + 'static {
    fn recorded(&self, batch: &[Activity]);
}

/// The sink until something listens.
pub struct NoSink;

impl ActivitySink for NoSink {
    fn recorded(&self, _: &[Activity]) {}
}

/// A data change, as its activity names it.
#[derive(Debug, Clone)]
pub struct Change {
    /// `<resource>.<verb>`, e.g. `product.created`.
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Uuid,
    /// The success status the handler answers.
    pub status: u16,
    pub details: serde_json::Value,
    /// `data` unless said otherwise (trust changes are `trust`).
    pub category: Category,
}

impl Change {
    pub fn new(action: &'static str, resource_type: &'static str, resource_id: Uuid) -> Self {
        let status = match action.rsplit('.').next() {
            Some("created" | "uploaded" | "message_posted" | "rated") => 201,
            Some("deleted") => 204,
            _ => 200,
        };
        Self {
            action,
            resource_type,
            resource_id,
            status,
            details: serde_json::json!({}),
            category: Category::Data,
        }
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn category(mut self, category: Category) -> Self {
        self.category = category;
        self
    }
}

/// Writes a data change's activity in the change's own transaction: who (the member), and
/// the request's facts from its [`RequestScope`].
#[derive(Clone)]
pub struct Recorder {
    scope: Option<RequestScope>,
    tenant_id: Uuid,
    actor: Option<Uuid>,
    actor_type: ActorType,
    sink: Arc<dyn ActivitySink>,
}

impl Recorder {
    /// For a request: a member (`user`) or an API key (`api_key`), with its id.
    pub fn actor(
        scope: Option<RequestScope>,
        tenant_id: Uuid,
        actor: Uuid,
        actor_type: ActorType,
        sink: Arc<dyn ActivitySink>,
    ) -> Self {
        Self {
            scope,
            tenant_id,
            actor: Some(actor),
            actor_type,
            sink,
        }
    }

    /// For the service's own changes (the demo seed): actor `system`, no request.
    pub fn system(tenant_id: Uuid) -> Self {
        Self::system_to(tenant_id, Arc::new(NoSink))
    }

    /// For the service's own changes (trust decisions, platform admins' actions on a tenant),
    /// handed to `sink` once durable.
    pub fn system_to(tenant_id: Uuid, sink: Arc<dyn ActivitySink>) -> Self {
        Self {
            scope: None,
            tenant_id,
            actor: None,
            actor_type: ActorType::System,
            sink,
        }
    }

    /// Inserts `change`'s activity and commits `tx` with it (pipelined); after the COMMIT
    /// the activity goes to the sink and the request is marked as recorded.
    pub async fn commit(&self, tx: TenantTx, change: Change) -> Result<(), DbError> {
        let activity = store::stamp(self.new_activity(change));
        store::insert_and_commit(tx, &activity).await?;
        self.recorded(std::slice::from_ref(&activity));
        Ok(())
    }

    /// [`Recorder::commit`] for several changes of one transaction (a bulk import, a trust
    /// decision with its consequences), in one statement.
    pub async fn commit_all(&self, tx: TenantTx, changes: Vec<Change>) -> Result<(), DbError> {
        let activities: Vec<Activity> = changes
            .into_iter()
            .map(|c| store::stamp(self.new_activity(c)))
            .collect();
        if !activities.is_empty() {
            store::insert_many(&tx, &activities).await?;
        }
        tx.commit().await?;
        self.recorded(&activities);
        Ok(())
    }

    fn recorded(&self, activities: &[Activity]) {
        if let Some(scope) = &self.scope {
            scope.mark_data_recorded();
        }
        if !activities.is_empty() {
            self.sink.recorded(activities);
        }
    }

    fn new_activity(&self, change: Change) -> NewActivity {
        let (request, latency_ms) = match &self.scope {
            Some(scope) => (scope.facts().clone(), elapsed_ms(scope)),
            None => (Default::default(), 0),
        };
        NewActivity {
            tenant_id: self.tenant_id,
            actor: self.actor,
            actor_type: self.actor_type,
            action: change.action.to_string(),
            category: change.category,
            request,
            resource_type: Some(change.resource_type),
            resource_id: Some(change.resource_id),
            status: change.status,
            latency_ms,
            details: change.details,
        }
    }
}

/// The request's latency so far, in whole milliseconds.
pub fn elapsed_ms(scope: &RequestScope) -> i32 {
    i32::try_from(scope.started().elapsed().as_millis()).unwrap_or(i32::MAX)
}

/// The activity `observe` records for a finished tenant-scoped request, unless a data change
/// already recorded it: `auth.failed` for a 401, `rate_limited` for a 429, else `request`.
pub fn for_response(scope: &RequestScope, status: u16) -> Option<NewActivity> {
    let slot = scope.activity();
    let tenant_id = slot.tenant?;
    if slot.data_recorded {
        return None;
    }
    let (action, category) = match status {
        401 => ("auth.failed", Category::Auth),
        429 => ("rate_limited", Category::Security),
        _ => ("request", Category::Request),
    };
    Some(NewActivity {
        tenant_id,
        actor: slot.actor,
        actor_type: if slot.api_key {
            ActorType::ApiKey
        } else {
            ActorType::User
        },
        action: action.to_string(),
        category,
        request: scope.facts().clone(),
        resource_type: None,
        resource_id: None,
        status,
        latency_ms: elapsed_ms(scope),
        details: serde_json::json!({}),
    })
}
