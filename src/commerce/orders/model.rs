//! Orders: their states and moves, lines, customers, ratings, the request bodies and filters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::commerce::{Address, Channel, json_column, text_enum};
use crate::error::{AppError, Fields, sent};
use crate::extract::{PageQuery, PageRequest};
use crate::types::{self, Email, Phone};

text_enum! {
    /// pending → confirmed → processing → shipped → delivered; cancelled from pending,
    /// confirmed or processing (stock is released); disputed from shipped or delivered.
    OrderStatus {
        Pending => "pending",
        Confirmed => "confirmed",
        Processing => "processing",
        Shipped => "shipped",
        Delivered => "delivered",
        Cancelled => "cancelled",
        Disputed => "disputed",
    }
}

impl OrderStatus {
    /// The state machine of SPEC §4.
    pub fn can_move_to(self, next: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Confirmed)
                | (Confirmed, Processing)
                | (Processing, Shipped)
                | (Shipped, Delivered)
                | (Pending | Confirmed | Processing, Cancelled)
                | (Shipped | Delivered, Disputed)
        )
    }
}

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i32 = crate::commerce::products::model::MAX_STOCK;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    pub name: String,
    /// E.164.
    pub phone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

/// One line of an order, as it was when ordered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderItem {
    /// `null` once the product was deleted.
    #[schema(required = true)]
    pub product_id: Option<Uuid>,
    pub name: String,
    #[schema(required = true)]
    pub sku: Option<String>,
    pub quantity: i32,
    /// The product's price when the order was placed.
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rating {
    #[schema(minimum = 1, maximum = 5)]
    pub stars: i16,
    #[schema(required = true)]
    pub comment: Option<String>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub status: OrderStatus,
    pub channel: Channel,
    pub customer: Customer,
    pub items: Vec<OrderItem>,
    pub subtotal_cents: i64,
    /// Equal to the subtotal: no shipping, taxes or discounts yet.
    pub total_cents: i64,
    pub currency: String,
    #[schema(required = true)]
    pub notes: Option<String>,
    #[schema(required = true)]
    pub tracking_number: Option<String>,
    #[schema(required = true)]
    pub carrier: Option<String>,
    /// Why it was cancelled or disputed.
    #[schema(required = true)]
    pub status_reason: Option<String>,
    #[serde(serialize_with = "crate::types::timestamp_opt")]
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub rating: Option<Rating>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// Columns of `orders o`, with its items and rating.
    pub const COLUMNS: &'static str = "o.id, o.status, o.channel, o.customer, o.notes, \
        o.subtotal_cents, o.total_cents, o.currency, o.tracking_number, o.carrier, \
        o.status_reason, o.delivered_at, o.created_at, o.updated_at, \
        (SELECT coalesce(json_agg(json_build_object('product_id', i.product_id, 'name', i.name, \
                 'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents, \
                 'line_total_cents', i.unit_price_cents * i.quantity) ORDER BY i.position), '[]') \
         FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.id) AS items, \
        (SELECT json_build_object('stars', r.stars, 'comment', r.comment, \
                 'created_at', r.created_at) \
         FROM order_ratings r WHERE r.tenant_id = o.tenant_id AND r.order_id = o.id) AS rating";

    pub fn from_row(row: &Row) -> Result<Self, crate::db::DbError> {
        Ok(Self {
            id: row.get("id"),
            status: row.get("status"),
            channel: row.get("channel"),
            customer: json_column(row, "customer")?,
            items: json_column(row, "items")?,
            subtotal_cents: row.get("subtotal_cents"),
            total_cents: row.get("total_cents"),
            currency: row.get("currency"),
            notes: row.get("notes"),
            tracking_number: row.get("tracking_number"),
            carrier: row.get("carrier"),
            status_reason: row.get("status_reason"),
            delivered_at: row.get("delivered_at"),
            rating: json_column(row, "rating")?,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    #[schema(schema_with = types::schema::name::<200>)]
    pub name: String,
    #[schema(schema_with = types::schema::phone)]
    pub phone: String,
    #[schema(schema_with = types::schema::email_or_null, required = false)]
    pub email: Option<String>,
    pub address: Option<Address>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub product_id: Uuid,
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub quantity: i32,
}

/// Prices are not part of an order request: they come from the products.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "customer": {"name": "Maria Souza", "phone": "+5511912345678", "email": "maria@example.com"},
    "items": [{"product_id": "0193a0b4-5c2e-7d11-9a57-2f4c8e1b3d21", "quantity": 2}],
    "channel": "whatsapp",
    "notes": "Gift wrap, please."
}))]
pub struct CreateOrder {
    pub customer: CustomerInput,
    /// 1-100 lines, each product at most once, all priced in one currency.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemInput>,
    pub channel: Channel,
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    pub notes: Option<String>,
}

pub struct NewOrder {
    pub customer: Customer,
    pub items: Vec<(Uuid, i32)>,
    pub channel: Channel,
    pub notes: Option<String>,
}

impl CreateOrder {
    pub fn validate(self) -> Result<NewOrder, AppError> {
        let mut f = Fields::default();
        let c = self.customer;
        let name = f.check("customer.name", types::name(&c.name, 200));
        let phone = f.check("customer.phone", Phone::parse(&c.phone));
        let email = f.check(
            "customer.email",
            c.email.as_deref().map(Email::parse).transpose(),
        );
        let address = c.address.map(|a| a.parse("customer.address", &mut f));
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            f.fail("items", format!("must have 1-{MAX_ITEMS} lines"));
        }
        for (i, item) in self.items.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                f.fail(
                    format!("items[{i}].quantity"),
                    format!("must be 1-{MAX_QUANTITY}"),
                );
            }
            if self.items[..i]
                .iter()
                .any(|other| other.product_id == item.product_id)
            {
                f.fail(
                    format!("items[{i}].product_id"),
                    "is listed twice: order it once with the total quantity",
                );
            }
        }
        let notes = f.check("notes", types::text(self.notes.as_deref(), 2000));
        f.finish(|| {
            Some(NewOrder {
                customer: Customer {
                    name: name?,
                    phone: phone?.as_str().to_string(),
                    email: email?.map(|e| e.as_str().to_string()),
                    address: sent(address)?,
                },
                items: self
                    .items
                    .iter()
                    .map(|i| (i.product_id, i.quantity))
                    .collect(),
                channel: self.channel,
                notes: notes?,
            })
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "shipped", "tracking_number": "BR123456789", "carrier": "Correios"}))]
pub struct Transition {
    pub status: OrderStatus,
    /// Only with `shipped`.
    #[schema(max_length = 100, pattern = r"^[^\x00]*$")]
    pub tracking_number: Option<String>,
    /// Only with `shipped`.
    #[schema(max_length = 100, pattern = r"^[^\x00]*$")]
    pub carrier: Option<String>,
    /// Only with `cancelled` or `disputed`.
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub reason: Option<String>,
}

pub struct StatusChange {
    pub status: OrderStatus,
    pub tracking_number: Option<String>,
    pub carrier: Option<String>,
    pub reason: Option<String>,
}

impl Transition {
    pub fn validate(self) -> Result<StatusChange, AppError> {
        let mut f = Fields::default();
        let shipping = self.status == OrderStatus::Shipped;
        let with_reason = matches!(self.status, OrderStatus::Cancelled | OrderStatus::Disputed);
        let mut only_if =
            |allowed: bool, field: &str, raw: Option<String>, max: usize, when: &str| {
                if raw.is_some() && !allowed {
                    f.fail(field, format!("only with status {when}"));
                    return None;
                }
                f.check(field, types::text(raw.as_deref(), max))
            };
        let tracking_number = only_if(
            shipping,
            "tracking_number",
            self.tracking_number,
            100,
            "shipped",
        );
        let carrier = only_if(shipping, "carrier", self.carrier, 100, "shipped");
        let reason = only_if(
            with_reason,
            "reason",
            self.reason,
            1000,
            "cancelled or disputed",
        );
        f.finish(|| {
            Some(StatusChange {
                status: self.status,
                tracking_number: tracking_number?,
                carrier: carrier?,
                reason: reason?,
            })
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"stars": 5, "comment": "Arrived early, lovely print."}))]
pub struct RateOrder {
    #[schema(minimum = 1, maximum = 5)]
    pub stars: i16,
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    pub comment: Option<String>,
}

pub struct NewRating {
    pub stars: i16,
    pub comment: Option<String>,
}

impl RateOrder {
    pub fn validate(self) -> Result<NewRating, AppError> {
        let mut f = Fields::default();
        if !(1..=5).contains(&self.stars) {
            f.fail("stars", "must be 1-5");
        }
        let comment = f.check("comment", types::text(self.comment.as_deref(), 2000));
        f.finish(|| {
            Some(NewRating {
                stars: self.stars,
                comment: comment?,
            })
        })
    }
}

/// `GET /api/v1/orders` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    pub status: Option<OrderStatus>,
    pub channel: Option<Channel>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339), after `since`.
    pub until: Option<DateTime<Utc>>,
    /// Text in the customer's name, phone or e-mail (case-insensitive), 1-100 characters.
    #[param(max_length = 100, pattern = r"^[^\x00]*$")]
    pub q: Option<String>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub channel: Option<Channel>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub q: Option<String>,
    pub page: PageRequest,
}

impl OrderFilter {
    /// No condition but the page.
    pub fn is_plain_page(&self) -> bool {
        self.status.is_none()
            && self.channel.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.q.is_none()
    }
}

impl OrderQuery {
    pub fn parse(self) -> Result<OrderFilter, AppError> {
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .parse()?;
        let mut f = Fields::default();
        let q = f.check("q", types::text(self.q.as_deref(), 100));
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            f.fail("until", "must be after since");
        }
        f.finish(|| {
            Some(OrderFilter {
                status: self.status,
                channel: self.channel,
                since: self.since,
                until: self.until,
                q: q?,
                page,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_the_spec_moves() {
        let allowed = [
            (Pending, Confirmed),
            (Pending, Cancelled),
            (Confirmed, Processing),
            (Confirmed, Cancelled),
            (Processing, Shipped),
            (Processing, Cancelled),
            (Shipped, Delivered),
            (Shipped, Disputed),
            (Delivered, Disputed),
        ];
        for &from in OrderStatus::ALL {
            for &to in OrderStatus::ALL {
                assert_eq!(
                    from.can_move_to(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }
}
