//! Product endpoints: list and search, create, get, patch, delete.

use axum::Json;
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{
    BULK_BODY_LIMIT, BulkCreated, BulkProducts, CreateProduct, Product, ProductQuery, UpdateProduct,
};
use super::store::{self, ProductError};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, IdPath, Page};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::trust::gate::{BulkProductImport, Unlocked};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_products))
        // 500 products of up to 5,000-character descriptions do not fit the 1 MiB of other
        // bodies; this limit (on the route above only) fits 500 of the largest.
        .layer(DefaultBodyLimit::max(BULK_BODY_LIMIT))
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
}

/// Lists products, newest first, filtered by text (name or sku), status and price range.
#[utoipa::path(get, path = "/api/v1/products", tag = "products",
    params(ProductQuery),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit, q, prices)"),
    ))]
pub async fn list_products(
    ctx: TenantCtx,
    Query(query): Query<ProductQuery>,
) -> AppResult<Page<Product>> {
    let filter = query.parse()?;
    let products = store::list(ctx.db(), &filter).await?;
    Ok(Page::from_rows(products, filter.page, |p: &Product| p.id))
}

/// Adds a product (any member).
#[utoipa::path(post, path = "/api/v1/products", tag = "products",
    request_body = CreateProduct,
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 404, description = "`not_found`: a `media_ids[i]` that is not a media of this tenant"),
        (status = 409, description = "`sku_taken`"),
        (status = 422, description = "`validation_failed` (name, price, currency, sku, stock, media_ids)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_product(
    ctx: TenantCtx,
    ApiJson(body): ApiJson<CreateProduct>,
) -> AppResult<(StatusCode, Json<Product>)> {
    let new = body.validate()?;
    let product = store::create(ctx.db(), ctx.activity(), &new).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Creates 1-500 products at once (trust level 2), all or none: an invalid item is 422 with
/// `errors[].field` like `products[2].price_cents` and nothing is created. The batch counts
/// against the trust level's product cap and the product quota as one create of N. The body
/// may take up to 16.7 MB (500 of the largest products), unlike the 1 MiB of other bodies.
#[utoipa::path(post, path = "/api/v1/products/bulk", tag = "products",
    request_body = BulkProducts,
    responses(
        (status = 201, description = "Created, in the order sent", body = BulkCreated),
        (status = 403, description = "`feature_not_available` (below trust level 2, with `feature` and `required_level`), `quota_exceeded` (the whole batch does not fit; `reason` `trust_level` or `quota`)"),
        (status = 404, description = "`not_found`: a `products[i].media_ids[j]` that is not a media of this tenant"),
        (status = 409, description = "`sku_taken` (detail names `products[i].sku`)"),
        (status = 422, description = "`validation_failed`: `errors[].field` is `products[i].<field>`"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn import_products(
    ctx: Unlocked<BulkProductImport>,
    ApiJson(body): ApiJson<BulkProducts>,
) -> AppResult<(StatusCode, Json<BulkCreated>)> {
    let items = body.validate()?;
    let created = store::create_many(ctx.db(), ctx.activity(), &items).await?;
    Ok((StatusCode::CREATED, Json(BulkCreated { items: created })))
}

/// One product.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "`not_found` (also for another tenant's product)"),
    ))]
pub async fn get_product(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<Product>> {
    Ok(Json(store::get(ctx.db(), id).await?))
}

/// Changes a product (any member); only the fields sent change.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "The updated product", body = Product),
        (status = 404, description = "`not_found`: the product, or a `media_ids[i]`"),
        (status = 409, description = "`sku_taken`"),
        (status = 422, description = "`validation_failed`"),
    ))]
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub async fn update_product(
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> AppResult<Json<Product>> {
    let change = body.validate()?;
    Ok(Json(
        store::update(ctx.db(), ctx.activity(), id, &change).await?,
    ))
}

/// Deletes a product (any member). Orders keep their lines, without the product link.
#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
    ))]
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub async fn delete_product(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<StatusCode> {
    store::delete(ctx.db(), ctx.activity(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<ProductError> for AppError {
    #[track_caller]
    fn from(err: ProductError) -> Self {
        match err {
            ProductError::NotFound => Self::NotFound("product"),
            ProductError::SkuTaken => Self::Conflict {
                code: "sku_taken",
                detail: "A product with this sku already exists in the tenant.".into(),
            },
            ProductError::MediaMissing(index) => Self::MissingReference {
                field: match index {
                    Some(i) => format!("media_ids[{i}]"),
                    None => "media_ids".into(),
                },
                what: "media",
            },
            ProductError::ItemSkuTaken(i) => Self::Conflict {
                code: "sku_taken",
                detail: format!("products[{i}].sku: a product with this sku already exists."),
            },
            ProductError::ItemMediaMissing(i, j) => Self::MissingReference {
                field: format!("products[{i}].media_ids[{j}]"),
                what: "media",
            },
            ProductError::Db(e) => e.into(),
        }
    }
}
