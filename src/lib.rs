//! convcommerce: a multi-tenant conversational-commerce backend in which PostgreSQL
//! row-level security keeps every tenant's rows to itself. See docs/ARCHITECTURE.md.

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod clock;
pub mod commerce;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod dev;
pub mod docs;
pub mod error;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod monitoring;
pub mod notify;
pub mod scope;
pub mod serve;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tenancy;
pub mod trust;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::jwt::Verifier;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db::Db;
use crate::error::{AppError, PROBLEM_CONTENT_TYPE, Problem, problem_response, problem_type};
use crate::limits::Limiter;
use crate::limits::redis::RedisBackend;
use crate::limits::usage::UsageRecorder;
use crate::metrics::Metrics;
use crate::monitoring::hub::Hub;
use crate::monitoring::hub::fanout::Publisher;
use crate::state::{AppState, Services};
use crate::tenancy::directory::Directory;

/// JSON bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The server, bound to its port and ready to run. Shared by `main` and the tests.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// Cancelled to begin a graceful shutdown.
    shutdown: CancellationToken,
    /// Cancelled once the server has drained, to stop background jobs (which then do their
    /// final work, such as the last usage flush).
    jobs_stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Connects to the database, refuses an unsafe role, binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the clock the service reads (tests move it by hand).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let url = config
            .database_url
            .clone()
            .context("DATABASE_URL is required to build the application")?;
        let check = db::connect_once(url.expose_secret())
            .await
            .context("connecting with DATABASE_URL")?;
        db::safety::check(&check).await?;
        drop(check);
        let listen = db::tls::PgTarget::parse(
            config
                .database_listen_url
                .as_ref()
                .unwrap_or(&url)
                .expose_secret(),
        )
        .context("DATABASE_LISTEN_URL")?;

        let media = storage::MediaStore::from_config(&config)?;
        media.check().await.context("MEDIA_STORE cannot be used")?;

        let config = Arc::new(config);
        let statements = if config.db_prepared_statements {
            db::Statements::Prepared
        } else {
            db::Statements::unnamed()
        };
        let db = Db::connect_with(&url, config.db_pool_size, config.db_read_lanes, statements)?;
        let metrics = Arc::new(Metrics::default());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let directory = Directory::new(db.clone(), metrics.clone(), config.directory_ttl);
        let mut listener = db::listen::Listener::default();
        listener.subscribe(
            tenancy::directory::INVALIDATION_CHANNEL,
            Arc::new(directory.clone()),
        );
        let redis = config
            .redis_url
            .as_ref()
            .map(|url| RedisBackend::new(url.expose_secret()))
            .transpose()
            .context("REDIS_URL")?
            .map(Arc::new);
        let limiter = config
            .rate_limits_enabled
            .then(|| Arc::new(Limiter::new(redis.clone(), metrics.clone())));
        let shutdown = CancellationToken::new();
        let jobs_stop = CancellationToken::new();
        let (hub, publisher, hub_tasks) =
            monitoring_hub(&config, &mut listener, &db, &metrics, &shutdown, &jobs_stop)?;
        let wake = notify::outbox::Wake::default();
        let notifier = notify::Notifier::new(
            &config.notify,
            clock.clone(),
            publisher.clone(),
            wake.clone(),
        );
        let outbox = Arc::new(notify::outbox::Outbox::new(
            db.clone(),
            clock.clone(),
            &config.notify,
            config.public_base_url.as_ref(),
            metrics.clone(),
            wake,
        )?);
        let (live, live_task) = monitoring::live::spawn(
            db.clone(),
            publisher.clone(),
            Arc::new(notifier.clone()),
            metrics.clone(),
            jobs_stop.clone(),
        );
        let activity_sink: Arc<dyn monitoring::activity::ActivitySink> = live;
        let (activity, activity_writer) = monitoring::activity::writer::spawn(
            db.clone(),
            config.activity_buffer,
            activity_sink.clone(),
            metrics.clone(),
            jobs_stop.clone(),
        );
        let trust = trust::recompute::Trust::new(
            db.clone(),
            clock.clone(),
            config.trust_grace,
            directory.clone(),
            activity_sink.clone(),
            notifier.clone(),
        );
        let state = AppState::new(Services {
            verifier: Arc::new(Verifier::new(&config.jwt, http)),
            config: config.clone(),
            db: db.clone(),
            directory: directory.clone(),
            metrics,
            clock,
            limiter,
            redis,
            usage: UsageRecorder::default(),
            readiness: health::Readiness::default(),
            media,
            activity_sink,
            activity,
            hub,
            publisher,
            trust,
            notifier,
        });
        let mut background = vec![
            activity_writer,
            live_task,
            outbox.spawn(jobs_stop.clone()),
            listener.spawn(listen, jobs_stop.clone()),
            jobs::spawn(
                jobs::usage::UsageFlush {
                    db: db.clone(),
                    recorder: state.usage.clone(),
                },
                jobs::Scope::Instance,
                config.usage_flush_interval,
                db.clone(),
                state.metrics.clone(),
                jobs_stop.clone(),
            ),
            jobs::spawn(
                jobs::cleanup::Cleanup {
                    db: db.clone(),
                    media: state.media.clone(),
                    clock: state.clock.clone(),
                    metrics: state.metrics.clone(),
                },
                jobs::Scope::Cluster,
                config.cleanup_interval,
                db.clone(),
                state.metrics.clone(),
                jobs_stop.clone(),
            ),
        ];
        background.extend(hub_tasks);
        background.push(jobs::spawn(
            notify::purge::NotificationPurge {
                db: db.clone(),
                clock: state.clock.clone(),
            },
            jobs::Scope::Cluster,
            config.cleanup_interval,
            db.clone(),
            state.metrics.clone(),
            jobs_stop.clone(),
        ));
        background.push(jobs::spawn(
            jobs::hub_events::HubEventsPurge { db: db.clone() },
            jobs::Scope::Cluster,
            jobs::hub_events::KEPT,
            db.clone(),
            state.metrics.clone(),
            jobs_stop.clone(),
        ));
        background.push(jobs::spawn(
            jobs::trust::TrustRecompute {
                db: db.clone(),
                trust: state.trust.clone(),
                clock: state.clock.clone(),
            },
            jobs::Scope::Cluster,
            config.trust_recompute_interval,
            db,
            state.metrics.clone(),
            jobs_stop.clone(),
        ));

        let listener = TcpListener::bind((config.host, config.port))
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        Ok(Self {
            router: router(state.clone()),
            listener,
            state,
            shutdown,
            jobs_stop,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Where this instance's producers publish hub events (SPEC §7).
    pub fn publisher(&self) -> Publisher {
        self.state.publisher.clone()
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled (or SIGINT/SIGTERM when `signals`), then
    /// stops accepting, finishes in-flight requests and stops background work.
    pub async fn run_until_stopped(self, signals: bool) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        if signals {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
        }
        serve::serve(
            self.listener,
            self.router,
            self.state.config.connection_limits,
            self.state.metrics.clone(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        // The WebSockets left `serve` at their upgrade; they close with 1001 on `shutdown`.
        self.state.hub.tasks.close();
        self.state.hub.tasks.wait().await;
        self.jobs_stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.state.db.close();
        tracing::info!("server stopped");
        Ok(())
    }
}

/// The WebSocket hub, closed by `shutdown`, and its fan-out, stopped with the jobs (so
/// events published during the drain still go out).
fn monitoring_hub(
    config: &Config,
    listener: &mut db::listen::Listener,
    db: &Db,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    jobs_stop: &CancellationToken,
) -> anyhow::Result<(Arc<Hub>, Publisher, Vec<JoinHandle<()>>)> {
    let hub = Arc::new(Hub::new(
        config.websocket,
        metrics.clone(),
        shutdown.clone(),
    ));
    let (publisher, tasks) = monitoring::hub::fanout::start(
        listener,
        config.redis_url.as_ref(),
        db.clone(),
        hub.clone(),
        metrics.clone(),
        jobs_stop.clone(),
    )
    .context("REDIS_URL")?;
    Ok((hub, publisher, tasks))
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
        _ = token.cancelled() => return,
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    token.cancel();
}

/// Every route, with the OpenAPI document collected from their annotations.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .merge(admin::routes::router())
        .merge(admin::trust::router())
        .merge(commerce::tenant::router())
        .merge(commerce::settings::routes::router())
        .merge(commerce::users::routes::router())
        .merge(commerce::usage::router())
        .merge(commerce::profile::routes::router())
        .merge(commerce::products::routes::router())
        .merge(commerce::orders::routes::router())
        .merge(commerce::conversations::routes::router())
        .merge(commerce::ai_config::routes::router())
        .merge(commerce::media::routes::router())
        .merge(commerce::analytics::routes::router())
        .merge(trust::routes::router())
        .merge(api_keys::routes::router())
        .merge(monitoring::rules::routes::router())
        .merge(monitoring::activity::routes::router())
        .merge(monitoring::ws::router())
        .merge(notify::routes::router())
        .merge(notify::webhook::router())
        .split_for_parts();
    utoipa::Modify::modify(&docs::Conventions, &mut openapi);
    (router, openapi)
}

fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    api.merge(docs::router(openapi))
        .merge(console::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(problem_json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::observe,
        ))
        .layer(cors(&state.config))
        .with_state(state)
}

fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            tenancy::TENANT_HEADER,
            telemetry::REQUEST_ID,
        ])
        .expose_headers(exposed_headers())
        .max_age(Duration::from_secs(600))
}

/// What a browser client may read: the request id, `Retry-After` and every rate-limit header
/// (SPEC §5).
fn exposed_headers() -> Vec<HeaderName> {
    let mut names = vec![
        telemetry::REQUEST_ID,
        HeaderName::from_static("retry-after"),
        HeaderName::from_static("ratelimit"),
        HeaderName::from_static("ratelimit-policy"),
    ];
    for field in ["limit", "remaining", "reset"] {
        for window in ["minute", "hour", "day"] {
            names.push(
                HeaderName::try_from(format!("x-ratelimit-{field}-{window}"))
                    .expect("a valid header name"),
            );
        }
    }
    names
}

async fn not_found() -> Response {
    AppError::NotFound("resource").into_response()
}

/// The safety net behind SPEC §1's "no plain-text error bodies": an error response that a
/// layer or the framework produced without a problem document gets one for its status.
async fn problem_json_errors(req: Request, next: Next) -> Response {
    // A method outside the standard ones reaches no handler (and no metric label of its own).
    let response = if telemetry::method_label(req.method()) == "other" {
        StatusCode::NOT_IMPLEMENTED.into_response()
    } else {
        next.run(req).await
    };
    let status = response.status();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let (mut parts, _) = response.into_parts();
    let mut fresh = problem_response(&Problem {
        kind: problem_type(code),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: status
            .canonical_reason()
            .unwrap_or("The request failed.")
            .to_string(),
        code: code.to_string(),
        errors: None,
        extensions: serde_json::Map::new(),
    });
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(fresh.headers_mut().drain());
    Response::from_parts(parts, fresh.into_body())
}

/// Runs migrations with the owner role.
pub async fn migrate(owner_url: &SecretString) -> anyhow::Result<usize> {
    db::migrate::run(owner_url.expose_secret()).await
}
