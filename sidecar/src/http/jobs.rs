//! Jobs: the list (with next runs, last result, success rate and a recent history), one job's
//! definition (every `env` value redacted: job environments hold secrets), a preview (the next N
//! runs and the minions the target resolves to now), the minion × run result matrix, run now, and
//! reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::Shared;
use super::audit::record;
use super::auth::{Admin, Operator, Viewer};
use super::error::{ApiError, ErrorBody, Path, Query, internal};
use super::summaries::{Entry, Summaries, WINDOW};
use super::{ReloadOutcome, State};
use crate::config::{Job, JobName};
use crate::salt::{ClientError, Publish, Target};
use crate::scheduler::SchedulerError;
use crate::store::RunStatus;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/jobs", get(list))
        .route("/api/v1/jobs/{job}", get(one))
        .route("/api/v1/jobs/{job}/preview", get(preview))
        .route("/api/v1/jobs/{job}/matrix", get(matrix))
        .route("/api/v1/jobs/{job}/run", post(run_now))
        .route("/api/v1/reload", post(reload))
}

/// What replaces every `env` value.
pub(super) const REDACTED: &str = "<redacted>";
/// Runs in the history strip.
const HISTORY: usize = 20;

/// A run, briefly.
#[derive(Serialize, ToSchema, Clone)]
pub(super) struct RunBrief {
    instance: String,
    scheduled: DateTime<Utc>,
    status: &'static str,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
}

impl From<&crate::store::RunRow> for RunBrief {
    fn from(r: &crate::store::RunRow) -> Self {
        RunBrief::from(&Entry::from(r))
    }
}

impl From<&Entry> for RunBrief {
    fn from(r: &Entry) -> Self {
        RunBrief {
            instance: r.instance.to_string(),
            scheduled: r.scheduled,
            status: r.status.as_str(),
            started: r.started,
            finished: r.finished,
        }
    }
}

/// A job in the list.
#[derive(Serialize, ToSchema)]
pub(super) struct JobSummary {
    name: String,
    group: String,
    description: Option<String>,
    /// `sec min hour dom mon dow year`.
    schedule: String,
    timezone: String,
    targets: String,
    target_type: String,
    enabled: bool,
    /// The next slots (three in the list, more on a job).
    next_runs: Vec<DateTime<Utc>>,
    /// The newest run, in flight or not.
    last: Option<RunBrief>,
    /// The newest finished run (not skipped or cancelled).
    last_result: Option<RunBrief>,
    /// Succeeded / finished among the last 30 runs; none before the first finished one.
    success_rate: Option<f64>,
    /// Whether a run is in flight.
    running: bool,
    /// The newest runs, newest first.
    history: Vec<RunBrief>,
}

/// Whether a run counts for the success rate and the last result.
fn finished(status: RunStatus) -> bool {
    matches!(status, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Killed)
}

/// What the state filter looks at: `running`, `disabled`, or the last result's status (`none`).
fn state_of(job: &Job, runs: &[Entry]) -> &'static str {
    if runs.iter().any(|r| r.status.is_open()) {
        "running"
    } else if !job.enabled {
        "disabled"
    } else {
        runs.iter().find(|r| finished(r.status)).map_or("none", |r| r.status.as_str())
    }
}

fn summary(job: &Job, runs: &[Entry], now: DateTime<Utc>, next: usize) -> JobSummary {
    let finished: Vec<&Entry> = runs.iter().filter(|r| finished(r.status)).collect();
    let succeeded = finished.iter().filter(|r| r.status == RunStatus::Succeeded).count();
    #[allow(clippy::cast_precision_loss)] // counts of at most WINDOW
    let success_rate = (!finished.is_empty()).then(|| succeeded as f64 / finished.len() as f64);
    JobSummary {
        name: job.name.as_str().to_owned(),
        group: job.group.clone(),
        description: job.description.clone(),
        schedule: job.schedule.cron().as_str().to_owned(),
        timezone: job.schedule.zone().name().to_owned(),
        targets: job.targets.clone(),
        target_type: job.target_type.as_str().to_owned(),
        enabled: job.enabled,
        next_runs: if job.enabled { job.schedule.upcoming(now, next) } else { Vec::new() },
        last: runs.first().map(RunBrief::from),
        last_result: finished.first().map(|r| RunBrief::from(*r)),
        success_rate,
        running: runs.iter().any(|r| r.status.is_open()),
        history: runs.iter().take(HISTORY).map(RunBrief::from).collect(),
    }
}

/// The default page size of the jobs list, and the largest.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs whose name, group, description or target contains this (case-insensitive).
    q: Option<String>,
    /// Only this group's jobs.
    group: Option<String>,
    /// Only jobs in this state: `running`, `failing` (last result failed or killed), `disabled`,
    /// `succeeded`, `none` (no finished run yet); `all` or empty for every job.
    state: Option<String>,
    /// Jobs per page (default 100, at most 1000).
    limit: Option<usize>,
    /// How many matching jobs to skip (by name order).
    offset: Option<usize>,
}

/// A page of the jobs list.
#[derive(Serialize, ToSchema)]
pub(super) struct JobList {
    /// This page, by name.
    jobs: Vec<JobSummary>,
    /// Jobs matching the filters, on every page.
    total: usize,
    offset: usize,
    limit: usize,
    /// Every group of every job (for a group filter), sorted.
    groups: Vec<String>,
}

/// The jobs, by name, a page at a time. Last results, success rates and histories come from the
/// summaries kept in memory (see `docs/api.md`), not from a query per job.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn list(
    AxumState(state): Shared,
    Extension(summaries): Extension<Arc<Summaries>>,
    _: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit} is not from 1 to {MAX_PAGE}")));
    }
    let offset = q.offset.unwrap_or(0);
    let wanted = match q.state.as_deref().unwrap_or("") {
        "" | "all" => None,
        s @ ("running" | "failing" | "disabled" | "succeeded" | "none") => Some(s),
        other => {
            return Err(ApiError::bad_request(format!(
                "state {other:?} is not one of all, running, failing, disabled, succeeded, none"
            )));
        }
    };
    let jobs = state.jobs.borrow().clone();
    let cache = summaries.current(&state.store, &jobs).await.map_err(internal)?;
    let now = Utc::now();
    let needle = q.q.map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
    let none: &[Entry] = &[];
    let runs_of = |job: &Job| cache.jobs.get(job.name.as_str()).map_or(none, Vec::as_slice);
    let matches = |job: &Job| {
        q.group.as_deref().is_none_or(|g| g.is_empty() || job.group == g)
            && needle.as_deref().is_none_or(|n| {
                cache.haystacks.get(job.name.as_str()).is_some_and(|h| h.contains(n))
            })
            && wanted.is_none_or(|w| match (w, state_of(job, runs_of(job))) {
                ("failing", s) => s == "failed" || s == "killed",
                (w, s) => w == s,
            })
    };
    let mut total = 0;
    let mut page = Vec::new();
    for job in jobs.values().filter(|j| matches(j)) {
        if total >= offset && page.len() < limit {
            page.push(summary(job, runs_of(job), now, 3));
        }
        total += 1;
    }
    Ok(Json(JobList { jobs: page, total, offset, limit, groups: cache.groups.clone() }))
}

/// A job's definition as loaded. `env` values are always redacted.
#[derive(Serialize, ToSchema)]
pub(super) struct Definition {
    command: String,
    file: String,
    user: Option<String>,
    cwd: Option<String>,
    /// Every value is `<redacted>`.
    env: BTreeMap<String, String>,
    /// Seconds; none = no timeout.
    timeout: Option<u64>,
    soft_timeout: Option<u64>,
    number_of_targets: Option<u32>,
    batch_size: Option<String>,
    allow_overlap: bool,
    catch_up: String,
    use_wrapper: bool,
}

/// One job: its summary, its definition and its next ten slots.
#[derive(Serialize, ToSchema)]
pub(super) struct JobDetail {
    #[serde(flatten)]
    summary: JobSummary,
    definition: Definition,
}

fn definition(job: &Job) -> Definition {
    Definition {
        command: job.command.clone(),
        file: job.file.display().to_string(),
        user: job.user.clone(),
        cwd: job.cwd.clone(),
        env: job.env.keys().map(|k| (k.clone(), REDACTED.to_owned())).collect(),
        timeout: job.timeout.map(|d| d.as_secs()),
        soft_timeout: job.soft_timeout.map(|d| d.as_secs()),
        number_of_targets: job.number_of_targets,
        batch_size: job.batch_size.map(|b| match b {
            crate::config::BatchSize::Count(n) => n.to_string(),
            crate::config::BatchSize::Percent(p) => format!("{p}%"),
        }),
        allow_overlap: job.allow_overlap,
        catch_up: format!("{:?}", job.catch_up).to_lowercase(),
        use_wrapper: job.use_wrapper,
    }
}

fn find(state: &State, name: &str) -> Result<Arc<Job>, ApiError> {
    state
        .jobs
        .borrow()
        .get(&JobName::new(name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no job named {name:?}")))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{job}", tag = "jobs", params(("job" = String, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn one(
    AxumState(state): Shared,
    _: Viewer,
    Path(name): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    let job = find(&state, &name)?;
    #[allow(clippy::cast_possible_truncation)] // WINDOW is small
    let recent =
        state.store.recent_runs(vec![name.clone()], WINDOW as u32).await.map_err(internal)?;
    let runs: Vec<Entry> =
        recent.get(&name).map(|r| r.runs.iter().map(Entry::from).collect()).unwrap_or_default();
    Ok(Json(JobDetail {
        summary: summary(&job, &runs, Utc::now(), 10),
        definition: definition(&job),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PreviewQuery {
    /// How many slots (default 10, at most 1000).
    n: Option<usize>,
}

/// What a job would do: its next slots and the minions its target matches now.
#[derive(Serialize, ToSchema)]
pub(super) struct Preview {
    next_runs: Vec<DateTime<Utc>>,
    /// The master's resolution of the target now; none when it could not be asked.
    targets: Option<Vec<String>>,
    /// Why `targets` is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    targets_error: Option<String>,
}

/// The next N slots and the minions the target resolves to now.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/preview", tag = "jobs",
    params(("job" = String, Path), PreviewQuery),
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody)))]
pub(super) async fn preview(
    AxumState(state): Shared,
    _: Viewer,
    Path(name): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    let job = find(&state, &name)?;
    let n = q.n.unwrap_or(10);
    if !(1..=1000).contains(&n) {
        return Err(ApiError::bad_request(format!("n {n} is not from 1 to 1000")));
    }
    let next_runs = job.schedule.upcoming(Utc::now(), n);
    let (targets, targets_error) = match &state.salt {
        None => (None, Some("no Salt master connected".to_owned())),
        Some(salt) => {
            let target = Target::new(job.targets.clone(), job.target_type);
            match salt.publish(&Publish::new(target, "test.ping")).await {
                Ok(p) => (Some(p.minions.iter().map(|m| m.as_str().to_owned()).collect()), None),
                Err(ClientError::NoMinions(_)) => (Some(Vec::new()), None),
                Err(e) => (None, Some(format!("Salt could not resolve the target: {e}"))),
            }
        }
    };
    Ok(Json(Preview { next_runs, targets, targets_error }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MatrixQuery {
    /// How many of the newest runs (default 30, at most 200).
    runs: Option<u32>,
}

/// Minion × run results of a job's newest runs.
#[derive(Serialize, ToSchema)]
pub(super) struct Matrix {
    /// Newest first; the columns.
    runs: Vec<RunBrief>,
    /// Sorted; the rows.
    minions: Vec<String>,
    /// `cells[minion][run]`: the exit code, `null` while running or without a result.
    cells: BTreeMap<String, Vec<Option<i32>>>,
}

/// The results heatmap of a job.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/matrix", tag = "jobs",
    params(("job" = String, Path), MatrixQuery),
    responses((status = 200, body = Matrix), (status = 404, body = ErrorBody)))]
pub(super) async fn matrix(
    AxumState(state): Shared,
    _: Viewer,
    Path(name): Path<String>,
    Query(q): Query<MatrixQuery>,
) -> Result<Json<Matrix>, ApiError> {
    find(&state, &name)?;
    let n = q.runs.unwrap_or(30).clamp(1, 200);
    let recent = state.store.recent_runs(vec![name.clone()], n).await.map_err(internal)?;
    let runs: Vec<RunBrief> =
        recent.get(&name).map(|r| r.runs.iter().map(RunBrief::from).collect()).unwrap_or_default();
    let column: std::collections::HashMap<&str, usize> =
        runs.iter().enumerate().map(|(i, r)| (r.instance.as_str(), i)).collect();
    let mut cells: BTreeMap<String, Vec<Option<i32>>> = BTreeMap::new();
    for (instance, result) in state.store.job_results(&name, n).await.map_err(internal)? {
        if let Some(&i) = column.get(instance.as_str()) {
            cells.entry(result.minion).or_insert_with(|| vec![None; runs.len()])[i] =
                result.retcode;
        }
    }
    Ok(Json(Matrix { minions: cells.keys().cloned().collect(), runs, cells }))
}

/// A manual run was asked for.
#[derive(Serialize, ToSchema)]
pub(super) struct RunNow {
    job: String,
    scheduled: DateTime<Utc>,
}

/// Runs a job now, outside its schedule (operator).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/run", tag = "jobs", params(("job" = String, Path)),
    responses((status = 202, body = RunNow), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(super) async fn run_now(
    AxumState(state): Shared,
    Operator(caller): Operator,
    Path(job): Path<String>,
) -> Result<(StatusCode, Json<RunNow>), ApiError> {
    let scheduled = run_job(&state, &caller, &job).await?;
    Ok((StatusCode::ACCEPTED, Json(RunNow { job, scheduled })))
}

/// Asks the scheduler for a manual run, and records who asked.
pub(super) async fn run_job(
    state: &State,
    caller: &super::Caller,
    job: &str,
) -> Result<DateTime<Utc>, ApiError> {
    // Global maintenance pauses new runs; a manual one is refused rather than recorded as skipped.
    if state.maintenance.snapshot().effective.global {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "global maintenance is on: {job:?} was not started (end the maintenance first)"
            ),
        ));
    }
    match state.scheduler.run_now(JobName::new(job)).await {
        Ok(scheduled) => {
            record(state, caller, "run", job.to_owned()).await;
            Ok(scheduled)
        }
        Err(SchedulerError::UnknownJob(_)) => {
            Err(ApiError::not_found(format!("no job named {job:?}")))
        }
        Err(e @ SchedulerError::Stopped) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}

/// What a reload changed.
#[derive(Serialize, ToSchema)]
pub(super) struct Reloaded {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    /// Problems in the files (a job with an error keeps its previous definition).
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl From<ReloadOutcome> for Reloaded {
    fn from(o: ReloadOutcome) -> Self {
        let names = |v: Vec<JobName>| v.into_iter().map(|n| n.as_str().to_owned()).collect();
        Reloaded {
            added: names(o.diff.added),
            removed: names(o.diff.removed),
            changed: names(o.diff.changed),
            errors: o.errors,
            warnings: o.warnings,
        }
    }
}

/// Reads the config directory again now (admin).
#[utoipa::path(post, path = "/api/v1/reload", tag = "jobs",
    responses((status = 200, body = Reloaded), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(super) async fn reload(
    AxumState(state): Shared,
    Admin(caller): Admin,
) -> Result<Json<Reloaded>, ApiError> {
    let unavailable =
        || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reloading is not available now");
    let tx = state.reload.as_ref().ok_or_else(unavailable)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(reply).await.map_err(|_| unavailable())?;
    let outcome = answer
        .await
        .map_err(|_| unavailable())?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let detail = format!(
        "added {}, removed {}, changed {}",
        outcome.diff.added.len(),
        outcome.diff.removed.len(),
        outcome.diff.changed.len()
    );
    record(&state, &caller, "reload", detail).await;
    Ok(Json(outcome.into()))
}
