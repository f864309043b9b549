//! SQL for conversations. Every statement also filters `tenant_id` explicitly.

use uuid::Uuid;

use super::model::{Message, NewMessage, SenderType, Thread};
use crate::db::{DbError, OnConstraint, TenantDb};
use crate::extract::PageRequest;
use crate::monitoring::activity::{Change, Recorder};

/// What can go wrong storing conversations, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("no such thread")]
    ThreadNotFound,
    #[error("no such order")]
    OrderMissing,
    #[error(transparent)]
    Db(#[from] DbError),
}

type Result<T, E = ConversationError> = std::result::Result<T, E>;

/// Stores a message in its thread (made on the customer's first message on a channel), with
/// its activity, in one pooled transaction.
pub async fn post(db: &TenantDb, activity: &Recorder, new: &NewMessage) -> Result<Message> {
    let tx = db.begin().await?;
    let id = Uuid::now_v7();
    let from_customer = new.sender_type == SenderType::Customer;
    let thread_id: Uuid = tx
        .query_one(
            "INSERT INTO conversation_threads AS t
                 (tenant_id, id, customer_handle, channel, last_message_id, unread_count)
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN 1 ELSE 0 END)
             ON CONFLICT (tenant_id, channel, customer_handle) DO UPDATE SET
                 last_message_id = greatest(t.last_message_id, EXCLUDED.last_message_id),
                 unread_count = CASE WHEN $6 THEN t.unread_count + 1 ELSE 0 END
             WHERE t.tenant_id = $1
             RETURNING id",
            &[
                &tx.tenant_id(),
                &Uuid::now_v7(),
                &new.customer_handle,
                &new.channel,
                &id,
                &from_customer,
            ],
        )
        .await?
        .get(0);
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO conversation_history AS h (tenant_id, id, thread_id, customer_handle,
                     channel, sender_type, message, order_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {}",
                Message::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &id,
                &thread_id,
                &new.customer_handle,
                &new.channel,
                &new.sender_type,
                &new.message,
                &new.order_id,
            ],
        )
        .await
        .on_constraint("conversation_history_order_fkey", || {
            ConversationError::OrderMissing
        })?;
    let change = Change::new("conversation.message_posted", "message", id).details(
        serde_json::json!({"thread_id": thread_id, "channel": new.channel, "sender_type": new.sender_type}),
    );
    activity.commit(tx, change).await?;
    Ok(Message::from_row(&row))
}

/// Threads, the one with the newest message first: an index walk, on a read lane.
pub async fn threads(db: &TenantDb, page: PageRequest) -> Result<Vec<Thread>> {
    let rows = db
        .read(
            "SELECT t.id AS thread_id, t.customer_handle, t.channel, t.unread_count,
                    t.created_at, h.id AS last_id, h.sender_type AS last_sender_type,
                    h.message AS last_message, h.created_at AS last_created_at
             FROM conversation_threads t
             JOIN conversation_history h ON h.tenant_id = t.tenant_id AND h.id = t.last_message_id
             WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.last_message_id < $2)
             ORDER BY t.last_message_id DESC LIMIT $3",
            &[&db.tenant_id(), &page.after, &(page.limit + 1)],
        )
        .await?;
    Ok(rows.iter().map(Thread::from_row).collect())
}

/// A thread's messages, newest first (one bounded statement, on a read lane).
pub async fn messages(db: &TenantDb, thread_id: Uuid, page: PageRequest) -> Result<Vec<Message>> {
    // The thread row is always returned (with null message columns past the last page), so
    // one statement tells a missing thread from an empty page.
    let rows = db
        .read(
            &format!(
                "SELECT {} FROM conversation_threads t
                 LEFT JOIN LATERAL (
                     SELECT * FROM conversation_history c
                     WHERE c.tenant_id = t.tenant_id AND c.thread_id = t.id
                       AND ($3::uuid IS NULL OR c.id < $3)
                     ORDER BY c.id DESC LIMIT $4
                 ) h ON true
                 WHERE t.tenant_id = $1 AND t.id = $2
                 ORDER BY h.id DESC",
                Message::COLUMNS
            ),
            &[&db.tenant_id(), &thread_id, &page.after, &(page.limit + 1)],
        )
        .await?;
    if rows.is_empty() {
        return Err(ConversationError::ThreadNotFound);
    }
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, Option<Uuid>>("id").is_some())
        .map(Message::from_row)
        .collect())
}
