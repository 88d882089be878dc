//! The HTTP side: the JSON API under `/api/v1` (with its OpenAPI description), the original's
//! `GET /status` and `POST /kill`. It binds `api_ws_bind_addr:api_ws_port` (127.0.0.1:8888
//! unless configured otherwise: binding elsewhere is a conscious choice).
//!
//! - `auth`: tokens, roles and CORS; every route but the UI's assets needs a caller.
//! - `error`: the one error shape and extractors that answer malformed input with it.
//! - `api`: runs, output, kill, version; `jobs`: jobs, preview, run now, reload;
//!   `maint`: maintenance; `audit`: the audit log; `compat`: the original's routes.
//! - `openapi`: the document, generated from the handlers' annotations.
//!
//! Handlers reach the scheduler, the run engine, maintenance and the store through their handles;
//! the job set through a `watch` the daemon updates on reload. DTOs live beside their handlers.

mod api;
mod audit;
pub mod auth;
mod compat;
mod error;
mod jobs;
mod maint;
mod openapi;
mod summaries;
#[cfg(test)]
mod tests;
mod ui;
mod ws;
mod ws_original;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use auth::{Access, Caller};

use crate::config::{Job, JobDiff, JobName};
use crate::maintenance::MaintenanceHandle;
use crate::runs::RunsHandle;
use crate::salt::SaltClient;
use crate::scheduler::SchedulerHandle;
use crate::store::StoreHandle;

/// The jobs in effect, as the scheduler has them.
pub type JobSet = Arc<BTreeMap<JobName, Arc<Job>>>;

/// What a reload asked through the API did.
#[derive(Clone, Debug, Default)]
pub struct ReloadOutcome {
    pub diff: JobDiff,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// A reload request: the daemon reloads the config directory and answers.
pub type ReloadRequest = oneshot::Sender<Result<ReloadOutcome, String>>;

/// The largest request body accepted (maintenance reasons, not uploads).
pub const BODY_LIMIT: usize = 64 << 10;

/// What the handlers reach.
#[derive(Clone)]
pub struct State {
    pub runs: RunsHandle,
    pub scheduler: SchedulerHandle,
    pub store: StoreHandle,
    pub jobs: watch::Receiver<JobSet>,
    pub maintenance: MaintenanceHandle,
    /// Resolves targets for previews; none in tests without a master.
    pub salt: Option<Arc<SaltClient>>,
    pub access: Access,
    /// Where `POST /api/v1/reload` sends its request; none when reloading is not wired.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// What `/metrics` serves; none = 404.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The whole router (its jobs summaries are filled on first use).
pub fn router(state: State) -> Router {
    router_with(Arc::new(state), Arc::default())
}

fn router_with(state: Arc<State>, summaries: Arc<summaries::Summaries>) -> Router {
    let cors = state.access.cors();
    Router::new()
        .merge(api::routes())
        .merge(jobs::routes())
        .merge(maint::routes())
        .merge(audit::routes())
        .merge(compat::routes())
        .merge(openapi::routes())
        .merge(ui::routes())
        .merge(ws::routes())
        .route("/metrics", axum::routing::get(metrics))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::authenticate))
        .layer(axum::Extension(summaries))
        .layer(axum::Extension(Arc::new(ws::Hub::default())))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(cors)
        .with_state(state)
}

/// `/metrics`: Prometheus text format (any valid token; Prometheus sends it as a bearer token).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    _: auth::Viewer,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match &state.metrics {
        Some(m) => (
            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            m.render(),
        )
            .into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves the API on `listener` (a `TcpListener`, or TLS: `crate::tls::HttpListener`) until
/// `cancel`.
pub async fn serve<L>(listener: L, state: State, cancel: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt as _;
    if !state.access.has_tokens() {
        warn!(
            "No api_tokens configured: the HTTP API and UI answer loopback callers only. \
             Create a token with `saltpeter token new --name NAME --role admin`."
        );
    }
    let state = Arc::new(state);
    let summaries = Arc::new(summaries::Summaries::default());
    // Fill the jobs summaries now rather than on the first listing.
    let warm = (Arc::clone(&state), Arc::clone(&summaries));
    tokio::spawn(async move {
        let jobs = warm.0.jobs.borrow().clone();
        if let Err(e) = warm.1.current(&warm.0.store, &jobs).await {
            warn!(error = %e, "Cannot read the jobs' recent runs; the jobs list will try again.");
        }
    });
    let app = router_with(state, summaries).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener.tap_io(|_| ()), app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        warn!(error = %e, "The HTTP API stopped.");
    }
}

impl ReloadOutcome {
    pub fn of(reloaded: &crate::config::Reloaded) -> ReloadOutcome {
        let report = &reloaded.loaded.report;
        ReloadOutcome {
            diff: reloaded.diff.clone(),
            errors: report.errors.iter().map(ToString::to_string).collect(),
            warnings: report.warnings.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Reads the config directory again (for `POST /api/v1/reload`), from the configuration in effect:
/// a job that became invalid keeps its previous definition, as with a file change.
pub async fn reload_now(
    dir: &std::path::Path,
    previous: &crate::config::Loaded,
) -> Result<crate::config::Reloaded, String> {
    let (dir, previous) = (dir.to_path_buf(), previous.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        crate::config::reload(&dir, &previous, chrono::Utc::now())
            .map(|loaded| (JobDiff::between(&previous.jobs, &loaded.jobs), loaded))
            .map_err(|e| format!("cannot read the config directory {}: {e}", dir.display()))
    })
    .await
    .map_err(|e| format!("the reload failed: {e}"))??;
    Ok(crate::config::Reloaded { diff: loaded.0, loaded: loaded.1 })
}
