//! The web UI adapter: server-rendered HTML pages (every page reads without JavaScript) and a
//! little embedded script for live updates over Server-Sent Events, served by `weir server`
//! on the engine's own port beside gRPC (one listener, one address for users and firewalls,
//! one place for TLS and tokens). Like `crate::api`, it decodes requests, calls the engine's
//! services in domain terms and renders their answers; it decides nothing itself. Errors
//! become pages through the same mapping that makes gRPC statuses (`api::status`), so what a
//! browser may see of an internal error is what a gRPC client may see.
//!
//! Layout: `auth` (login, session cookie, CSRF), `page` (the shared layout and small
//! renderers: state badges, times), `assets` (CSS and script, embedded), and a file per area:
//! `dag` (graphs as SVG), `runs` (the runs list), `run` (a run's page, its live events,
//! cancel and retry), `step` (a step instance's page, logs and outputs), `ansi` (log colours),
//! `pipelines` (list, versions, source, graph, the start form, the schedule card), `metrics`
//! and `plot` (a metric across runs as SVG, runs compared), `models` (registry, promote and
//! rollback after a dry run, lineage), `workers` (the workers page); `prometheus` serves
//! `/metrics` for scrapers and `hooks` webhook deliveries (`/hooks/PIPELINE`), both outside
//! the session guard.

mod ansi;
mod approvals;
mod assets;
mod audit;
mod auth;
mod dag;
mod explain;
mod hooks;
mod metrics;
mod models;
mod page;
mod pipelines;
mod plot;
mod prometheus;
mod run;
mod runs;
mod series_plot;
mod step;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::server::Engine;
use crate::server::error::ApiError;

pub(crate) use auth::Auth;
pub(crate) use hooks::MAX_BODY as MAX_HOOK_BODY;

/// What every handler gets: the engine and the session rules.
#[derive(Clone)]
pub(crate) struct Web {
    pub engine: Arc<Engine>,
    pub auth: Arc<Auth>,
}

/// The UI's routes for `engine`; `access` (open: loopback only) guards them, and sessions are
/// signed under a key derived from `key_material` (the configured tokens; none: random).
pub(crate) fn router(
    engine: Arc<Engine>,
    access: Arc<crate::access::Access>,
    key_material: Option<&str>,
) -> Result<Router, String> {
    let web = Web { engine, auth: Arc::new(Auth::new(access, key_material)?) };
    let open = Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/{name}", get(assets::serve))
        // Prometheus scrapes without a browser session: its own bearer check (prometheus.rs).
        .route("/metrics", get(prometheus::serve))
        // Webhook senders sign with the pipeline's secret instead of a session (hooks.rs).
        .route(
            "/hooks/{pipeline}",
            axum::routing::post(hooks::deliver).layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_BODY)),
        );
    let guarded = Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/runs") }))
        .route("/runs", get(runs::list))
        .route("/events", get(runs::events))
        .route("/workers", get(workers::list))
        .route("/runs/{id}", get(run::show))
        .route("/runs/{id}/events", get(run::events))
        .route("/runs/{id}/cancel", axum::routing::post(run::cancel))
        .route("/runs/{id}/retry", get(run::retry_plan).post(run::retry))
        .route("/runs/{id}/steps/{instance}", get(step::show))
        .route("/runs/{id}/steps/{instance}/approve", axum::routing::post(approvals::decide))
        .route("/runs/{id}/steps/{instance}/logs.txt", get(step::logs_txt))
        .route("/runs/{id}/steps/{instance}/logs/events", get(step::log_events))
        .route("/runs/{id}/steps/{instance}/outputs/{*path}", get(step::output))
        .route("/logout", axum::routing::post(auth::logout))
        .route("/plots", get(metrics::plots))
        .route("/compare", get(metrics::compare))
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::show))
        .route("/models/{name}/promote", axum::routing::post(models::promote))
        .route("/models/{name}/rollback", axum::routing::post(models::rollback))
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{name}", get(pipelines::show))
        .route("/pipelines/{name}/start", axum::routing::post(pipelines::start))
        .route("/pipelines/{name}/pause", axum::routing::post(pipelines::pause))
        .route("/pipelines/{name}/backfill", axum::routing::post(pipelines::backfill))
        .route_layer(axum::middleware::from_fn_with_state(web.clone(), auth::require));
    Ok(open.merge(guarded).with_state(web))
}

/// An engine error as a page: the status and message `api::status` would give a gRPC
/// client (internal details logged there with an error id, never shown).
pub(crate) struct WebError(pub ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> WebError {
        WebError(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = crate::api::status::status(self.0);
        let code = http_status(status.code());
        let body = page::error_page(code, status.message());
        (code, body).into_response()
    }
}

/// The HTTP status for a gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => StatusCode::BAD_REQUEST,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists | C::Aborted | C::FailedPrecondition => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What no route answers: gRPC's UNIMPLEMENTED for a gRPC call, a 404 page for a browser.
pub(crate) async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no such method: {}", req.uri().path())).into_http();
    }
    (StatusCode::NOT_FOUND, page::error_page(StatusCode::NOT_FOUND, "No such page.")).into_response()
}
