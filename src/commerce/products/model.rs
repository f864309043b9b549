//! Products: the row, the create and patch bodies with their validation, the list filter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::commerce::{nullable, text_enum};
use crate::error::{AppError, Fields, sent};
use crate::extract::{PageQuery, PageRequest};
use crate::types::{self, Currency, PositiveCents, Sku};

text_enum! {
    /// Only `active` products can be ordered.
    ProductStatus {
        Draft => "draft",
        Active => "active",
        Archived => "archived",
    }
}

/// The most images one product can have.
pub const MAX_MEDIA: usize = 20;
/// The largest stock a product can have (SPEC §4); order quantities share the bound.
pub const MAX_STOCK: i32 = 1_000_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    #[schema(required = true)]
    pub description: Option<String>,
    /// Price in minor units of `currency`.
    #[schema(minimum = 1)]
    pub price_cents: i64,
    pub currency: String,
    #[schema(required = true)]
    pub sku: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: i32,
    pub status: ProductStatus,
    /// The product's images, in display order.
    pub media_ids: Vec<Uuid>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::types::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Product {
    /// Columns of `products p`, with the media ids in order.
    pub const COLUMNS: &'static str = "p.id, p.name, p.description, p.price_cents, p.currency, \
        p.sku, p.stock, p.status, p.created_at, p.updated_at, \
        ARRAY(SELECT pm.media_id FROM product_media pm \
              WHERE pm.tenant_id = p.tenant_id AND pm.product_id = p.id \
              ORDER BY pm.position) AS media_ids";

    /// A row of [`Product::COLUMNS`], read by position (lists read thousands of these a second,
    /// and a lookup by name compares column names).
    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            name: row.get(1),
            description: row.get(2),
            price_cents: row.get(3),
            currency: row.get(4),
            sku: row.get(5),
            stock: row.get(6),
            status: row.get(7),
            created_at: row.get(8),
            updated_at: row.get(9),
            media_ids: row.get(10),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Tee — Ipê print, M",
    "description": "Organic cotton, hand-printed.",
    "price_cents": 8990,
    "currency": "BRL",
    "sku": "TEE-IPE-M",
    "stock": 25,
    "status": "active",
    "media_ids": []
}))]
pub struct CreateProduct {
    #[schema(schema_with = types::schema::name::<200>)]
    pub name: String,
    #[schema(max_length = 5000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// Greater than 0, in minor units.
    #[schema(minimum = 1)]
    pub price_cents: i64,
    #[schema(schema_with = types::schema::currency)]
    pub currency: String,
    #[schema(schema_with = types::schema::sku_or_null, required = false)]
    pub sku: Option<String>,
    /// 0-1,000,000,000 (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000, default = 0)]
    pub stock: i32,
    /// Default `draft`.
    pub status: Option<ProductStatus>,
    /// Media of this tenant, in display order (at most 20).
    #[serde(default)]
    #[schema(schema_with = types::schema::unique_ids::<MAX_MEDIA>, required = false)]
    pub media_ids: Vec<Uuid>,
}

pub struct NewProduct {
    pub name: String,
    pub description: Option<String>,
    pub price: PositiveCents,
    pub currency: Currency,
    pub sku: Option<Sku>,
    pub stock: i32,
    pub status: ProductStatus,
    pub media_ids: Vec<Uuid>,
}

fn check_stock(f: &mut Fields, stock: i32) -> Option<i32> {
    f.check(
        "stock",
        if (0..=MAX_STOCK).contains(&stock) {
            Ok(stock)
        } else {
            Err("must be 0-1000000000")
        },
    )
}

fn check_media(f: &mut Fields, ids: Vec<Uuid>) -> Option<Vec<Uuid>> {
    if ids.len() > MAX_MEDIA {
        f.fail("media_ids", format!("at most {MAX_MEDIA} images"));
        return None;
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            f.fail(format!("media_ids[{i}]"), "is listed twice");
            return None;
        }
    }
    Some(ids)
}

fn sku(f: &mut Fields, raw: Option<&str>) -> Option<Option<Sku>> {
    f.check("sku", raw.map(Sku::parse).transpose())
}

impl CreateProduct {
    pub fn validate(self) -> Result<NewProduct, AppError> {
        let mut f = Fields::default();
        let name = f.check("name", types::name(&self.name, 200));
        let description = f.check(
            "description",
            types::text(self.description.as_deref(), 5000),
        );
        let price = f.check("price_cents", PositiveCents::parse(self.price_cents));
        let currency = f.check("currency", Currency::parse(&self.currency));
        let sku = sku(&mut f, self.sku.as_deref());
        let stock = check_stock(&mut f, self.stock);
        let media_ids = check_media(&mut f, self.media_ids);
        f.finish(|| {
            Some(NewProduct {
                name: name?,
                description: description?,
                price: price?,
                currency: currency?,
                sku: sku?,
                stock: stock?,
                status: self.status.unwrap_or(ProductStatus::Draft),
                media_ids: media_ids?,
            })
        })
    }
}

/// The most products one bulk import can create.
pub const MAX_BULK: usize = 500;

/// The most bytes one valid product body takes as JSON encoders write it: its texts at their
/// longest (name 200, description 5,000 and sku 64 characters) at 6 bytes a character (UTF-8
/// takes at most 4; a `\uXXXX` escape 6: control characters, and every character of the Basic
/// Multilingual Plane when an ASCII-only encoder such as Python's `json` writes it), 20 media
/// ids, and room for the keys, numbers, status and formatting. Only characters beyond that
/// plane written as escaped surrogate pairs take more (12 bytes).
pub const MAX_PRODUCT_JSON: usize = 6 * (200 + 5000 + 64) + MAX_MEDIA * 40 + 1024;

/// The body limit of `POST /api/v1/products/bulk` (16.7 MB): 500 of the largest product
/// bodies and the envelope around them. Every other JSON body has 1 MiB.
pub const BULK_BODY_LIMIT: usize = MAX_BULK * MAX_PRODUCT_JSON + 1024;

/// `POST /api/v1/products/bulk`: 1-500 product bodies, created together or not at all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"products": [
    {"name": "Tee — Ipê print, M", "price_cents": 8990, "currency": "BRL", "sku": "TEE-IPE-M",
     "stock": 25, "status": "active"},
    {"name": "Mug — Sunrise", "price_cents": 4500, "currency": "BRL", "sku": "MUG-SUN"}
]}))]
pub struct BulkProducts {
    #[schema(min_items = 1, max_items = 500)]
    pub products: Vec<CreateProduct>,
}

/// The created products, in the order sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkCreated {
    pub items: Vec<Product>,
}

impl BulkProducts {
    /// Every item as [`CreateProduct::validate`] checks it, errors named `products[i].field`;
    /// a sku may appear once in the batch.
    pub fn validate(self) -> Result<Vec<NewProduct>, AppError> {
        if self.products.is_empty() || self.products.len() > MAX_BULK {
            return Err(AppError::validation(
                "products",
                format!("1-{MAX_BULK} products"),
            ));
        }
        let mut errors = Vec::new();
        let mut valid = Vec::with_capacity(self.products.len());
        for (i, body) in self.products.into_iter().enumerate() {
            match body.validate() {
                Ok(new) => valid.push((i, new)),
                Err(AppError::Validation(faults)) => {
                    errors.extend(faults.into_iter().map(|mut e| {
                        e.field = format!("products[{i}].{}", e.field);
                        e
                    }))
                }
                Err(other) => return Err(other),
            }
        }
        for (n, (i, new)) in valid.iter().enumerate() {
            let Some(sku) = &new.sku else { continue };
            if let Some((first, _)) = valid[..n]
                .iter()
                .find(|(_, other)| other.sku.as_ref() == Some(sku))
            {
                errors.push(crate::error::FieldError::new(
                    format!("products[{i}].sku"),
                    format!("repeats products[{first}].sku"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(valid.into_iter().map(|(_, new)| new).collect())
    }
}

/// Only the fields sent change; `description` and `sku` can be cleared with `null`;
/// `media_ids` replaces the list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"price_cents": 7990, "stock": 40, "status": "active"}))]
pub struct UpdateProduct {
    #[schema(schema_with = types::schema::name_or_null::<200>, required = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 5000, pattern = r"^[^\x00]*$")]
    pub description: Option<Option<String>>,
    #[schema(minimum = 1)]
    pub price_cents: Option<i64>,
    #[schema(schema_with = types::schema::currency_or_null, required = false)]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = types::schema::sku_or_null, required = false)]
    pub sku: Option<Option<String>>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i32>,
    pub status: Option<ProductStatus>,
    #[schema(schema_with = types::schema::unique_ids_or_null::<MAX_MEDIA>, required = false)]
    pub media_ids: Option<Vec<Uuid>>,
}

/// A change to a product: `None` keeps the current value.
pub struct ProductChange {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<PositiveCents>,
    pub currency: Option<Currency>,
    pub sku: Option<Option<Sku>>,
    pub stock: Option<i32>,
    pub status: Option<ProductStatus>,
    pub media_ids: Option<Vec<Uuid>>,
}

impl UpdateProduct {
    pub fn validate(self) -> Result<ProductChange, AppError> {
        let mut f = Fields::default();
        let name = self.name.map(|n| f.check("name", types::name(&n, 200)));
        let description = self
            .description
            .map(|d| f.check("description", types::text(d.as_deref(), 5000)));
        let price = self
            .price_cents
            .map(|p| f.check("price_cents", PositiveCents::parse(p)));
        let currency = self
            .currency
            .map(|c| f.check("currency", Currency::parse(&c)));
        let sku = self.sku.map(|s| sku(&mut f, s.as_deref()));
        let stock = self.stock.map(|s| check_stock(&mut f, s));
        let media_ids = self.media_ids.map(|m| check_media(&mut f, m));
        f.finish(|| {
            Some(ProductChange {
                name: sent(name)?,
                description: sent(description)?,
                price: sent(price)?,
                currency: sent(currency)?,
                sku: sent(sku)?,
                stock: sent(stock)?,
                status: self.status,
                media_ids: sent(media_ids)?,
            })
        })
    }
}

/// `GET /api/v1/products` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// Text in the name or sku (case-insensitive), 1-100 characters.
    #[param(max_length = 100, pattern = r"^[^\x00]*$")]
    pub q: Option<String>,
    pub status: Option<ProductStatus>,
    /// Lowest `price_cents`, inclusive.
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest `price_cents`, inclusive, not below `min_price`.
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A parsed product list request.
#[derive(Debug, Clone)]
pub struct ProductFilter {
    pub q: Option<String>,
    pub status: Option<ProductStatus>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub page: PageRequest,
}

impl ProductFilter {
    /// No condition but the page.
    pub fn is_plain_page(&self) -> bool {
        self.q.is_none()
            && self.status.is_none()
            && self.min_price.is_none()
            && self.max_price.is_none()
    }
}

impl ProductQuery {
    pub fn parse(self) -> Result<ProductFilter, AppError> {
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .parse()?;
        let mut f = Fields::default();
        let q = f.check("q", types::text(self.q.as_deref(), 100));
        let price = |f: &mut Fields, field: &str, value: Option<i64>| match value {
            Some(v) if v < 0 => {
                f.fail(field, "must be 0 or more");
                None
            }
            other => Some(other),
        };
        let min_price = price(&mut f, "min_price", self.min_price);
        let max_price = price(&mut f, "max_price", self.max_price);
        if let (Some(Some(min)), Some(Some(max))) = (min_price, max_price)
            && min > max
        {
            f.fail("max_price", "must not be below min_price");
        }
        f.finish(|| {
            Some(ProductFilter {
                q: q?,
                status: self.status,
                min_price: min_price?,
                max_price: max_price?,
                page,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_product_body_fits_its_share_of_the_bulk_limit() {
        let media: Vec<String> = (0..MAX_MEDIA).map(|_| Uuid::now_v7().to_string()).collect();
        let product = serde_json::json!({
            "name": "é".repeat(200), "description": "é".repeat(5000), "price_cents": i64::MAX,
            "currency": "BRL", "sku": "S".repeat(64), "stock": MAX_STOCK, "status": "archived",
            "media_ids": media,
        });
        let body: CreateProduct = serde_json::from_value(product.clone()).unwrap();
        assert!(body.validate().is_ok(), "a valid product");
        // Pretty-printed inside a batch, every letter escaped as an ASCII-only encoder does.
        let batch = serde_json::json!({ "products": [product] });
        let text = serde_json::to_string_pretty(&batch)
            .unwrap()
            .replace('é', "\\u00e9");
        assert!(text.len() <= MAX_PRODUCT_JSON, "{}", text.len());
        assert!(MAX_BULK * text.len() <= BULK_BODY_LIMIT);
    }
}
