//! The routes the original Saltpeter's README promised but never served: `GET /status` (runs in
//! flight and each job's last run with its per-minion results) and `POST /kill {"job": NAME}`
//! (kills every run of the job in flight). Same shapes as that README, same tokens as the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::State;
use super::api::{Shared, kill_run};
use super::auth::{Operator, Viewer};
use super::error::{ApiError, ErrorBody, internal};

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/status", get(status)).route("/kill", post(kill))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RunningDto {
    started: Option<DateTime<Utc>>,
    name: String,
    machines: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct MachineResult {
    starttime: Option<DateTime<Utc>>,
    endtime: Option<DateTime<Utc>>,
    retcode: Option<i32>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct JobState {
    next_run: Option<DateTime<Utc>>,
    last_run: Option<DateTime<Utc>>,
    results: BTreeMap<String, MachineResult>,
}

/// The original's status document.
#[derive(Serialize, ToSchema)]
pub(super) struct Status {
    /// Runs in flight by instance.
    running: BTreeMap<String, RunningDto>,
    /// Each job's next slot and last run.
    state: BTreeMap<String, JobState>,
}

fn machine(r: crate::store::ResultRow) -> (String, MachineResult) {
    (r.minion, MachineResult { starttime: r.started, endtime: r.finished, retcode: r.retcode })
}

/// Runs in flight and every job's last run (the original README's `GET /status`).
#[utoipa::path(get, path = "/status", tag = "compat",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
pub(super) async fn status(AxumState(state): Shared, _: Viewer) -> Result<Json<Status>, ApiError> {
    let mut running = BTreeMap::new();
    for run in state.store.open_runs().await.map_err(internal)? {
        let results = state.store.results(&run.instance).await.map_err(internal)?;
        running.insert(
            run.instance.clone(),
            RunningDto {
                started: run.started,
                name: run.job,
                machines: results.into_iter().map(|r| r.minion).collect(),
            },
        );
    }
    let jobs = state.jobs.borrow().clone();
    let names = jobs.keys().map(|n| n.as_str().to_owned()).collect();
    let last = state.store.recent_runs(names, 1).await.map_err(internal)?;
    let now = Utc::now();
    let mut jobs_state = BTreeMap::new();
    for (name, job) in jobs.iter() {
        let last_run = last.get(name.as_str()).and_then(|r| r.runs.first());
        let results = match last_run {
            Some(run) => state
                .store
                .results(&run.instance)
                .await
                .map_err(internal)?
                .into_iter()
                .map(machine)
                .collect(),
            None => BTreeMap::new(),
        };
        jobs_state.insert(
            name.as_str().to_owned(),
            JobState {
                next_run: job.enabled.then(|| job.schedule.next_after(now)).flatten(),
                last_run: last_run.map(|r| r.started.unwrap_or(r.scheduled)),
                results,
            },
        );
    }
    Ok(Json(Status { running, state: jobs_state }))
}

/// `{"job": NAME}`.
#[derive(Deserialize, ToSchema)]
pub(super) struct KillJob {
    job: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct KillAnswer {
    status: &'static str,
    message: String,
}

/// Kills every run of a job in flight (the original README's `POST /kill`; operator).
#[utoipa::path(post, path = "/kill", tag = "compat", request_body = KillJob,
    responses((status = 200, body = KillAnswer), (status = 404, body = ErrorBody)))]
pub(super) async fn kill(
    AxumState(state): Shared,
    Operator(caller): Operator,
    raw: axum::body::Bytes,
) -> Result<Json<KillAnswer>, ApiError> {
    // The README's own example sends JSON with curl's default form content type: any type goes.
    let body: KillJob = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"job\": NAME}}: {e}")))?;
    let open = state.store.open_runs().await.map_err(internal)?;
    let mut killed = 0;
    for run in open.iter().filter(|r| r.job == body.job) {
        // A run that ended meanwhile is not an error.
        if kill_run(&state, &caller, &run.instance, None).await.is_ok() {
            killed += 1;
        }
    }
    if killed == 0 {
        return Err(ApiError::not_found(format!("job {:?} has no run in flight", body.job)));
    }
    Ok(Json(KillAnswer { status: "ok", message: format!("Kill signal sent to job: {}", body.job) }))
}
