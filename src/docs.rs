//! The OpenAPI 3.1 document (generated from the handlers), Swagger UI at `/docs` and ReDoc at
//! `/redoc`, every asset served from the binary.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "convcommerce",
        description = "Multi-tenant conversational-commerce API. Tenant-scoped endpoints need \
            `Authorization: Bearer <token>` and `X-Tenant-ID: <uuid>`; errors are RFC 9457 \
            problem documents with a stable `code`."
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "users", description = "Members of the tenant"),
        (name = "limits", description = "Rate limits, usage and quotas"),
        (name = "seller-profile", description = "The store's public profile (one per tenant)"),
        (name = "products", description = "The catalogue: prices, stock, status, images, search"),
        (name = "orders", description = "Orders: server-side totals, stock reservation, status changes, ratings"),
        (name = "conversations", description = "Customer conversations, one thread per customer and channel"),
        (name = "ai-config", description = "The chat bot's configuration (one per tenant)"),
        (name = "media", description = "Uploaded files: images and documents"),
        (name = "admin", description = "Platform administration (platform admins only)"),
    )
)]
pub struct ApiDoc;

/// Applied to the finished document (after the routes are collected). Adds what every
/// endpoint of a kind shares, so handlers list only their own answers:
/// bearer auth, the `X-Tenant-ID` header and the errors of SPEC §2.
pub struct Conventions;

fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            crate::error::PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// The rate-limit headers every tenant-scoped response carries (SPEC §5).
fn rate_limit_headers() -> Vec<(String, Header)> {
    let integer = || {
        Header::new(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer),
        )
    };
    let text = || {
        Header::new(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        )
    };
    let mut headers = Vec::new();
    for window in ["Minute", "Hour", "Day"] {
        for (field, what) in [
            ("Limit", "requests allowed in the"),
            ("Remaining", "requests left, after this one, in the"),
            ("Reset", "seconds until the reset of the"),
        ] {
            let mut header = integer();
            header.description = Some(format!(
                "The tenant's {what} current UTC-aligned {} window.",
                window.to_lowercase()
            ));
            headers.push((format!("X-RateLimit-{field}-{window}"), header));
        }
    }
    let mut policy = text();
    policy.description = Some(
        "IETF RateLimit-Policy: `\"minute\";q=60;w=60, \"hour\";q=1000;w=3600, \"day\";q=10000;w=86400`"
            .into(),
    );
    headers.push(("RateLimit-Policy".into(), policy));
    let mut current = text();
    current.description =
        Some("IETF RateLimit: per window `r` (remaining) and `t` (seconds to reset)".into());
    headers.push(("RateLimit".into(), current));
    headers
}

fn add_response(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| problem(description));
}

fn tenant_header() -> Parameter {
    ParameterBuilder::new()
        .name("X-Tenant-ID")
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some("The tenant the request acts on."))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                ))),
        ))
        .build()
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") || path == OPENAPI_PATH {
                continue;
            }
            let admin = path.starts_with("/api/v1/admin/");
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                add_response(op, "401", "`unauthorized`: no valid bearer token");
                if admin {
                    add_response(op, "403", "`forbidden`: not a platform admin");
                } else {
                    op.parameters
                        .get_or_insert_with(Vec::new)
                        .push(tenant_header());
                    add_response(
                        op,
                        "400",
                        "`tenant_header_missing` or `tenant_header_invalid`",
                    );
                    add_response(
                        op,
                        "403",
                        "`tenant_access_denied` (unknown tenant or not a member), \
                         `tenant_suspended`, `forbidden` (role), or `quota_exceeded` on creates \
                         (with `quota`, `used` and `limit`)",
                    );
                    add_response(
                        op,
                        "429",
                        "`rate_limited`: a window of the tenant's rate limit is full; \
                         `Retry-After` says when the refusing window resets",
                    );
                    if let Some(RefOr::T(limited)) = op.responses.responses.get_mut("429") {
                        let mut retry = Header::new(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::Integer),
                        );
                        retry.description =
                            Some("Seconds until the window that refused resets.".into());
                        limited.headers.insert("Retry-After".into(), retry);
                    }
                    for response in op.responses.responses.values_mut() {
                        if let RefOr::T(response) = response {
                            response.headers.extend(rate_limit_headers());
                        }
                    }
                }
            }
        }
    }
}

const REDOC_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>convcommerce API</title>
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="/api/v1/openapi.json"></redoc>
  <script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

/// ReDoc's standalone bundle from the npm package `redoc` (MIT, assets/redoc/LICENSE).
const REDOC_JS: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");

async fn redoc_page() -> Html<&'static str> {
    Html(REDOC_HTML)
}

async fn redoc_js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
}

/// Swagger UI (with the document at [`OPENAPI_PATH`]) and ReDoc.
pub fn router(openapi: OpenApiDoc) -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/docs").url(OPENAPI_PATH, openapi))
        .route("/redoc", get(redoc_page))
        .route("/redoc/redoc.standalone.js", get(redoc_js))
}
