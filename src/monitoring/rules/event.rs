//! The activity log's rows as the rules engine reads them.

use std::borrow::Cow;

use serde_json::Value;

use super::condition::{EventFields, Field, FieldValue};
use crate::monitoring::activity::model::Activity;

fn text(value: &Option<String>) -> Option<FieldValue<'_>> {
    value.as_deref().map(|s| FieldValue::Text(Cow::Borrowed(s)))
}

fn id(value: Option<uuid::Uuid>) -> Option<FieldValue<'static>> {
    value.map(|id| FieldValue::Text(Cow::Owned(id.to_string())))
}

impl EventFields for Activity {
    fn field(&self, field: &Field) -> Option<FieldValue<'_>> {
        match field {
            Field::Id => id(Some(self.id)),
            Field::Actor => id(self.actor),
            Field::ActorType => Some(FieldValue::Text(Cow::Borrowed(self.actor_type.as_str()))),
            Field::Action => Some(FieldValue::Text(Cow::Borrowed(&self.action))),
            Field::Category => Some(FieldValue::Text(Cow::Borrowed(self.category.as_str()))),
            Field::Method => text(&self.method),
            Field::Route => text(&self.route),
            Field::ResourceType => text(&self.resource_type),
            Field::ResourceId => id(self.resource_id),
            Field::Status => self.status.map(|s| FieldValue::Number(f64::from(s))),
            Field::LatencyMs => self.latency_ms.map(|l| FieldValue::Number(f64::from(l))),
            Field::Ip => text(&self.ip),
            Field::UserAgent => text(&self.user_agent),
            Field::RequestId => text(&self.request_id),
            Field::CreatedAt => Some(FieldValue::Time(self.created_at)),
            Field::Details(key) => match self.details.get(key)? {
                Value::Null => None,
                Value::Bool(b) => Some(FieldValue::Bool(*b)),
                Value::Number(n) => n.as_f64().map(FieldValue::Number),
                Value::String(s) => Some(FieldValue::Text(Cow::Borrowed(s))),
                other => Some(FieldValue::Json(other)),
            },
        }
    }
}
