//! `/api/v1`: jobs, runs, output, run now, kill, version. JSON DTOs are defined here, next to the
//! handlers, and converted from the core types; nothing internal leaks into an error body.

use std::sync::Arc;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::State;
use crate::config::JobName;
use crate::runs::KillError;
use crate::scheduler::SchedulerError;
use crate::store::{ResultRow, RunFilter, RunRow, RunStatus};

type Shared = AxumState<Arc<State>>;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/version", get(version))
        .route("/api/v1/jobs/{job}/run", post(run_now))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{instance}", get(run))
        .route("/api/v1/runs/{instance}/output/{minion}", get(output))
        .route("/api/v1/runs/{instance}/kill", post(kill))
}

/// The one error type of the API: a status and a message for people.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "An API request failed.");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the sidecar's log".to_owned())
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
    protocol: u32,
}

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION"),
        protocol: saltpeter_protocol::PROTOCOL_VERSION,
    })
}

#[derive(Serialize)]
struct RunNow {
    job: String,
    scheduled: DateTime<Utc>,
}

async fn run_now(
    AxumState(state): Shared,
    Path(job): Path<String>,
) -> Result<Json<RunNow>, ApiError> {
    match state.scheduler.run_now(JobName::new(job.as_str())).await {
        Ok(scheduled) => Ok(Json(RunNow { job, scheduled })),
        Err(SchedulerError::UnknownJob(_)) => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("no job named {job}")))
        }
        Err(e) => Err(internal(e)),
    }
}

#[derive(Serialize)]
struct RunDto {
    instance: String,
    job: String,
    group: String,
    scheduled: DateTime<Utc>,
    trigger: &'static str,
    status: &'static str,
    reason: String,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<ResultDto>>,
}

impl From<RunRow> for RunDto {
    fn from(r: RunRow) -> Self {
        RunDto {
            instance: r.instance,
            job: r.job,
            group: r.group,
            scheduled: r.scheduled,
            trigger: crate::store::trigger_name(r.trigger),
            status: r.status.as_str(),
            reason: r.reason,
            started: r.started,
            finished: r.finished,
            results: None,
        }
    }
}

#[derive(Serialize)]
struct ResultDto {
    minion: String,
    phase: String,
    retcode: Option<i32>,
    reason: String,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    output_bytes: u64,
    output_dropped: u64,
}

impl From<ResultRow> for ResultDto {
    fn from(r: ResultRow) -> Self {
        ResultDto {
            minion: r.minion,
            phase: r.phase,
            retcode: r.retcode,
            reason: r.reason,
            started: r.started,
            finished: r.finished,
            output_bytes: r.output_bytes,
            output_dropped: r.output_dropped,
        }
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    job: Option<String>,
    status: Option<String>,
    minion: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    limit: Option<u32>,
}

async fn runs(
    AxumState(state): Shared,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            RunStatus::parse(s)
                .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("unknown status {s}")))?,
        ),
    };
    let filter = RunFilter {
        job: q.job,
        status,
        minion: q.minion,
        since: q.since,
        until: q.until,
        before: q.before,
        limit: q.limit.unwrap_or(50).min(1000),
    };
    let rows = state.store.runs(filter).await.map_err(internal)?;
    Ok(Json(rows.into_iter().map(RunDto::from).collect()))
}

async fn run(
    AxumState(state): Shared,
    Path(instance): Path<String>,
) -> Result<Json<RunDto>, ApiError> {
    let Some(row) = state.store.run(&instance).await.map_err(internal)? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {instance}")));
    };
    let results = state.store.results(&instance).await.map_err(internal)?;
    let mut dto = RunDto::from(row);
    dto.results = Some(results.into_iter().map(ResultDto::from).collect());
    Ok(Json(dto))
}

#[derive(Deserialize)]
struct OutputQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

/// Output as raw bytes from `offset` (for tailing: ask again from `X-Next-Offset`).
async fn output(
    AxumState(state): Shared,
    Path((instance, minion)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    let offset = q.offset.unwrap_or(0);
    let chunks = state
        .store
        .output(&instance, &minion, offset, q.limit.unwrap_or(1 << 20))
        .await
        .map_err(internal)?;
    let mut body = Vec::new();
    let mut next = offset;
    for c in chunks {
        let skip = usize::try_from(offset.saturating_sub(c.offset))
            .unwrap_or(usize::MAX)
            .min(c.data.len());
        body.extend_from_slice(&c.data[skip..]);
        next = next.max(c.offset + c.data.len() as u64);
    }
    Ok((
        [
            ("content-type", "application/octet-stream".to_owned()),
            ("x-next-offset", next.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct KillQuery {
    minion: Option<String>,
}

#[derive(Serialize)]
struct Killing {
    instance: String,
    minion: Option<String>,
}

async fn kill(
    AxumState(state): Shared,
    Path(instance): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<(StatusCode, Json<Killing>), ApiError> {
    match state.runs.kill(&instance, q.minion.as_deref()).await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(Killing { instance, minion: q.minion }))),
        Err(e @ (KillError::NotRunning(_) | KillError::NoMinion { .. })) => {
            Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ KillError::ShuttingDown) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}
