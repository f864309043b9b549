//! SQL for products. Every statement also filters `tenant_id` explicitly.

use uuid::Uuid;

use super::model::{NewProduct, Product, ProductChange, ProductFilter};
use crate::commerce::filter::{Search, Statement, Where};
use crate::db::{Conn, DbError, OnConstraint, TenantDb, TenantTx, Violation};
use crate::monitoring::activity::{Change, Recorder};

/// What can go wrong storing products, in storage terms (the routes choose the API's answer).
#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("no such product")]
    NotFound,
    #[error("the sku is taken")]
    SkuTaken,
    /// A media id that is not a media of this tenant: its position in `media_ids`, when
    /// known (a media deleted meanwhile is found only by the foreign key).
    #[error("media missing")]
    MediaMissing(Option<usize>),
    /// In a bulk import: `products[i].sku` is taken by an existing product.
    #[error("products[{0}].sku is taken")]
    ItemSkuTaken(usize),
    /// In a bulk import: `products[i].media_ids[j]` is not a media of this tenant.
    #[error("products[{0}].media_ids[{1}]: media missing")]
    ItemMediaMissing(usize, usize),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Violation for ProductError {
    fn violated(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.violated(),
            _ => None,
        }
    }
}

type Result<T, E = ProductError> = std::result::Result<T, E>;

/// Product search: name and sku, through `product_search_terms` (migration 0002).
const SEARCH: Search = Search {
    id: "p.id",
    terms: "product_search_terms",
    term_id: "product_id",
    text: "(p.name || ' ' || coalesce(p.sku, ''))",
};

/// The statement behind `GET /api/v1/products` (public so that a test can check its plan).
pub fn list_statement(tenant_id: Uuid, filter: &ProductFilter) -> Statement {
    let mut w = Where::tenant("p.tenant_id", tenant_id);
    if let Some(q) = &filter.q {
        w.search(&SEARCH, q);
    }
    w.push_opt("p.status = {}", filter.status);
    w.push_opt("p.price_cents >= {}", filter.min_price);
    w.push_opt("p.price_cents <= {}", filter.max_price);
    let tail = w.page("p.id", filter.page);
    Statement {
        sql: format!(
            "SELECT {} FROM products p WHERE {} {tail}",
            Product::COLUMNS,
            w.sql()
        ),
        filter: w,
    }
}

/// A page of products. A plain page walks the (tenant_id, id) index, so it goes to a read
/// lane; a search or a filter may read many rows, so it goes to the pool.
pub async fn list(db: &TenantDb, filter: &ProductFilter) -> Result<Vec<Product>> {
    let statement = list_statement(db.tenant_id(), filter);
    let rows = if filter.is_plain_page() {
        db.read(&statement.sql, &statement.params()).await?
    } else {
        db.query(&statement.sql, &statement.params()).await?
    };
    Ok(rows.iter().map(Product::from_row).collect())
}

async fn fetch(conn: &Conn, tenant_id: Uuid, id: Uuid) -> Result<Product> {
    conn.query_opt(&select_one(), &[&tenant_id, &id])
        .await?
        .map(|r| Product::from_row(&r))
        .ok_or(ProductError::NotFound)
}

fn select_one() -> String {
    format!(
        "SELECT {} FROM products p WHERE p.tenant_id = $1 AND p.id = $2",
        Product::COLUMNS
    )
}

/// One product, by key on a read lane.
pub async fn get(db: &TenantDb, id: Uuid) -> Result<Product> {
    db.read_opt(&select_one(), &[&db.tenant_id(), &id])
        .await?
        .map(|r| Product::from_row(&r))
        .ok_or(ProductError::NotFound)
}

/// Every id in `media_ids` must be a media of this tenant; the first that is not is named.
/// (A media deleted meanwhile trips `product_media_media_fkey` on insert instead.)
async fn check_media(tx: &TenantTx, media_ids: &[Uuid]) -> Result<()> {
    if media_ids.is_empty() {
        return Ok(());
    }
    let found: Vec<Uuid> = tx
        .query(
            "SELECT id FROM media WHERE tenant_id = $1 AND id = ANY($2)",
            &[&tx.tenant_id(), &media_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match media_ids.iter().position(|id| !found.contains(id)) {
        Some(i) => Err(ProductError::MediaMissing(Some(i))),
        None => Ok(()),
    }
}

async fn attach_media(tx: &TenantTx, product_id: Uuid, media_ids: &[Uuid]) -> Result<()> {
    tx.execute(
        "DELETE FROM product_media WHERE tenant_id = $1 AND product_id = $2",
        &[&tx.tenant_id(), &product_id],
    )
    .await?;
    if media_ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO product_media (tenant_id, product_id, media_id, position)
         SELECT $1, $2, m.id, (m.n - 1)::smallint
         FROM unnest($3::uuid[]) WITH ORDINALITY AS m(id, n)",
        &[&tx.tenant_id(), &product_id, &media_ids],
    )
    .await
    .on_constraint("product_media_media_fkey", || {
        ProductError::MediaMissing(None)
    })?;
    Ok(())
}

/// Creates a product in one pooled transaction; the product quota trigger runs in it.
pub async fn create(db: &TenantDb, activity: &Recorder, new: &NewProduct) -> Result<Product> {
    let tx = db.begin().await?;
    check_media(&tx, &new.media_ids).await?;
    let id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO products (tenant_id, id, name, description, price_cents, currency, sku,
             stock, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &tx.tenant_id(),
            &id,
            &new.name,
            &new.description,
            &new.price.get(),
            &new.currency.as_str(),
            &new.sku.as_ref().map(|s| s.as_str()),
            &new.stock,
            &new.status,
        ],
    )
    .await
    .on_constraint("products_sku_key", || ProductError::SkuTaken)?;
    attach_media(&tx, id, &new.media_ids).await?;
    let product = fetch(&tx, tx.tenant_id(), id).await?;
    activity
        .commit(tx, Change::new("product.created", "product", id))
        .await?;
    Ok(product)
}

/// Creates every product of a bulk import in one transaction, or none: the batch first
/// claims room for all of them under the quota counter's lock (one create of N against the
/// trust cap and the quota), then inserts them in one statement.
pub async fn create_many(
    db: &TenantDb,
    activity: &Recorder,
    items: &[NewProduct],
) -> Result<Vec<Product>> {
    let tx = db.begin().await?;
    let tenant_id = tx.tenant_id();
    tx.execute(
        "SELECT require_quota_room($1, 'products', $2)",
        &[&tenant_id, &(items.len() as i64)],
    )
    .await?;
    let wanted: Vec<Uuid> = items.iter().flat_map(|p| p.media_ids.clone()).collect();
    if !wanted.is_empty() {
        let found: Vec<Uuid> = tx
            .query(
                "SELECT id FROM media WHERE tenant_id = $1 AND id = ANY($2)",
                &[&tenant_id, &wanted],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (i, item) in items.iter().enumerate() {
            if let Some(j) = item.media_ids.iter().position(|m| !found.contains(m)) {
                return Err(ProductError::ItemMediaMissing(i, j));
            }
        }
    }
    let skus: Vec<&str> = items
        .iter()
        .filter_map(|p| p.sku.as_ref().map(|s| s.as_str()))
        .collect();
    if !skus.is_empty() {
        let taken: Vec<String> = tx
            .query(
                "SELECT sku FROM products WHERE tenant_id = $1 AND sku = ANY($2)",
                &[&tenant_id, &skus],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(i) = items.iter().position(|p| {
            p.sku
                .as_ref()
                .is_some_and(|s| taken.iter().any(|t| t == s.as_str()))
        }) {
            return Err(ProductError::ItemSkuTaken(i));
        }
    }
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let names: Vec<&str> = items.iter().map(|p| p.name.as_str()).collect();
    let descriptions: Vec<Option<&str>> = items.iter().map(|p| p.description.as_deref()).collect();
    let prices: Vec<i64> = items.iter().map(|p| p.price.get()).collect();
    let currencies: Vec<&str> = items.iter().map(|p| p.currency.as_str()).collect();
    let item_skus: Vec<Option<&str>> = items
        .iter()
        .map(|p| p.sku.as_ref().map(|s| s.as_str()))
        .collect();
    let stocks: Vec<i32> = items.iter().map(|p| p.stock).collect();
    let statuses: Vec<&str> = items.iter().map(|p| p.status.as_str()).collect();
    tx.execute(
        "INSERT INTO products (tenant_id, id, name, description, price_cents, currency, sku,
             stock, status)
         SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[],
             $7::text[], $8::int[], $9::text[])",
        &[
            &tenant_id,
            &ids,
            &names,
            &descriptions,
            &prices,
            &currencies,
            &item_skus,
            &stocks,
            &statuses,
        ],
    )
    .await
    .on_constraint("products_sku_key", || ProductError::SkuTaken)?;
    let (media_products, media, positions): (Vec<Uuid>, Vec<Uuid>, Vec<i16>) = items
        .iter()
        .zip(&ids)
        .flat_map(|(p, id)| {
            p.media_ids
                .iter()
                .enumerate()
                .map(move |(n, m)| (*id, *m, n as i16))
        })
        .fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (p, m, n)| {
                acc.0.push(p);
                acc.1.push(m);
                acc.2.push(n);
                acc
            },
        );
    if !media.is_empty() {
        tx.execute(
            "INSERT INTO product_media (tenant_id, product_id, media_id, position)
             SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::int2[])",
            &[&tenant_id, &media_products, &media, &positions],
        )
        .await
        .on_constraint("product_media_media_fkey", || {
            ProductError::MediaMissing(None)
        })?;
    }
    let mut created: Vec<Product> = tx
        .query(
            &format!(
                "SELECT {} FROM products p WHERE p.tenant_id = $1 AND p.id = ANY($2)",
                Product::COLUMNS
            ),
            &[&tenant_id, &ids],
        )
        .await?
        .iter()
        .map(Product::from_row)
        .collect();
    created.sort_by_key(|p| ids.iter().position(|id| *id == p.id));
    let changes = ids
        .iter()
        .map(|id| Change::new("product.created", "product", *id))
        .collect();
    activity.commit_all(tx, changes).await?;
    Ok(created)
}

/// Changes a product in one pooled transaction.
pub async fn update(
    db: &TenantDb,
    activity: &Recorder,
    id: Uuid,
    change: &ProductChange,
) -> Result<Product> {
    let tx = db.begin().await?;
    if let Some(media_ids) = &change.media_ids {
        check_media(&tx, media_ids).await?;
    }
    let updated = tx
        .execute(
            "UPDATE products SET
                 name = coalesce($3, name),
                 description = CASE WHEN $4 THEN $5 ELSE description END,
                 price_cents = coalesce($6, price_cents),
                 currency = coalesce($7, currency),
                 sku = CASE WHEN $8 THEN $9 ELSE sku END,
                 stock = coalesce($10, stock),
                 status = coalesce($11, status),
                 updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
            &[
                &tx.tenant_id(),
                &id,
                &change.name,
                &change.description.is_some(),
                &change.description.clone().flatten(),
                &change.price.map(|p| p.get()),
                &change.currency.as_ref().map(|c| c.as_str()),
                &change.sku.is_some(),
                &change.sku.clone().flatten().as_ref().map(|s| s.as_str()),
                &change.stock,
                &change.status,
            ],
        )
        .await
        .on_constraint("products_sku_key", || ProductError::SkuTaken)?;
    if updated == 0 {
        return Err(ProductError::NotFound);
    }
    if let Some(media_ids) = &change.media_ids {
        attach_media(&tx, id, media_ids).await?;
    }
    let product = fetch(&tx, tx.tenant_id(), id).await?;
    activity
        .commit(tx, Change::new("product.updated", "product", id))
        .await?;
    Ok(product)
}

/// Deletes a product, with its activity, in one pooled transaction; its order lines keep
/// their copy of name, sku and price.
pub async fn delete(db: &TenantDb, activity: &Recorder, id: Uuid) -> Result<()> {
    let tx = db.begin().await?;
    let deleted = tx
        .execute(
            "DELETE FROM products WHERE tenant_id = $1 AND id = $2",
            &[&tx.tenant_id(), &id],
        )
        .await?;
    if deleted == 0 {
        return Err(ProductError::NotFound);
    }
    activity
        .commit(tx, Change::new("product.deleted", "product", id))
        .await?;
    Ok(())
}
