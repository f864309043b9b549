//! SQL for orders. Every statement also filters `tenant_id` explicitly.
//!
//! Products are always locked in id order (creating an order, cancelling one), so concurrent
//! orders that share products wait for each other instead of deadlocking.

use uuid::Uuid;

use super::model::{NewOrder, NewRating, Order, OrderFilter, OrderStatus, Rating, StatusChange};
use crate::commerce::filter::{Search, Statement, Where};
use crate::commerce::products::model::ProductStatus;
use crate::commerce::to_json;
use crate::db::{Conn, DbError, OnConstraint, TenantDb, TenantTx};
use crate::monitoring::activity::{Change, Recorder};
use crate::notify::model::{Priority, Source, SourceType};
use crate::notify::templates::TemplateKey;
use crate::notify::{NewNotification, Notifier, Recipients};

/// A line of an order that cannot be sold as asked, by its position in `items`.
#[derive(Debug, PartialEq, Eq)]
pub enum LineProblem {
    /// The product is draft or archived.
    NotOnSale(ProductStatus),
    /// The product's currency is not the order's (that of its first line).
    Currency { product: String, order: String },
}

/// What can go wrong storing orders, in storage terms (the routes choose the API's answer).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such order")]
    NotFound,
    /// `items[i].product_id` is not a product of this tenant.
    #[error("items[{0}]: no such product")]
    ProductMissing(usize),
    #[error("lines cannot be sold: {0:?}")]
    Lines(Vec<(usize, LineProblem)>),
    #[error("the order total overflows")]
    TotalTooLarge,
    /// Not enough stock: which line, and how many are left (`None`: the stock changed).
    #[error("insufficient stock")]
    InsufficientStock(Option<(usize, i32, i32)>),
    #[error("cannot move from {from:?} to {to:?}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    #[error("the order was not delivered")]
    NotDelivered,
    #[error("the order is rated already")]
    AlreadyRated,
    /// The COMMIT of order `0` got no answer and the database did not come back in time.
    #[error("commit outcome unknown for order {0}")]
    CommitUnknown(Uuid),
    #[error(transparent)]
    Db(#[from] DbError),
}

type Result<T, E = OrderError> = std::result::Result<T, E>;

/// Order search: the customer's name, phone and e-mail, through `order_search_terms`
/// (migration 0005).
const SEARCH: Search = Search {
    id: "o.id",
    terms: "order_search_terms",
    term_id: "order_id",
    text: "order_search_text(o.customer)",
};

fn select_one() -> String {
    format!(
        "SELECT {} FROM orders o WHERE o.tenant_id = $1 AND o.id = $2",
        Order::COLUMNS
    )
}

async fn fetch(conn: &Conn, tenant_id: Uuid, id: Uuid) -> Result<Order> {
    let row = conn
        .query_opt(&select_one(), &[&tenant_id, &id])
        .await?
        .ok_or(OrderError::NotFound)?;
    Ok(Order::from_row(&row)?)
}

/// One order, by key on a read lane.
pub async fn get(db: &TenantDb, id: Uuid) -> Result<Order> {
    let row = db
        .read_opt(&select_one(), &[&db.tenant_id(), &id])
        .await?
        .ok_or(OrderError::NotFound)?;
    Ok(Order::from_row(&row)?)
}

/// The statement behind `GET /api/v1/orders` (public so that a test can check its plan).
pub fn list_statement(tenant_id: Uuid, filter: &OrderFilter) -> Statement {
    let mut w = Where::tenant("o.tenant_id", tenant_id);
    w.push_opt("o.status = {}", filter.status);
    w.push_opt("o.channel = {}", filter.channel);
    w.push_opt("o.created_at >= {}", filter.since);
    w.push_opt("o.created_at < {}", filter.until);
    if let Some(q) = &filter.q {
        w.search(&SEARCH, q);
    }
    let tail = w.page("o.id", filter.page);
    Statement {
        sql: format!(
            "SELECT {} FROM orders o WHERE {} {tail}",
            Order::COLUMNS,
            w.sql()
        ),
        filter: w,
    }
}

/// A page of orders: a plain page walks the (tenant_id, id) index on a read lane; a filter
/// may read many rows per page, so it goes to the pool.
pub async fn list(db: &TenantDb, filter: &OrderFilter) -> Result<Vec<Order>> {
    let statement = list_statement(db.tenant_id(), filter);
    let rows = if filter.is_plain_page() {
        db.read(&statement.sql, &statement.params()).await?
    } else {
        db.query(&statement.sql, &statement.params()).await?
    };
    Ok(rows
        .iter()
        .map(Order::from_row)
        .collect::<Result<_, DbError>>()?)
}

/// A product as an order line needs it, locked.
struct Stocked {
    id: Uuid,
    name: String,
    sku: Option<String>,
    price_cents: i64,
    currency: String,
    status: ProductStatus,
    stock: i32,
}

/// Checks every line against its locked product; returns the lines with their product.
fn price_lines<'a>(order: &NewOrder, products: &'a [Stocked]) -> Result<Vec<(&'a Stocked, i32)>> {
    let mut lines = Vec::with_capacity(order.items.len());
    for (i, (product_id, quantity)) in order.items.iter().enumerate() {
        let product = products
            .iter()
            .find(|p| p.id == *product_id)
            .ok_or(OrderError::ProductMissing(i))?;
        lines.push((product, *quantity));
    }
    let currency = &lines[0].0.currency;
    let mut problems = Vec::new();
    for (i, (product, _)) in lines.iter().enumerate() {
        if product.status != ProductStatus::Active {
            problems.push((i, LineProblem::NotOnSale(product.status)));
        } else if &product.currency != currency {
            problems.push((
                i,
                LineProblem::Currency {
                    product: product.currency.clone(),
                    order: currency.clone(),
                },
            ));
        }
    }
    if !problems.is_empty() {
        return Err(OrderError::Lines(problems));
    }
    for (i, (product, quantity)) in lines.iter().enumerate() {
        if product.stock < *quantity {
            return Err(OrderError::InsufficientStock(Some((
                i,
                product.stock,
                *quantity,
            ))));
        }
    }
    Ok(lines)
}

/// The notification an order sends its tenant's owners and admins (SPEC §8): on creation
/// (medium) and on a dispute (high); the order, as the API returns it, is its `order`.
fn order_notification(order: &Order, key: TemplateKey) -> Result<NewNotification> {
    let money = format!(
        "{}.{:02} {}",
        order.total_cents / 100,
        order.total_cents % 100,
        order.currency
    );
    let (title, body, priority) = match key {
        TemplateKey::OrderDisputed => (
            format!("Order disputed by {}", order.customer.name),
            match &order.status_reason {
                Some(reason) => format!("{money}. Reason: {reason}"),
                None => money,
            },
            Priority::High,
        ),
        _ => (
            format!("New order from {}", order.customer.name),
            format!(
                "{} item(s), {money}, via {}.",
                order.items.len(),
                order.channel.as_str()
            ),
            Priority::Medium,
        ),
    };
    Ok(NewNotification {
        title,
        body,
        priority,
        category: "orders".into(),
        metadata: serde_json::json!({"order_id": order.id}),
        source: Source {
            kind: SourceType::Order,
            id: Some(order.id),
        },
        template: key,
        variables: serde_json::json!({ "order": to_json(order)? }),
        channels: None,
    })
}

/// Places an order: locks its products, prices it from them, reserves the stock and stores
/// it, with the notification of its owners and admins, all in one pooled transaction. With
/// `auto_confirm` (the tenant's trust level has the feature) the tenant's
/// `auto_confirm_orders` setting decides whether it starts `confirmed`.
pub async fn create(
    db: &TenantDb,
    activity: &Recorder,
    notifier: &Notifier,
    order: &NewOrder,
    auto_confirm: bool,
) -> Result<Order> {
    let tx = db.begin().await?;
    let ids: Vec<Uuid> = order.items.iter().map(|(id, _)| *id).collect();
    let products: Vec<Stocked> = tx
        .query(
            "SELECT id, name, sku, price_cents, currency, status, stock FROM products
             WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
            &[&tx.tenant_id(), &ids],
        )
        .await?
        .iter()
        .map(|r| Stocked {
            id: r.get("id"),
            name: r.get("name"),
            sku: r.get("sku"),
            price_cents: r.get("price_cents"),
            currency: r.get("currency"),
            status: r.get("status"),
            stock: r.get("stock"),
        })
        .collect();
    let lines = price_lines(order, &products)?;
    let subtotal = lines
        .iter()
        .try_fold(0i64, |sum, (p, q)| {
            p.price_cents
                .checked_mul(i64::from(*q))
                .and_then(|line| sum.checked_add(line))
        })
        .ok_or(OrderError::TotalTooLarge)?;
    let quantities: Vec<i32> = lines.iter().map(|(_, q)| *q).collect();

    // The rows are locked, so this cannot fail; the condition keeps it safe regardless.
    let reserved = tx
        .execute(
            "UPDATE products p SET stock = p.stock - x.q, updated_at = now()
             FROM unnest($2::uuid[], $3::int[]) AS x(id, q)
             WHERE p.tenant_id = $1 AND p.id = x.id AND p.stock >= x.q",
            &[&tx.tenant_id(), &ids, &quantities],
        )
        .await?;
    if reserved as usize != ids.len() {
        return Err(OrderError::InsufficientStock(None));
    }

    let id = Uuid::now_v7();
    let customer = to_json(&order.customer)?;
    tx.execute(
        "INSERT INTO orders (tenant_id, id, channel, customer, notes, subtotal_cents,
             total_cents, currency, status)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7,
                 CASE WHEN $8 AND coalesce((SELECT s.auto_confirm_orders FROM tenant_settings s
                                            WHERE s.tenant_id = $1), false)
                      THEN 'confirmed' ELSE 'pending' END)",
        &[
            &tx.tenant_id(),
            &id,
            &order.channel,
            &customer,
            &order.notes,
            &subtotal,
            &lines[0].0.currency,
            &auto_confirm,
        ],
    )
    .await?;
    let names: Vec<&str> = lines.iter().map(|(p, _)| p.name.as_str()).collect();
    let skus: Vec<Option<&str>> = lines.iter().map(|(p, _)| p.sku.as_deref()).collect();
    let prices: Vec<i64> = lines.iter().map(|(p, _)| p.price_cents).collect();
    tx.execute(
        "INSERT INTO order_items (tenant_id, order_id, position, product_id, name, sku,
             quantity, unit_price_cents)
         SELECT $1, $2, (x.n - 1)::smallint, x.product_id, x.name, x.sku, x.quantity, x.price
         FROM unnest($3::uuid[], $4::text[], $5::text[], $6::int[], $7::bigint[])
              WITH ORDINALITY AS x(product_id, name, sku, quantity, price, n)",
        &[
            &tx.tenant_id(),
            &id,
            &ids,
            &names,
            &skus,
            &quantities,
            &prices,
        ],
    )
    .await?;
    let created = fetch(&tx, tx.tenant_id(), id).await?;
    let sent = notifier
        .enqueue(
            &tx,
            order_notification(&created, TemplateKey::OrderCreated)?,
            Recipients::Managers,
        )
        .await?;
    let change = Change::new("order.created", "order", id).details(serde_json::json!({
        "total_cents": subtotal, "currency": created.currency, "status": created.status
    }));
    let created = match activity.commit(tx, change).await {
        Err(DbError::Unavailable(cause)) => settle_commit(db, created, cause).await?,
        done => done.map(|()| created)?,
    };
    notifier.published(sent);
    Ok(created)
}

/// How long an order whose COMMIT got no answer is looked for before giving up (within the
/// 2 s an outage answer may take).
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(600);

/// The connection died during COMMIT, so the order may or may not be stored. Look: stored,
/// it is created (201); absent once the database answers, it was rolled back; still no
/// answer, the outcome stays unknown (503, and the client retries).
async fn settle_commit(db: &TenantDb, created: Order, cause: String) -> Result<Order> {
    tracing::warn!(order_id = %created.id, error = %cause, "COMMIT unanswered; looking for the order");
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    while tokio::time::Instant::now() < deadline {
        match db
            .query_opt(&select_one(), &[&db.tenant_id(), &created.id])
            .await
        {
            Ok(Some(_)) => return Ok(created),
            Ok(None) => return Err(DbError::Unavailable(cause).into()),
            Err(DbError::Unavailable(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(OrderError::CommitUnknown(created.id))
}

/// Puts a cancelled order's stock back on its products (those that still exist), up to the
/// stock bound: both are at most `MAX_STOCK`, so the sum fits an `integer` and the release
/// never fails.
async fn release_stock(tx: &TenantTx, order_id: Uuid) -> Result<()> {
    tx.execute(
        "SELECT 1 FROM products WHERE tenant_id = $1 AND id IN
             (SELECT product_id FROM order_items WHERE tenant_id = $1 AND order_id = $2)
         ORDER BY id FOR UPDATE",
        &[&tx.tenant_id(), &order_id],
    )
    .await?;
    tx.execute(
        "UPDATE products p SET stock = least(p.stock + i.quantity, $3), updated_at = now()
         FROM order_items i
         WHERE p.tenant_id = $1 AND i.tenant_id = $1 AND i.order_id = $2
           AND p.id = i.product_id",
        &[
            &tx.tenant_id(),
            &order_id,
            &crate::commerce::products::model::MAX_STOCK,
        ],
    )
    .await?;
    Ok(())
}

/// Locks the order and returns its status and delivery time.
async fn lock(
    tx: &TenantTx,
    id: Uuid,
) -> Result<(OrderStatus, Option<chrono::DateTime<chrono::Utc>>)> {
    let row = tx
        .query_opt(
            "SELECT status, delivered_at FROM orders WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            &[&tx.tenant_id(), &id],
        )
        .await?
        .ok_or(OrderError::NotFound)?;
    Ok((row.get(0), row.get(1)))
}

/// Moves an order to another status under its row lock, so concurrent moves are serialised
/// (one pooled transaction).
pub async fn transition(
    db: &TenantDb,
    activity: &Recorder,
    notifier: &Notifier,
    id: Uuid,
    change: &StatusChange,
) -> Result<Order> {
    let tx = db.begin().await?;
    let (current, _) = lock(&tx, id).await?;
    if !current.can_move_to(change.status) {
        return Err(OrderError::InvalidTransition {
            from: current,
            to: change.status,
        });
    }
    if change.status == OrderStatus::Cancelled {
        release_stock(&tx, id).await?;
    }
    tx.execute(
        "UPDATE orders SET status = $3,
             tracking_number = coalesce($4, tracking_number),
             carrier = coalesce($5, carrier),
             status_reason = coalesce($6, status_reason),
             delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        &[
            &tx.tenant_id(),
            &id,
            &change.status,
            &change.tracking_number,
            &change.carrier,
            &change.reason,
        ],
    )
    .await?;
    let order = fetch(&tx, tx.tenant_id(), id).await?;
    let sent = match change.status {
        OrderStatus::Disputed => Some(
            notifier
                .enqueue(
                    &tx,
                    order_notification(&order, TemplateKey::OrderDisputed)?,
                    Recipients::Managers,
                )
                .await?,
        ),
        _ => None,
    };
    let recorded = Change::new("order.status_changed", "order", id)
        .details(serde_json::json!({"from": current, "to": change.status}));
    activity.commit(tx, recorded).await?;
    if let Some(sent) = sent {
        notifier.published(sent);
    }
    Ok(order)
}

/// Records the customer's rating, with its activity: once, and only for an order that was
/// delivered.
pub async fn rate(
    db: &TenantDb,
    activity: &Recorder,
    id: Uuid,
    rating: &NewRating,
) -> Result<Rating> {
    let tx = db.begin().await?;
    let (_, delivered_at) = lock(&tx, id).await?;
    if delivered_at.is_none() {
        return Err(OrderError::NotDelivered);
    }
    let row = tx
        .query_one(
            "INSERT INTO order_ratings (tenant_id, order_id, stars, comment)
             VALUES ($1, $2, $3, $4) RETURNING stars, comment, created_at",
            &[&tx.tenant_id(), &id, &rating.stars, &rating.comment],
        )
        .await
        .on_constraint("order_ratings_pkey", || OrderError::AlreadyRated)?;
    let change =
        Change::new("order.rated", "order", id).details(serde_json::json!({"stars": rating.stars}));
    activity.commit(tx, change).await?;
    Ok(Rating {
        stars: row.get("stars"),
        comment: row.get("comment"),
        created_at: row.get("created_at"),
    })
}
