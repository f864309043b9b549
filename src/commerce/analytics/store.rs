//! SQL for analytics: a few aggregates over one tenant's orders and messages in a time
//! range, each walking a covering `(tenant_id, created_at)` index (migrations/0010_trust.sql).
//! Every statement also filters `tenant_id` explicitly.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;
use uuid::Uuid;

use super::model::{
    Conversion, Interval, Money, Point, Range, Revenue, StatusCounts, Summary, Timeseries,
    TopProduct, buckets, local_start,
};
use crate::commerce::orders::model::OrderStatus;
use crate::db::{Conn, DbError, Params};

/// Orders that count as revenue: placed and not undone (cancelled) or contested (disputed).
const SOLD: &str = "status NOT IN ('cancelled', 'disputed')";

/// The statement behind the summary's order counts (public so a test can check its plan).
pub const ORDERS_BY_STATUS: &str = "SELECT status, currency, count(*), sum(total_cents)::bigint
     FROM orders WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
     GROUP BY status, currency";

/// The five products with the most revenue in the range: the range's lines (by when their
/// order was placed, `order_items_placed_idx`) joined to the range's orders for their status.
pub fn top_products_sql() -> String {
    format!(
        "SELECT i.product_id, max(i.name), o.currency, sum(i.quantity)::bigint,
                sum(i.quantity::bigint * i.unit_price_cents)::bigint AS revenue
         FROM order_items i
         JOIN orders o ON o.tenant_id = i.tenant_id AND o.id = i.order_id
         WHERE i.tenant_id = $1 AND i.placed_at >= $2 AND i.placed_at < $3
           AND o.tenant_id = $1 AND o.created_at >= $2 AND o.created_at < $3 AND o.{SOLD}
         GROUP BY i.product_id, o.currency
         ORDER BY revenue DESC, i.product_id LIMIT 5"
    )
}

/// Threads where a customer wrote in the range, and those with an order-linked message.
pub const CONVERSION: &str = "SELECT count(*) FILTER (WHERE asked),
            count(*) FILTER (WHERE asked AND ordered)
     FROM (SELECT thread_id, bool_or(sender_type = 'customer') AS asked,
                  bool_or(order_id IS NOT NULL) AS ordered
           FROM conversation_history
           WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
           GROUP BY thread_id) t";

/// The time series' buckets: local start date, currency, orders, revenue. Rows are grouped by
/// their local day first (one cheap conversion a row), the days then into weeks or months.
pub fn series_sql() -> String {
    format!(
        "SELECT to_char(date_trunc($4, d), 'YYYY-MM-DD'), currency, sum(n)::bigint,
                sum(revenue)::bigint
         FROM (SELECT (created_at AT TIME ZONE $5)::date AS d, currency, count(*) AS n,
                      coalesce(sum(total_cents) FILTER (WHERE {SOLD}), 0) AS revenue
               FROM orders WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
               GROUP BY 1, 2) days
         GROUP BY 1, 2"
    )
}

/// The summary of `range` (three statements, pipelined on the transaction's connection).
pub async fn summary(
    conn: &Conn,
    tenant_id: Uuid,
    tz: Tz,
    range: Range,
) -> Result<Summary, DbError> {
    let params: Params = &[&tenant_id, &range.since, &range.until];
    let top_sql = top_products_sql();
    let (orders, top, conversion) = tokio::try_join!(
        conn.query(ORDERS_BY_STATUS, params),
        conn.query(&top_sql, params),
        conn.query_one(CONVERSION, params),
    )?;
    let mut counts = StatusCounts::default();
    let mut revenue: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut total = 0;
    for row in &orders {
        let status: OrderStatus = row.get(0);
        let (currency, n, amount): (String, i64, i64) = (row.get(1), row.get(2), row.get(3));
        total += n;
        let slot = match status {
            OrderStatus::Pending => &mut counts.pending,
            OrderStatus::Confirmed => &mut counts.confirmed,
            OrderStatus::Processing => &mut counts.processing,
            OrderStatus::Shipped => &mut counts.shipped,
            OrderStatus::Delivered => &mut counts.delivered,
            OrderStatus::Cancelled => &mut counts.cancelled,
            OrderStatus::Disputed => &mut counts.disputed,
        };
        *slot += n;
        if !matches!(status, OrderStatus::Cancelled | OrderStatus::Disputed) {
            let sums = revenue.entry(currency).or_default();
            sums.0 += amount;
            sums.1 += n;
        }
    }
    let mut revenue: Vec<Revenue> = revenue
        .into_iter()
        .map(|(currency, (amount_cents, orders))| Revenue {
            currency,
            amount_cents,
            orders,
            average_order_cents: amount_cents / orders.max(1),
        })
        .collect();
    revenue.sort_by_key(|r| std::cmp::Reverse(r.amount_cents));
    let (threads, converted): (i64, i64) = (conversion.get(0), conversion.get(1));
    Ok(Summary {
        since: range.since,
        until: range.until,
        timezone: tz.name().to_string(),
        orders: total,
        orders_by_status: counts,
        revenue,
        top_products: top
            .iter()
            .map(|r| TopProduct {
                product_id: r.get(0),
                name: r.get(1),
                currency: r.get(2),
                quantity: r.get(3),
                revenue_cents: r.get(4),
            })
            .collect(),
        conversations: Conversion {
            threads,
            converted,
            rate: (threads > 0).then(|| converted as f64 / threads as f64),
        },
    })
}

/// The time series of `range` by `interval`, every bucket listed.
pub async fn timeseries(
    conn: &Conn,
    tenant_id: Uuid,
    tz: Tz,
    range: Range,
    interval: Interval,
) -> Result<Timeseries, DbError> {
    let rows = conn
        .query(
            &series_sql(),
            &[
                &tenant_id,
                &range.since,
                &range.until,
                &interval.as_str(),
                &tz.name(),
            ],
        )
        .await?;
    let mut by_date: BTreeMap<String, (i64, Vec<Money>)> = BTreeMap::new();
    for row in &rows {
        let entry = by_date.entry(row.get(0)).or_default();
        entry.0 += row.get::<_, i64>(2);
        let amount: i64 = row.get(3);
        if amount > 0 {
            entry.1.push(Money {
                currency: row.get(1),
                amount_cents: amount,
            });
        }
    }
    let points = buckets(range, interval, tz)
        .into_iter()
        .map(|date: NaiveDate| {
            let key = date.to_string();
            let (orders, mut revenue) = by_date.remove(&key).unwrap_or_default();
            revenue.sort_by(|a, b| a.currency.cmp(&b.currency));
            Point {
                start: local_start(tz, date),
                date: key,
                orders,
                revenue,
            }
        })
        .collect();
    Ok(Timeseries {
        since: range.since,
        until: range.until,
        timezone: tz.name().to_string(),
        interval,
        points,
    })
}
