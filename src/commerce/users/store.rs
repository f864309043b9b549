//! SQL for users. Every statement also filters `tenant_id` explicitly (defence in depth
//! beside row-level security, and shard pruning).

use uuid::Uuid;

use super::model::{NewUser, User, UserChange};
use crate::db::{DbError, OnConstraint, TenantDb, TenantTx, Violation};
use crate::extract::PageRequest;
use crate::monitoring::activity::{Change, Recorder};
use crate::tenancy::directory::{Directory, Invalidation};
use crate::tenancy::model::Role;

/// What can go wrong storing users, in storage terms (the routes choose the API's answer).
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no such user")]
    NotFound,
    #[error("the external id is taken")]
    ExternalIdTaken,
    #[error("the email is taken")]
    EmailTaken,
    /// The actor is no longer an active owner or admin (a concurrent change demoted it).
    #[error("the actor may not manage users")]
    ActorNotManager,
    #[error("only an owner may change an owner")]
    OwnerOnly,
    #[error("the last active owner must stay")]
    LastOwner,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Violation for UserError {
    fn violated(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.violated(),
            _ => None,
        }
    }
}

type Result<T, E = UserError> = std::result::Result<T, E>;

/// A page of users, newest first: an index walk, on a read lane.
pub async fn list(db: &TenantDb, page: PageRequest) -> Result<Vec<User>> {
    let rows = db
        .read(
            &format!(
                "SELECT {} FROM users
                 WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
                User::COLUMNS
            ),
            &[&db.tenant_id(), &page.after, &(page.limit + 1)],
        )
        .await?;
    Ok(rows.iter().map(User::from_row).collect())
}

/// One user, by key on a read lane.
pub async fn get(db: &TenantDb, id: Uuid) -> Result<User> {
    db.read_opt(
        &format!(
            "SELECT {} FROM users WHERE tenant_id = $1 AND id = $2",
            User::COLUMNS
        ),
        &[&db.tenant_id(), &id],
    )
    .await?
    .map(|r| User::from_row(&r))
    .ok_or(UserError::NotFound)
}

/// Adds a member, with its activity, in one pooled transaction (the user quota trigger runs
/// in it).
pub async fn create(db: &TenantDb, activity: &Recorder, new: &NewUser) -> Result<User> {
    let tx = db.begin().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO users (tenant_id, id, external_id, email, role, phone)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
                User::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &Uuid::now_v7(),
                &new.external_id,
                &new.email.as_str(),
                &new.role.as_str(),
                &new.phone.as_ref().map(|p| p.as_str()),
            ],
        )
        .await
        .on_constraint("users_external_id_key", || UserError::ExternalIdTaken)
        .on_constraint("users_email_key", || UserError::EmailTaken)?;
    // Other instances may hold a cached "not a member" for this subject.
    announce(&tx, &new.external_id).await?;
    let user = User::from_row(&row);
    let change = Change::new("user.created", "user", user.id)
        .details(serde_json::json!({"role": user.role}));
    activity.commit(tx, change).await?;
    Ok(user)
}

/// Who changes a member: a member (its `users.id`) or an API key (its `api_keys.id`), each
/// acting with its own role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Member(Uuid),
    Key(Uuid),
}

/// What a change to a user is decided on, read under locks.
struct Locked {
    active_owners: usize,
    /// The actor's role now, not as cached when the request began: a concurrent change may
    /// have demoted it.
    actor: Role,
    target: User,
}

/// Locks the tenant's active owners, then the target user (always in this order, so
/// concurrent changes cannot deadlock), and reads the actor's current role: an active
/// member's, or a key's that is not revoked (held FOR SHARE, so a revocation waits for the
/// change or the change sees the key gone).
async fn lock_target(tx: &TenantTx, by: Actor, id: Uuid) -> Result<Locked> {
    let active_owners = tx
        .query(
            "SELECT id FROM users WHERE tenant_id = $1 AND role = 'owner' AND is_active
             ORDER BY id FOR UPDATE",
            &[&tx.tenant_id()],
        )
        .await?
        .len();
    let (sql, actor_id) = match by {
        Actor::Member(id) => (
            "SELECT role FROM users WHERE tenant_id = $1 AND id = $2 AND is_active",
            id,
        ),
        Actor::Key(id) => (
            "SELECT role FROM api_keys WHERE tenant_id = $1 AND id = $2 FOR SHARE",
            id,
        ),
    };
    let actor = tx
        .query_opt(sql, &[&tx.tenant_id(), &actor_id])
        .await?
        .and_then(|r| r.get::<_, &str>(0).parse::<Role>().ok())
        .filter(|role| role.can_manage())
        .ok_or(UserError::ActorNotManager)?;
    let target = tx
        .query_opt(
            &format!(
                "SELECT {} FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                User::COLUMNS
            ),
            &[&tx.tenant_id(), &id],
        )
        .await?
        .map(|r| User::from_row(&r))
        .ok_or(UserError::NotFound)?;
    Ok(Locked {
        active_owners,
        actor,
        target,
    })
}

fn only_owners_touch_owners(actor: Role, target: &User, new_role: Option<Role>) -> Result<()> {
    if actor != Role::Owner && (target.role == Role::Owner || new_role == Some(Role::Owner)) {
        return Err(UserError::OwnerOnly);
    }
    Ok(())
}

async fn announce(tx: &TenantTx, subject: &str) -> Result<()> {
    Directory::announce(
        tx,
        &Invalidation::member(tx.tenant_id(), subject.to_string()),
    )
    .await?;
    Ok(())
}

/// Changes a member, with its activity (`details.changed`: the fields that changed, and the
/// role's `from` and `to` when it changed), in one pooled transaction.
pub async fn update(
    db: &TenantDb,
    activity: &Recorder,
    by: Actor,
    id: Uuid,
    change: &UserChange,
) -> Result<User> {
    let tx = db.begin().await?;
    let Locked {
        active_owners,
        actor,
        target,
    } = lock_target(&tx, by, id).await?;
    only_owners_touch_owners(actor, &target, change.role)?;
    let stops_being_owner = target.role == Role::Owner
        && target.is_active
        && (change.role.is_some_and(|r| r != Role::Owner) || change.is_active == Some(false));
    if stops_being_owner && active_owners <= 1 {
        return Err(UserError::LastOwner);
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE users SET email = coalesce($3, email), role = coalesce($4, role),
                        is_active = coalesce($5, is_active),
                        phone = CASE WHEN $6 THEN $7 ELSE phone END, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {}",
                User::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &id,
                &change.email.as_ref().map(|e| e.as_str()),
                &change.role.map(Role::as_str),
                &change.is_active,
                &change.phone.is_some(),
                &change
                    .phone
                    .as_ref()
                    .and_then(|p| p.as_ref().map(|p| p.as_str())),
            ],
        )
        .await
        .on_constraint("users_external_id_key", || UserError::ExternalIdTaken)
        .on_constraint("users_email_key", || UserError::EmailTaken)?;
    announce(&tx, &target.external_id).await?;
    let user = User::from_row(&row);
    activity
        .commit(
            tx,
            Change::new("user.updated", "user", id).details(changes(&target, &user)),
        )
        .await?;
    Ok(user)
}

/// What an update changed, for its activity.
fn changes(before: &User, after: &User) -> serde_json::Value {
    let mut changed = Vec::new();
    let mut details = serde_json::Map::new();
    if before.email != after.email {
        changed.push("email");
    }
    if before.phone != after.phone {
        changed.push("phone");
    }
    if before.role != after.role {
        changed.push("role");
        details.insert("from".into(), serde_json::json!(before.role));
        details.insert("to".into(), serde_json::json!(after.role));
    }
    if before.is_active != after.is_active {
        changed.push("is_active");
        details.insert("is_active".into(), after.is_active.into());
    }
    details.insert("changed".into(), serde_json::json!(changed));
    details.into()
}

/// Deletes a user, with its activity; returns its external id (to invalidate cached
/// memberships).
pub async fn delete(db: &TenantDb, activity: &Recorder, by: Actor, id: Uuid) -> Result<String> {
    let tx = db.begin().await?;
    let Locked {
        active_owners,
        actor,
        target,
    } = lock_target(&tx, by, id).await?;
    only_owners_touch_owners(actor, &target, None)?;
    if target.role == Role::Owner && target.is_active && active_owners <= 1 {
        return Err(UserError::LastOwner);
    }
    tx.execute(
        "DELETE FROM users WHERE tenant_id = $1 AND id = $2",
        &[&tx.tenant_id(), &id],
    )
    .await?;
    announce(&tx, &target.external_id).await?;
    let change =
        Change::new("user.deleted", "user", id).details(serde_json::json!({"role": target.role}));
    activity.commit(tx, change).await?;
    Ok(target.external_id)
}
