//! The original Saltpeter UI's WebSocket messages on `/ws`, so that UI keeps working against us.
//!
//! Client → server: `{"subscribe": job|[jobs]}`, `{"unsubscribe": …}`, `{"run": job}`,
//! `{"killCron": job}`, `{"killMachine": {cron, machine, job_instance?}}`,
//! `{"getTimeline": {start_date, end_date, id}}`, `{"ack": …}` (ignored, as the original did).
//! Server → client: `config` on connect (every job with `env` values redacted: the original sent
//! them in clear), `status` every 2 s, per subscribed job `output_chunk` (positions are byte
//! offsets; the original counted Python characters) and `details`, and the type-less `timeline`.
//! Run and kill need an operator token, as through the API, and are audited.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::auth::Caller;
use crate::config::Role;
use crate::store::RunFilter;

/// A message of the original UI.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Original {
    Subscribe(OneOrMany),
    Unsubscribe(OneOrMany),
    Run(String),
    KillCron(String),
    KillMachine(KillMachine),
    GetTimeline(Timeline),
    Ack(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn names(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct KillMachine {
    cron: String,
    machine: String,
    job_instance: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Timeline {
    start_date: DateTime<Utc>,
    end_date: DateTime<Utc>,
    id: Value,
}

/// One original-UI client's state.
#[derive(Default)]
pub(super) struct Session {
    subscribed: HashSet<String>,
    /// (job, minion) → the instance and the next byte offset sent.
    positions: HashMap<(String, String), (String, u64)>,
    details: HashMap<String, String>,
}

/// `{"type":"config", …}`: the jobs as the original showed them, `env` values redacted.
pub(super) fn config(state: &State) -> Value {
    let jobs = state.jobs.borrow().clone();
    let crons: BTreeMap<&str, Value> = jobs
        .values()
        .map(|j| {
            let env: BTreeMap<&str, &str> =
                j.env.keys().map(|k| (k.as_str(), super::jobs::REDACTED)).collect();
            let value = json!({
                "command": j.command, "targets": j.targets, "target_type": j.target_type.as_str(),
                "group": j.group, "schedule": j.schedule.cron().as_str(), "env": env,
                "description": j.description,
            });
            (j.name.as_str(), value)
        })
        .collect();
    let m = state.maintenance.snapshot();
    json!({
        "type": "config",
        "config": {
            "crons": crons,
            "maintenance": {"global": m.effective.global, "machines": m.effective.machines},
            "saltpeter_config": {},
            "serial": jobs.len(),
        },
        "sp_version": env!("CARGO_PKG_VERSION"),
    })
}

/// `{"type":"status", …}`: runs in flight and each job's last run.
pub(super) async fn status(state: &State) -> Option<Value> {
    let open = state.store.open_runs().await.ok()?;
    let mut running = serde_json::Map::new();
    for run in open {
        let machines: Vec<String> =
            state.store.results(&run.instance).await.ok()?.into_iter().map(|r| r.minion).collect();
        running.insert(
            run.instance.clone(),
            json!({"started": run.started.unwrap_or(run.scheduled), "name": run.job, "machines": machines}),
        );
    }
    let names: Vec<String> = state.jobs.borrow().keys().map(|n| n.as_str().to_owned()).collect();
    let last = state.store.recent_runs(names, 1).await.ok()?;
    let last_state: serde_json::Map<String, Value> = last
        .into_iter()
        .filter_map(|(job, recent)| {
            let r = recent.runs.into_iter().next()?;
            let ok = r.status == crate::store::RunStatus::Succeeded;
            Some((job, json!({"last_run": r.started.unwrap_or(r.scheduled), "result_ok": ok})))
        })
        .collect();
    Some(json!({"type": "status", "running": running, "last_state": last_state,
                "sp_version": env!("CARGO_PKG_VERSION")}))
}

/// Handles one message; answers what to send back.
pub(super) async fn handle(
    state: &State,
    caller: &Caller,
    session: &mut Session,
    message: Original,
) -> Vec<Value> {
    let operator = caller.role >= Role::Operator;
    let refuse = |what: &str| {
        vec![
            json!({"type": "error", "error": format!("token {:?} may not {what}: it needs the operator role", caller.name)}),
        ]
    };
    match message {
        Original::Subscribe(names) => {
            session.subscribed.extend(names.names());
            Vec::new()
        }
        Original::Unsubscribe(names) => {
            for n in names.names() {
                session.subscribed.remove(&n);
                session.details.remove(&n);
                session.positions.retain(|(job, _), _| *job != n);
            }
            Vec::new()
        }
        Original::Ack(_) => Vec::new(),
        Original::Run(job) if operator => match super::jobs::run_job(state, caller, &job).await {
            Ok(_) => Vec::new(),
            Err(e) => vec![json!({"type": "error", "error": e.message})],
        },
        Original::KillCron(job) if operator => {
            let open = state.store.open_runs().await.unwrap_or_default();
            for run in open.iter().filter(|r| r.job == job) {
                let _ = super::api::kill_run(state, caller, &run.instance, None).await;
            }
            Vec::new()
        }
        Original::KillMachine(k) if operator => {
            let instance = match k.job_instance {
                Some(i) => Some(i),
                None => state
                    .store
                    .open_runs()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .rfind(|r| r.job == k.cron)
                    .map(|r| r.instance),
            };
            if let Some(instance) = instance {
                let _ = super::api::kill_run(state, caller, &instance, Some(&k.machine)).await;
            }
            Vec::new()
        }
        Original::Run(_) => refuse("run a job"),
        Original::KillCron(_) | Original::KillMachine(_) => refuse("kill"),
        Original::GetTimeline(t) => {
            let filter = RunFilter {
                since: Some(t.start_date),
                until: Some(t.end_date),
                limit: 10_000,
                ..RunFilter::default()
            };
            let runs = state.store.runs(filter).await.unwrap_or_default();
            let mut content = Vec::new();
            for r in runs.iter().rev() {
                content.push(json!({"cron": r.job, "timestamp": r.started.unwrap_or(r.scheduled),
                    "ret_code": Value::Null, "msg_type": "start", "job_instance": r.instance}));
                if let Some(end) = r.finished {
                    let code = if r.status == crate::store::RunStatus::Succeeded { 0 } else { 1 };
                    content.push(json!({"cron": r.job, "timestamp": end, "ret_code": code,
                        "msg_type": "end", "job_instance": r.instance}));
                }
            }
            vec![json!({"timeline": {"content": content, "id": t.id, "serial": runs.len()}})]
        }
    }
}

/// New output and details of the subscribed jobs' latest runs.
pub(super) async fn follow(state: &State, session: &mut Session) -> Vec<Value> {
    let mut out = Vec::new();
    let jobs: Vec<String> = session.subscribed.iter().cloned().collect();
    for job in jobs {
        let filter = RunFilter { job: Some(job.clone()), limit: 1, ..RunFilter::default() };
        let Some(run) = state.store.runs(filter).await.ok().and_then(|r| r.into_iter().next())
        else {
            continue;
        };
        let Ok(results) = state.store.results(&run.instance).await else { continue };
        let mut machines = serde_json::Map::new();
        for r in &results {
            machines.insert(
                r.minion.clone(),
                json!({"starttime": r.started, "endtime": r.finished, "retcode": r.retcode,
                       "ret": "", "output_length": r.output_bytes}),
            );
            let key = (job.clone(), r.minion.clone());
            let from = match session.positions.get(&key) {
                Some((instance, at)) if *instance == run.instance => *at,
                _ => 0,
            };
            if r.output_bytes > from
                && let Ok(chunks) =
                    state.store.output(&run.instance, &r.minion, from, 256 << 10).await
            {
                let (data, next) = super::ws::stitch(chunks, from);
                out.push(json!({"type": "output_chunk", "cron": job, "machine": r.minion,
                    "chunk": String::from_utf8_lossy(&data), "position": from,
                    "total_length": r.output_bytes, "is_complete": r.retcode.is_some() && next >= r.output_bytes}));
                session.positions.insert(key, (run.instance.clone(), next));
            }
        }
        let details = json!({"type": "details", "cron": job, "data": {
            "last_run": run.started.unwrap_or(run.scheduled), "job_instance": run.instance,
            "results": machines}});
        let text = details.to_string();
        if session.details.get(&job) != Some(&text) {
            session.details.insert(job.clone(), text);
            out.push(details);
        }
    }
    out
}
