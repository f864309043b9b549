//! Order endpoints: place, list, get, move on, rate; and the API's answer to each store error.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{CreateOrder, Order, OrderQuery, RateOrder, Rating, Transition};
use super::store::{self, LineProblem, OrderError};
use crate::error::{AppError, AppResult, FieldError};
use crate::extract::{ApiJson, IdPath, Page};
use crate::state::AppState;
use crate::tenancy::TenantCtx;
use crate::trust::level::Feature;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order))
        .routes(routes!(get_order))
        .routes(routes!(transition_order))
        .routes(routes!(rate_order))
}

/// Lists orders, newest first, by status, channel, creation time and customer text.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(OrderQuery),
    responses(
        (status = 200, description = "A page of orders", body = Page<Order>),
        (status = 400, description = "`invalid_cursor`"),
        (status = 422, description = "`validation_failed` (limit, q, since/until)"),
    ))]
pub async fn list_orders(
    ctx: TenantCtx,
    Query(query): Query<OrderQuery>,
) -> AppResult<Page<Order>> {
    let filter = query.parse()?;
    let orders = store::list(ctx.db(), &filter).await?;
    Ok(Page::from_rows(orders, filter.page, |o: &Order| o.id))
}

/// Places an order: prices come from the products (never from the request), each line's
/// `unit_price_cents` is frozen, and the stock is reserved in the same transaction. It starts
/// `pending`, or `confirmed` when the tenant's `auto_confirm_orders` setting is on (and its
/// trust level has that feature).
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Created (status `pending`, or `confirmed` with `auto_confirm_orders`)", body = Order),
        (status = 404, description = "`not_found`: `items[i].product_id` is not a product of this tenant"),
        (status = 409, description = "`insufficient_stock`"),
        (status = 422, description = "`validation_failed` (customer, quantities, a product not active or in another currency)"),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_order(
    State(state): State<AppState>,
    ctx: TenantCtx,
    ApiJson(body): ApiJson<CreateOrder>,
) -> AppResult<(StatusCode, Json<Order>)> {
    let new = body.validate()?;
    let auto_confirm = Feature::AutoConfirmOrders.available_at(ctx.tenant.trust_level);
    let order = store::create(
        ctx.db(),
        ctx.activity(),
        &state.notifier,
        &new,
        auto_confirm,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// One order, with its lines and rating.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "`not_found` (also for another tenant's order)"),
    ))]
pub async fn get_order(ctx: TenantCtx, IdPath(id): IdPath) -> AppResult<Json<Order>> {
    Ok(Json(store::get(ctx.db(), id).await?))
}

/// Moves an order to its next status (cancelling releases the stock).
#[utoipa::path(post, path = "/api/v1/orders/{id}/transitions", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    request_body = Transition,
    responses(
        (status = 200, description = "The order in its new status", body = Order),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_transition`"),
        (status = 422, description = "`validation_failed` (e.g. tracking_number without `shipped`)"),
    ))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn transition_order(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<Transition>,
) -> AppResult<Json<Order>> {
    let change = body.validate()?;
    Ok(Json(
        store::transition(ctx.db(), ctx.activity(), &state.notifier, id, &change).await?,
    ))
}

/// Records the customer's rating of a delivered order (once).
#[utoipa::path(post, path = "/api/v1/orders/{id}/rating", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    request_body = RateOrder,
    responses(
        (status = 201, description = "Rated", body = Rating),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`invalid_state` (not delivered) or `already_rated`"),
        (status = 422, description = "`validation_failed` (stars 1-5)"),
    ))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn rate_order(
    ctx: TenantCtx,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<RateOrder>,
) -> AppResult<(StatusCode, Json<Rating>)> {
    let rating = body.validate()?;
    Ok((
        StatusCode::CREATED,
        Json(store::rate(ctx.db(), ctx.activity(), id, &rating).await?),
    ))
}

impl From<OrderError> for AppError {
    #[track_caller]
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::NotFound => Self::NotFound("order"),
            OrderError::ProductMissing(i) => Self::MissingReference {
                field: format!("items[{i}].product_id"),
                what: "product",
            },
            OrderError::Lines(problems) => Self::Validation(
                problems
                    .into_iter()
                    .map(|(i, problem)| {
                        let message = match problem {
                            LineProblem::NotOnSale(status) => {
                                format!("the product is {}, not on sale", status.as_str())
                            }
                            LineProblem::Currency { product, order } => format!(
                                "the product is priced in {product}, the order in {order}: \
                                 one currency per order"
                            ),
                        };
                        FieldError::new(format!("items[{i}].product_id"), message)
                    })
                    .collect(),
            ),
            OrderError::TotalTooLarge => Self::validation("items", "the order total is too large"),
            OrderError::InsufficientStock(line) => Self::Conflict {
                code: "insufficient_stock",
                detail: match line {
                    Some((i, stock, quantity)) => {
                        format!("items[{i}]: {stock} in stock, {quantity} ordered")
                    }
                    None => "The stock changed; try again.".into(),
                },
            },
            OrderError::InvalidTransition { from, to } => Self::Conflict {
                code: "invalid_transition",
                detail: format!(
                    "An order cannot move from {} to {}.",
                    from.as_str(),
                    to.as_str()
                ),
            },
            OrderError::NotDelivered => Self::Conflict {
                code: "invalid_state",
                detail: "Only a delivered order can be rated.".into(),
            },
            OrderError::AlreadyRated => Self::Conflict {
                code: "already_rated",
                detail: "This order has already been rated.".into(),
            },
            OrderError::CommitUnknown(id) => Self::OutcomeUnknown {
                resource: "order",
                id,
            },
            OrderError::Db(e) => e.into(),
        }
    }
}
