//! `/api/v1`: runs (paginated, filtered), a run with its per-minion results, ranged output, kill,
//! version. JSON DTOs are defined here, next to the handlers, and converted from the store's rows;
//! nothing internal leaks into an error body.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::State;
use super::audit::record;
use super::auth::{Operator, Viewer};
use super::error::{ApiError, ErrorBody, Path, Query, internal};
use crate::runs::KillError;
use crate::store::{Cursor, ResultRow, RunFilter, RunRow, RunStatus};

pub(super) type Shared = AxumState<Arc<State>>;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/version", get(version))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{instance}", get(run))
        .route("/api/v1/runs/{instance}/output/{minion}", get(output))
        .route("/api/v1/runs/{instance}/kill", post(kill))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Version {
    /// Saltpeter's version.
    version: &'static str,
    /// The agent protocol version.
    protocol: u32,
}

/// The sidecar's version and agent protocol version.
#[utoipa::path(get, path = "/api/v1/version", tag = "meta",
    responses((status = 200, body = Version), (status = 401, body = ErrorBody)))]
pub(super) async fn version(_: Viewer) -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION"),
        protocol: saltpeter_protocol::PROTOCOL_VERSION,
    })
}

/// The caller.
#[derive(Serialize, ToSchema)]
pub(super) struct WhoAmI {
    /// The token's name.
    name: String,
    /// `viewer`, `operator` or `admin`.
    role: &'static str,
}

/// Who the token belongs to, and its role.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "meta",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(super) async fn whoami(Viewer(caller): Viewer) -> Json<WhoAmI> {
    Json(WhoAmI { name: caller.name, role: caller.role.as_str() })
}

/// A run: one slot of a job being executed.
#[derive(Serialize, ToSchema)]
pub(super) struct RunDto {
    pub(super) instance: String,
    pub(super) job: String,
    pub(super) group: String,
    pub(super) scheduled: DateTime<Utc>,
    /// `schedule`, `manual` or `catch-up`.
    pub(super) trigger: &'static str,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `cancelled` or `killed`.
    pub(super) status: &'static str,
    pub(super) reason: String,
    pub(super) started: Option<DateTime<Utc>>,
    pub(super) finished: Option<DateTime<Utc>>,
    /// Per-minion results (only on a single run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) results: Option<Vec<ResultDto>>,
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

/// One minion's part of a run.
#[derive(Serialize, ToSchema)]
pub(super) struct ResultDto {
    pub(super) minion: String,
    pub(super) phase: String,
    /// The exit code once known (124 timeout, 143 killed, 253 heartbeat lost, 255 error).
    pub(super) retcode: Option<i32>,
    pub(super) reason: String,
    pub(super) started: Option<DateTime<Utc>>,
    pub(super) finished: Option<DateTime<Utc>>,
    /// Bytes of output received (the next offset to read from).
    pub(super) output_bytes: u64,
    /// Bytes dropped by the per-minion output cap.
    pub(super) output_dropped: u64,
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

/// The most runs one page holds.
pub(super) const MAX_PAGE: u32 = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs that targeted this minion.
    minion: Option<String>,
    /// Only runs scheduled at or after this instant (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only runs scheduled before this instant (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Runs per page (default 50, at most 1000).
    limit: Option<u32>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct RunPage {
    runs: Vec<RunDto>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Recorded runs, newest first, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn runs(
    AxumState(state): Shared,
    _: Viewer,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("unknown status {s:?}; one of {}", known.join(", ")))
        })?),
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::bad_request(format!("cursor {c:?} is not one this API gave out"))
        })?),
    };
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=MAX_PAGE) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!("limit {n} is not from 1 to {MAX_PAGE}")));
        }
    };
    let filter = RunFilter {
        job: q.job.filter(|j| !j.is_empty()),
        status,
        minion: q.minion.filter(|m| !m.is_empty()),
        since: q.since,
        until: q.until,
        before: None,
        after,
        limit,
    };
    let rows = state.store.runs(filter).await.map_err(internal)?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(Cursor::of)).flatten();
    Ok(Json(RunPage {
        next: next.map(|c| c.encode()),
        runs: rows.into_iter().map(RunDto::from).collect(),
    }))
}

/// One run with its per-minion results.
#[utoipa::path(get, path = "/api/v1/runs/{instance}", tag = "runs",
    params(("instance" = String, Path, description = "The run's instance id")),
    responses((status = 200, body = RunDto), (status = 404, body = ErrorBody)))]
pub(super) async fn run(
    AxumState(state): Shared,
    _: Viewer,
    Path(instance): Path<String>,
) -> Result<Json<RunDto>, ApiError> {
    let Some(row) = state.store.run(&instance).await.map_err(internal)? else {
        return Err(ApiError::not_found(format!("no run {instance}")));
    };
    let results = state.store.results(&instance).await.map_err(internal)?;
    let mut dto = RunDto::from(row);
    dto.results = Some(results.into_iter().map(ResultDto::from).collect());
    Ok(Json(dto))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OutputQuery {
    /// The byte offset to read from (the `X-Next-Offset` of the previous read).
    offset: Option<u64>,
    /// Only the last N bytes (overrides `offset`).
    tail: Option<u64>,
    /// At most about this many bytes (default 1 MiB).
    limit: Option<u64>,
}

/// A minion's output as raw bytes from `offset`. For tailing, ask again from `X-Next-Offset`;
/// `X-Total-Bytes` is how much was received so far.
#[utoipa::path(get, path = "/api/v1/runs/{instance}/output/{minion}", tag = "runs",
    params(("instance" = String, Path), ("minion" = String, Path), OutputQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
               headers(("x-next-offset" = u64), ("x-total-bytes" = u64))),
              (status = 404, body = ErrorBody)))]
pub(super) async fn output(
    AxumState(state): Shared,
    _: Viewer,
    Path((instance, minion)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    let results = state.store.results(&instance).await.map_err(internal)?;
    let Some(result) = results.iter().find(|r| r.minion == minion) else {
        return Err(ApiError::not_found(format!("run {instance} has no minion {minion}")));
    };
    let total = result.output_bytes;
    let offset = match q.tail {
        Some(tail) => total.saturating_sub(tail),
        None => q.offset.unwrap_or(0),
    };
    let limit = q.limit.unwrap_or(1 << 20).clamp(1, 16 << 20);
    let chunks = state.store.output(&instance, &minion, offset, limit).await.map_err(internal)?;
    let mut body = Vec::new();
    let mut next = offset;
    for c in chunks {
        // A chunk that starts past `next` follows a gap the output cap dropped.
        let skip =
            usize::try_from(next.saturating_sub(c.offset)).unwrap_or(usize::MAX).min(c.data.len());
        body.extend_from_slice(&c.data[skip..]);
        next = next.max(c.offset + c.data.len() as u64);
    }
    Ok((
        [
            ("content-type", "application/octet-stream".to_owned()),
            ("x-next-offset", next.to_string()),
            ("x-total-bytes", total.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct KillQuery {
    /// Kill only this minion's part of the run.
    minion: Option<String>,
}

/// A kill was asked for; the run reports `killed` (143) once the processes ended.
#[derive(Serialize, ToSchema)]
pub(super) struct Killing {
    instance: String,
    minion: Option<String>,
}

/// Kills a run, or one minion of it (operator).
#[utoipa::path(post, path = "/api/v1/runs/{instance}/kill", tag = "runs",
    params(("instance" = String, Path), KillQuery),
    responses((status = 202, body = Killing), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(super) async fn kill(
    AxumState(state): Shared,
    Operator(caller): Operator,
    Path(instance): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<(StatusCode, Json<Killing>), ApiError> {
    kill_run(&state, &caller, &instance, q.minion.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(Killing { instance, minion: q.minion })))
}

/// Asks the engine to kill, and records who asked.
pub(super) async fn kill_run(
    state: &State,
    caller: &super::Caller,
    instance: &str,
    minion: Option<&str>,
) -> Result<(), ApiError> {
    match state.runs.kill(instance, minion).await {
        Ok(()) => {
            let detail = match minion {
                Some(m) => format!("{instance} minion {m}"),
                None => instance.to_owned(),
            };
            record(state, caller, "kill", detail).await;
            Ok(())
        }
        Err(e @ (KillError::NotRunning(_) | KillError::NoMinion { .. })) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Err(e @ KillError::ShuttingDown) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}
