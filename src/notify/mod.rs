//! Notifications (SPEC §8, docs/NOTIFICATIONS.md): stored per recipient, delivered in-app
//! (stored and pushed on the recipient's `notifications` WebSocket channel), by email (SMTP)
//! and by SMS (Twilio) through a durable outbox in PostgreSQL.
//!
//! To send one from a feature, inside the transaction of the change it is about:
//!
//! ```ignore
//! let tx = ctx.db().begin().await?;
//! // ... the change ...
//! let sent = state.notifier.enqueue(&tx, NewNotification { .. }, Recipients::Managers).await?;
//! tx.commit().await?;
//! state.notifier.published(sent); // the live push, and the outbox woken
//! ```
//!
//! The notification rows and their outbox rows commit with the caller's change, or not at
//! all; a delivery that is queued is sent by the outbox workers (this instance's or
//! another's) even across a crash. [`Notifier::enqueue_code`] sends a one-time code to an
//! address that need not be a user's (one delivery, never skipped for trust or opt-outs).

pub mod choice;
pub mod email;
pub mod model;
pub mod outbox;
pub mod purge;
pub mod routes;
pub mod sms;
pub mod store;
pub mod templates;
pub mod webhook;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::NotifyConfig;
use crate::db::{DbError, TenantTx};
use crate::monitoring::hub::fanout::Publisher;
use crate::monitoring::hub::{Channel, Event};
use crate::monitoring::rules::engine::{AfterCommit, AlertHook};
use crate::monitoring::rules::model::{Alert, CompiledRule, NotifyChannel};
use crate::tenancy::model::Role;
use crate::trust::level::Feature;
use choice::{Configured, Recipient};
use model::{DeliveryStatus, Notification, Preferences, Priority, Settings, Source, SourceType};
use templates::TemplateKey;

/// At most this many recipients per notification (the first by id beyond it).
pub const MAX_FANOUT: i64 = 1_000;

/// A notification to store for each of its recipients.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub title: String,
    pub body: String,
    pub priority: Priority,
    pub category: String,
    /// A JSON object.
    pub metadata: Value,
    pub source: Source,
    /// The template its email and SMS are rendered from.
    pub template: TemplateKey,
    /// The variables the key adds to every key's (`order`, `alert` and `rule`, `trust`): a
    /// JSON object.
    pub variables: Value,
    /// The channels to use instead of the tenant's settings for this priority (an alert
    /// rule's `channels`).
    pub channels: Option<Vec<NotifyChannel>>,
}

/// Who gets a notification: active members only.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Owners and admins.
    Managers,
    Users(Vec<Uuid>),
    Roles(Vec<Role>),
    /// Everyone listed, and everyone with one of the roles.
    UsersAndRoles(Vec<Uuid>, Vec<Role>),
}

impl Recipients {
    fn lists(self) -> (Vec<Uuid>, Vec<String>) {
        let roles = |roles: Vec<Role>| roles.iter().map(|r| r.as_str().to_string()).collect();
        match self {
            Self::Managers => (Vec::new(), roles(vec![Role::Owner, Role::Admin])),
            Self::Users(ids) => (ids, Vec::new()),
            Self::Roles(r) => (Vec::new(), roles(r)),
            Self::UsersAndRoles(ids, r) => (ids, roles(r)),
        }
    }
}

/// What to do once the transaction that enqueued has committed: push the in-app
/// notifications live, wake the outbox for the email and SMS queued.
#[must_use = "hand it to Notifier::published after the commit"]
#[derive(Debug, Default)]
pub struct Enqueued {
    tenant_id: Uuid,
    /// (recipient, notification) of each in-app delivery.
    live: Vec<(Uuid, Notification)>,
    /// Some delivery waits for the outbox.
    queued: bool,
    /// The notifications stored, in recipient order.
    pub notification_ids: Vec<Uuid>,
}

/// Whether the tenant's trust level unlocks `channel`: email and SMS are trust features
/// (SPEC §6, the table in `trust::level`), in-app always is. Verification codes do not ask:
/// the one place that knows the rule.
pub fn channel_unlocked(level: i16, channel: NotifyChannel) -> bool {
    match channel {
        NotifyChannel::InApp => true,
        NotifyChannel::Email => Feature::EmailNotifications.available_at(level),
        NotifyChannel::Sms => Feature::SmsNotifications.available_at(level),
    }
}

/// The trust level of the tenant `tx` works in, as it is now.
async fn trust_level_in(tx: &TenantTx) -> Result<i16, DbError> {
    Ok(tx
        .query_one(
            "SELECT trust_level FROM tenants WHERE id = $1",
            &[&tx.tenant_id()],
        )
        .await?
        .get(0))
}

/// The entry point of features that notify: enqueues in their transaction, publishes after.
#[derive(Clone)]
pub struct Notifier {
    clock: Arc<dyn Clock>,
    configured: Configured,
    /// `None`: nothing is pushed live (the demo seed, which runs without a server).
    publisher: Option<Publisher>,
    wake: outbox::Wake,
}

/// A recipient as read for a notification.
struct Member {
    id: Uuid,
    email: String,
    phone: Option<String>,
    preferences: Preferences,
}

impl Notifier {
    pub fn new(
        config: &NotifyConfig,
        clock: Arc<dyn Clock>,
        publisher: Publisher,
        wake: outbox::Wake,
    ) -> Self {
        Self {
            clock,
            configured: Configured {
                email: config.smtp.is_some(),
                sms: config.twilio.is_some(),
            },
            publisher: Some(publisher),
            wake,
        }
    }

    /// For work done without a server (the demo seed): no live push; email and SMS are
    /// skipped as not configured.
    pub fn offline(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            configured: Configured {
                email: false,
                sms: false,
            },
            publisher: None,
            wake: outbox::Wake::default(),
        }
    }

    /// Stores `n` for each of `to` (active members, at most [`MAX_FANOUT`]) with a delivery
    /// per channel, in `tx`; its title and body are cut to what a notification holds. Returns what to hand to [`Notifier::published`] after the commit.
    pub async fn enqueue(
        &self,
        tx: &TenantTx,
        n: NewNotification,
        to: Recipients,
    ) -> Result<Enqueued, DbError> {
        let n = NewNotification {
            title: model::fit(&n.title, model::MAX_TITLE),
            body: model::fit(&n.body, model::MAX_BODY),
            ..n
        };
        let tenant = tx.tenant_id();
        let (user_ids, roles) = to.lists();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&tenant, &user_ids, &roles, &MAX_FANOUT];
        let members = tx.query(
            "SELECT u.id, u.email, u.phone, p.opt_outs, p.quiet_hours, p.locale
             FROM users u LEFT JOIN notification_preferences p
                  ON p.tenant_id = u.tenant_id AND p.user_id = u.id
             WHERE u.tenant_id = $1 AND u.is_active AND (u.id = ANY($2) OR u.role = ANY($3))
             ORDER BY u.id LIMIT $4",
            &params,
        );
        let settings = store::settings_in(tx);
        let level = trust_level_in(tx);
        // One round trip: the three reads are pipelined on the transaction's connection.
        let (members, settings, level) = tokio::join!(members, settings, level);
        let members: Vec<Member> = members?
            .iter()
            .map(|r| {
                Ok(Member {
                    id: r.get("id"),
                    email: r.get("email"),
                    phone: r.get("phone"),
                    preferences: store::preferences_of(r)?,
                })
            })
            .collect::<Result<_, DbError>>()?;
        let settings: Settings = settings?;
        let channels = n
            .channels
            .clone()
            .unwrap_or_else(|| settings.channels.of(n.priority).to_vec());
        let level = level?;
        let now = self.clock.now();
        let mut rows = store::NewRows::default();
        let mut out = Enqueued {
            tenant_id: tenant,
            ..Default::default()
        };
        for member in &members {
            let id = Uuid::now_v7();
            rows.notification(id, member.id);
            out.notification_ids.push(id);
            for channel in &channels {
                let to = Recipient {
                    email: Some(member.email.as_str()),
                    phone: member.phone.as_deref(),
                    preferences: &member.preferences,
                };
                let start = choice::start(
                    *channel,
                    n.priority,
                    &n.category,
                    &to,
                    channel_unlocked(level, *channel),
                    self.configured,
                    now,
                );
                if *channel == NotifyChannel::InApp && start.status == DeliveryStatus::Delivered {
                    out.live.push((member.id, notification_of(&n, id, now)));
                }
                out.queued |= start.status == DeliveryStatus::Queued;
                rows.delivery(id, *channel, &member.preferences.locale, start);
            }
        }
        if !members.is_empty() {
            store::insert(tx, &n, &rows, now).await?;
        }
        Ok(out)
    }

    /// Queues a one-time `code` to `address` on `channel` (email or SMS; verification.code):
    /// one delivery with no notification, never skipped for trust nor opted out (skipped only
    /// when the channel is not configured).
    pub async fn enqueue_code(
        &self,
        tx: &TenantTx,
        channel: NotifyChannel,
        address: &str,
        code: &str,
        locale: &str,
    ) -> Result<Enqueued, DbError> {
        let now = self.clock.now();
        let configured = match channel {
            NotifyChannel::Email => self.configured.email,
            NotifyChannel::Sms => self.configured.sms,
            NotifyChannel::InApp => false,
        };
        let (status, reason) = if configured {
            (DeliveryStatus::Queued, None)
        } else {
            (
                DeliveryStatus::Skipped,
                Some(format!("{} is not configured", channel.as_str())),
            )
        };
        let variables = json!({
            "title": "Verification code",
            "body": "",
            "priority": Priority::High.as_str(),
            "category": "verification",
            "metadata": {},
            "code": code,
        });
        store::insert_code(
            tx, channel, address, locale, &variables, status, reason, now,
        )
        .await?;
        Ok(Enqueued {
            tenant_id: tx.tenant_id(),
            queued: configured,
            ..Default::default()
        })
    }

    /// After the commit: pushes each in-app notification to its recipient's `notifications`
    /// channel and wakes the outbox when something was queued.
    pub fn published(&self, sent: Enqueued) {
        let events: Vec<Event> = sent
            .live
            .iter()
            .filter_map(|(user, notification)| {
                Some(Event {
                    tenant_id: sent.tenant_id,
                    channel: Channel::Notifications,
                    user_id: Some(*user),
                    data: serde_json::to_value(notification).ok()?,
                })
            })
            .collect();
        if let Some(publisher) = &self.publisher {
            publisher.publish(&events);
        }
        if sent.queued {
            self.wake.tenant(sent.tenant_id);
        }
    }
}

/// The stored notification as its recipient sees it (what the push carries).
fn notification_of(n: &NewNotification, id: Uuid, now: DateTime<Utc>) -> Notification {
    Notification {
        id,
        title: n.title.clone(),
        body: n.body.clone(),
        priority: n.priority,
        colour: n.priority.colour(),
        category: n.category.clone(),
        metadata: n.metadata.clone(),
        source: n.source,
        read_at: None,
        created_at: now,
    }
}

/// An alert notifies its rule's recipients (default owners and admins) on the rule's
/// channels (default the tenant's settings), severity as priority, in the alert's
/// transaction; the notification's source is the alert.
impl AlertHook for Notifier {
    fn fired<'a>(
        &'a self,
        tx: &'a TenantTx,
        rule: &'a CompiledRule,
        alert: &'a Alert,
    ) -> BoxFuture<'a, Result<AfterCommit, DbError>> {
        Box::pin(async move {
            let (user_ids, roles) = rule
                .recipients
                .as_ref()
                .map(|r| {
                    (
                        r.user_ids.clone().unwrap_or_default(),
                        r.roles.clone().unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            let to = if user_ids.is_empty() && roles.is_empty() {
                Recipients::Managers
            } else {
                Recipients::UsersAndRoles(user_ids, roles)
            };
            let n = NewNotification {
                title: format!("Alert: {}", rule.name),
                body: format!(
                    "{} matching event(s) between {} and {}.",
                    alert.event_count,
                    alert.first_event_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    alert.last_event_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                priority: Priority::of_severity(alert.severity),
                category: "alerts".into(),
                metadata: json!({"rule_id": rule.id, "group_key": alert.group_key}),
                source: Source {
                    kind: SourceType::Alert,
                    id: Some(alert.id),
                },
                template: TemplateKey::AlertTriggered,
                variables: json!({
                    "alert": alert,
                    "rule": {"id": rule.id, "name": rule.name, "key": rule.key,
                             "severity": rule.severity},
                }),
                channels: rule.channels.clone(),
            };
            let sent = self.enqueue(tx, n, to).await?;
            let notifier = self.clone();
            Ok(Box::new(move || notifier.published(sent)) as AfterCommit)
        })
    }
}
