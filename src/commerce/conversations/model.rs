//! Messages and threads, the posted message and its validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::commerce::{Channel, text_enum};
use crate::error::{AppError, Fields};
use crate::types;

text_enum! {
    /// Who wrote a message.
    SenderType {
        Customer => "customer",
        Merchant => "merchant",
        Bot => "bot",
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub thread_id: Uuid,
    pub customer_handle: String,
    pub channel: Channel,
    pub sender_type: SenderType,
    pub message: String,
    #[schema(required = true)]
    pub order_id: Option<Uuid>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// Columns of `conversation_history h`.
    pub const COLUMNS: &'static str = "h.id, h.thread_id, h.customer_handle, h.channel, \
        h.sender_type, h.message, h.order_id, h.created_at";

    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            thread_id: row.get("thread_id"),
            customer_handle: row.get("customer_handle"),
            channel: row.get("channel"),
            sender_type: row.get("sender_type"),
            message: row.get("message"),
            order_id: row.get("order_id"),
            created_at: row.get("created_at"),
        }
    }
}

/// The newest message of a thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastMessage {
    pub id: Uuid,
    pub sender_type: SenderType,
    pub message: String,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Thread {
    pub thread_id: Uuid,
    pub customer_handle: String,
    pub channel: Channel,
    pub last_message: LastMessage,
    /// Customer messages since the last merchant or bot message.
    #[schema(minimum = 0)]
    pub unread_count: i32,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl Thread {
    pub fn from_row(row: &Row) -> Self {
        Self {
            thread_id: row.get("thread_id"),
            customer_handle: row.get("customer_handle"),
            channel: row.get("channel"),
            last_message: LastMessage {
                id: row.get("last_id"),
                sender_type: row.get("last_sender_type"),
                message: row.get("last_message"),
                created_at: row.get("last_created_at"),
            },
            unread_count: row.get("unread_count"),
            created_at: row.get("created_at"),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "customer_handle": "+5511912345678",
    "channel": "whatsapp",
    "sender_type": "customer",
    "message": "Oi! Do you have the Ipê tee in M?"
}))]
pub struct PostMessage {
    /// The customer's address on the channel (phone number, @handle, visitor id); with
    /// `channel` it names the thread.
    #[schema(schema_with = types::schema::name::<200>)]
    pub customer_handle: String,
    pub channel: Channel,
    pub sender_type: SenderType,
    /// 1-4096 characters, not blank, no NUL (PostgreSQL text cannot hold it).
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub message: String,
    /// An order of this tenant the message is about.
    pub order_id: Option<Uuid>,
}

pub struct NewMessage {
    pub customer_handle: String,
    pub channel: Channel,
    pub sender_type: SenderType,
    pub message: String,
    pub order_id: Option<Uuid>,
}

impl PostMessage {
    pub fn validate(self) -> Result<NewMessage, AppError> {
        let mut f = Fields::default();
        let customer_handle = f.check("customer_handle", types::name(&self.customer_handle, 200));
        let message = match self.message.trim() {
            "" => {
                f.fail("message", "must not be empty");
                None
            }
            _ if self.message.chars().count() > 4096 => {
                f.fail("message", "must be at most 4096 characters");
                None
            }
            _ if self.message.contains('\0') => {
                f.fail("message", "must not contain NUL characters");
                None
            }
            _ => Some(self.message),
        };
        f.finish(|| {
            Some(NewMessage {
                customer_handle: customer_handle?,
                channel: self.channel,
                sender_type: self.sender_type,
                message: message?,
                order_id: self.order_id,
            })
        })
    }
}
