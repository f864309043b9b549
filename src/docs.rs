//! The OpenAPI 3.1 document (generated from the handlers), Swagger UI at `/docs` and ReDoc at
//! `/redoc`, every asset served from the binary.

use std::collections::btree_map::Entry;

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayItems, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Required};
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
        (name = "monitoring", description = "The activity log, monitoring rules (built-in and custom), the alerts they raise, and live events over WebSocket (docs/MONITORING.md)"),
        (name = "trust", description = "Progressive trust: the level, score and explanation, verifications (docs/TRUST.md)"),
        (name = "analytics", description = "Sales analytics in the tenant's time zone (trust-gated)"),
        (name = "api-keys", description = "API keys for machine clients (trust level 3)"),
        (name = "notifications", description = "Notifications: the recipient's own (in-app), sending to members, channel settings, preferences, templates, and Twilio's status webhook (docs/NOTIFICATIONS.md)"),
        (name = "admin", description = "Platform administration (platform admins only)"),
    )
)]
pub struct ApiDoc;

/// Applied to the finished document (after the routes are collected). Adds what every
/// endpoint of a kind shares, so handlers list only their own answers: bearer auth, the
/// `X-Tenant-ID` header, the errors of SPEC §1 and §2 (bodies, queries, path ids, the
/// database), and the problem+json body of every error status.
pub struct Conventions;

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

fn integer_header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
    header.description = Some(description.into());
    header
}

/// The rate-limit headers every tenant-scoped response carries (SPEC §5).
fn rate_limit_headers() -> Vec<(String, Header)> {
    let text = |description: &str| {
        let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
        header.description = Some(description.into());
        header
    };
    let mut headers = Vec::new();
    for window in ["Minute", "Hour", "Day"] {
        for (field, what) in [
            ("Limit", "requests allowed in the"),
            ("Remaining", "requests left, after this one, in the"),
            ("Reset", "seconds until the reset of the"),
        ] {
            let description = format!(
                "The tenant's {what} current UTC-aligned {} window.",
                window.to_lowercase()
            );
            headers.push((
                format!("X-RateLimit-{field}-{window}"),
                integer_header(&description),
            ));
        }
    }
    headers.push((
        "RateLimit-Policy".into(),
        text(
            "IETF RateLimit-Policy: `\"minute\";q=60;w=60, \"hour\";q=1000;w=3600, \"day\";q=10000;w=86400`",
        ),
    ));
    headers.push((
        "RateLimit".into(),
        text("IETF RateLimit: per window `r` (remaining) and `t` (seconds to reset)"),
    ));
    headers
}

/// Documents `status` as answering with `codes` too: a status the handler listed keeps its
/// description and gains these codes.
fn add_error(op: &mut Operation, status: &str, codes: &str) {
    match op.responses.responses.entry(status.to_string()) {
        Entry::Vacant(entry) => {
            entry.insert(ResponseBuilder::new().description(codes).build().into());
        }
        Entry::Occupied(mut entry) => {
            if let RefOr::T(response) = entry.get_mut()
                && !response.description.contains(codes)
            {
                response.description = format!("{}; {codes}", response.description);
            }
        }
    }
}

fn add_header(op: &mut Operation, status: &str, name: &str, header: Header) {
    if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
        response.headers.insert(name.into(), header);
    }
}

/// The `X-Tenant-ID` header: a string with the UUID pattern rather than `format: uuid`, which
/// generators type as a UUID object that their HTTP libraries refuse as a header value
/// (docs/OPERATIONS.md, "OpenAPI document").
fn tenant_header() -> Parameter {
    ParameterBuilder::new()
        .name("X-Tenant-ID")
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(
            "The tenant the request acts on: its id, a UUID. With an API key (`Bearer cck_...`), \
             which names its tenant, it may be left out; another tenant's id is 403.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(UUID_PATTERN)),
        ))
        .build()
}

pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The errors an operation can answer with, by what it reads.
fn document_errors(path: &str, op: &mut Operation) {
    let admin = path.starts_with("/api/v1/admin/");
    add_error(op, "401", "`unauthorized`: no valid bearer token");
    if admin {
        add_error(op, "403", "`forbidden`: not a platform admin");
    } else {
        op.parameters
            .get_or_insert_with(Vec::new)
            .push(tenant_header());
        add_error(
            op,
            "400",
            "`tenant_header_missing` or `tenant_header_invalid`",
        );
        add_error(
            op,
            "403",
            "`tenant_access_denied` (unknown tenant or not a member), `tenant_suspended`, \
             `forbidden` (role), or `quota_exceeded` on creates (with `quota`, `used`, \
             `limit` and `reason`: `quota`, or `trust_level` when the trust level's product cap \
             binds)",
        );
        add_error(
            op,
            "429",
            "`rate_limited`: a window of the tenant's rate limit is full; `Retry-After` says \
             when the refusing window resets",
        );
        add_header(
            op,
            "429",
            "Retry-After",
            integer_header("Seconds until the window that refused resets."),
        );
    }
    if path.contains('{') {
        add_error(
            op,
            "404",
            "`not_found`: no such resource in this tenant (also a malformed id)",
        );
    }
    let queried = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    if queried {
        add_error(
            op,
            "400",
            "`bad_request`: a query parameter is not of its type",
        );
        add_error(
            op,
            "422",
            "`validation_failed`: a query parameter out of its bounds",
        );
    }
    if op.request_body.is_some() {
        add_error(
            op,
            "400",
            "`malformed_json` or `invalid_body`: the body could not be read",
        );
        add_error(op, "413", "`payload_too_large`");
        add_error(
            op,
            "415",
            "`unsupported_media_type`: not the documented content type",
        );
        add_error(
            op,
            "422",
            "`validation_failed`: `errors` names each field that does not fit",
        );
    }
    add_error(op, "408", "`request_timeout`: the request took too long");
    add_error(
        op,
        "500",
        "`internal_error`: an unexpected failure, logged with the request id",
    );
    add_error(
        op,
        "503",
        "`service_unavailable`: the database cannot be reached; retry shortly",
    );
    add_header(
        op,
        "503",
        "Retry-After",
        integer_header("Seconds to wait before retrying."),
    );
}

/// Points each page's `items` at its item schema: utoipa inlines a generic argument
/// (juhaku/utoipa#1586), and a generated client then has two types for one item.
fn reference_page_items(components: &mut Components) {
    let names: Vec<String> = components.schemas.keys().cloned().collect();
    for name in names {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        if !components.schemas.contains_key(item) {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(page))) = components.schemas.get_mut(&name)
            && let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items")
        {
            items.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
        }
    }
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        reference_page_items(components);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A member's JWT, or on tenant-scoped endpoints an API key (`cck_...`, \
                         trust level 3); never an API key on `/api/v1/admin/*`.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The WebSocket authenticates in its first message, not with headers; Twilio's
            // webhook by its signature.
            let api = path.starts_with("/api/v1/")
                && path != OPENAPI_PATH
                && path != crate::monitoring::ws::PATH
                && path != crate::notify::webhook::PATH;
            let tenant_scoped = api && !path.starts_with("/api/v1/admin/");
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                if api {
                    op.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    document_errors(path, op);
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if (status.starts_with('4') || status.starts_with('5'))
                        && response.content.is_empty()
                    {
                        response
                            .content
                            .insert(crate::error::PROBLEM_CONTENT_TYPE.into(), problem_content());
                    }
                    if tenant_scoped {
                        response.headers.extend(rate_limit_headers());
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
