//! What a run leaves behind: rows in the store, the per-job log file in the original's format,
//! and Saltpeter's events on the Salt bus (`saltpeter/job/<job>/start`,
//! `saltpeter/job/<job>/minion/<id>/done`, `saltpeter/job/<job>/complete`, `.../skipped`;
//! documented in docs/events.md).
//!
//! Log lines and events go through one ordered queue each (the [`Outbox`]), drained by their own
//! tasks, so the engine never waits on a file or on Salt, and a job's log and events keep their
//! order.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rmpv::Value;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use super::minion::{Limits, Outcome};
use super::run::Summary;
use super::{Deps, EngineSettings};
use crate::config::Job;
use crate::joblog::{self, Entry};
use crate::store::{RunStatus, Trigger, Write};

/// The bytes of output an event carries at most (events over 1 MiB are trimmed by Salt).
const EVENT_TAIL: usize = 2048;

/// Ordered queues to the log-file writer and the event firer.
#[derive(Clone)]
pub(super) struct Outbox {
    joblog: mpsc::Sender<LogItem>,
    events: mpsc::Sender<(String, Value)>,
}

/// One entry for a job's log file.
enum LogItem {
    Text {
        job: String,
        text: String,
    },
    /// A minion's result, logged with its whole stored output, read once the writes queued
    /// before it are committed.
    MinionResult {
        job: String,
        instance: String,
        minion: String,
        at: DateTime<Utc>,
        code: i32,
        detail: String,
    },
}

impl Outbox {
    pub(super) fn spawn(tasks: &TaskTracker, deps: &Arc<Deps>) -> Outbox {
        let (joblog, mut items) = mpsc::channel::<LogItem>(4096);
        let log_deps = Arc::clone(deps);
        tasks.spawn(async move {
            let logdir = log_deps.settings.logdir.clone();
            while let Some(item) = items.recv().await {
                let (job, text) = match item {
                    LogItem::Text { job, text } => (job, text),
                    LogItem::MinionResult { job, instance, minion, at, code, detail } => {
                        let text = minion_entry(&log_deps, &instance, &minion, at, code, detail).await;
                        (job, text)
                    }
                };
                if let Err(e) = joblog::append_text(&logdir, &job, &text) {
                    error!(job, logdir = %logdir.display(), error = %e, "Cannot write the job's log file.");
                }
            }
        });
        let (events, mut queue) = mpsc::channel::<(String, Value)>(4096);
        let salt = Arc::clone(&deps.salt);
        tasks.spawn(async move {
            while let Some((tag, data)) = queue.recv().await {
                if let Err(e) = salt.fire_event(&tag, data).await {
                    warn!(tag, error = %e, "Cannot fire an event on the Salt bus.");
                }
            }
        });
        Outbox { joblog, events }
    }
}

/// The log entry of a minion's result with its stored output (or, without output, the detail).
async fn minion_entry(
    deps: &Deps,
    instance: &str,
    minion: &str,
    at: DateTime<Utc>,
    code: i32,
    detail: String,
) -> String {
    let _ = deps.store.write_durable(Write::Barrier).await;
    let chunks =
        deps.store.output(instance, minion, 0, deps.settings.output_cap).await.unwrap_or_default();
    let mut text: String = chunks.iter().map(|c| String::from_utf8_lossy(&c.data)).collect();
    if text.is_empty() {
        text = detail;
    }
    Entry::MinionResult { instance, minion, at, code, output: &text }.render()
}

/// Records one run. Owned by the engine's entry for the run.
pub(super) struct Recorder {
    deps: Arc<Deps>,
    outbox: Outbox,
    job: Arc<Job>,
    instance: String,
    scheduled: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    tails: BTreeMap<String, Vec<u8>>,
    retcodes: BTreeMap<String, Option<i32>>,
}

fn s(v: impl Into<String>) -> Value {
    Value::from(v.into())
}

fn time(t: DateTime<Utc>) -> Value {
    s(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

impl Recorder {
    pub(super) fn new(deps: Arc<Deps>, outbox: Outbox, job: Arc<Job>, instance: String) -> Self {
        Recorder {
            deps,
            outbox,
            job,
            instance,
            scheduled: Utc::now(),
            started: None,
            tails: BTreeMap::new(),
            retcodes: BTreeMap::new(),
        }
    }

    /// A recorder for a run found in flight at start-up.
    pub(super) fn resumed(
        deps: Arc<Deps>,
        outbox: Outbox,
        job: Arc<Job>,
        row: &crate::store::RunRow,
        results: &[crate::store::ResultRow],
    ) -> Self {
        let mut recorder = Recorder::new(deps, outbox, job, row.instance.clone());
        recorder.scheduled = row.scheduled;
        recorder.started = row.started;
        for r in results {
            if r.retcode.is_some()
                || !matches!(r.phase.as_str(), "running" | "launching" | "queued")
            {
                recorder.retcodes.insert(r.minion.clone(), r.retcode);
            }
        }
        recorder
    }

    fn settings(&self) -> &EngineSettings {
        &self.deps.settings
    }

    pub(super) fn limits(&self) -> Limits {
        let s = self.settings();
        Limits {
            launch: s.launch_deadline,
            connect: s.launch_deadline,
            heartbeat: s.heartbeat_timeout,
            timeout: self.job.timeout,
            kill_grace: s.kill_grace,
            salt_kill: s.launch_deadline,
        }
    }

    async fn write(&self, write: Write) {
        if let Err(e) = self.deps.store.write(write).await {
            error!(instance = self.instance, error = %e, "Cannot queue a write to the run store.");
        }
    }

    async fn log(&self, entry: Entry<'_>) {
        let item = LogItem::Text { job: self.job.name.as_str().to_owned(), text: entry.render() };
        let _ = self.outbox.joblog.send(item).await;
    }

    async fn event(&self, suffix: &str, mut pairs: Vec<(&str, Value)>) {
        let tag = format!("saltpeter/job/{}/{suffix}", self.job.name.as_str());
        pairs.splice(
            0..0,
            [
                ("job", s(self.job.name.as_str())),
                ("group", s(self.job.group.as_str())),
                ("instance", s(self.instance.as_str())),
            ],
        );
        let _ = self.outbox.events.send((tag, map(pairs))).await;
    }

    /// The slot, recorded before anything is dispatched: pending, or skipped with why.
    pub(super) async fn created(
        &mut self,
        scheduled: DateTime<Utc>,
        trigger: Trigger,
        skip: Option<&str>,
        now: DateTime<Utc>,
    ) {
        self.scheduled = scheduled;
        let (status, reason) = match skip {
            Some(why) => (RunStatus::Skipped, why.to_owned()),
            None => (RunStatus::Pending, String::new()),
        };
        self.write(Write::CreateRun {
            instance: self.instance.clone(),
            job: self.job.name.as_str().to_owned(),
            group: self.job.group.clone(),
            scheduled,
            trigger,
            status,
            reason,
            created: now,
        })
        .await;
        match skip {
            Some(why) => {
                self.log(Entry::Overlap { instance: &self.instance, at: now }).await;
                self.event("skipped", vec![("scheduled", time(scheduled)), ("reason", s(why))])
                    .await;
            }
            None => self.log(Entry::Start { instance: &self.instance, at: now }).await,
        }
    }

    /// The target resolved to nothing runnable.
    pub(super) async fn no_targets(&mut self, why: &str) {
        let now = Utc::now();
        self.write(Write::UpdateRun {
            instance: self.instance.clone(),
            status: RunStatus::Skipped,
            reason: why.to_owned(),
            started: None,
            finished: Some(now),
        })
        .await;
        self.log(Entry::NoTargets { instance: &self.instance }).await;
        self.event("skipped", vec![("scheduled", time(self.scheduled)), ("reason", s(why))]).await;
    }

    pub(super) async fn running(&mut self, targets: &[String]) {
        let now = Utc::now();
        self.started = Some(now);
        self.write(Write::UpdateRun {
            instance: self.instance.clone(),
            status: RunStatus::Running,
            reason: String::new(),
            started: Some(now),
            finished: None,
        })
        .await;
        let targets = Value::Array(targets.iter().map(|t| s(t.as_str())).collect());
        self.event(
            "start",
            vec![("scheduled", time(self.scheduled)), ("started", time(now)), ("targets", targets)],
        )
        .await;
    }

    async fn result(
        &self,
        minion: &str,
        phase: &str,
        retcode: Option<i32>,
        reason: &str,
        started: Option<DateTime<Utc>>,
        finished: Option<DateTime<Utc>>,
    ) {
        self.write(Write::MinionResult {
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            phase: phase.to_owned(),
            retcode,
            reason: reason.to_owned(),
            started,
            finished,
        })
        .await;
    }

    /// A minion of a later batch, waiting for its turn.
    pub(super) async fn minion_queued(&mut self, minion: &str) {
        self.result(minion, "queued", None, "waiting for its batch", None, None).await;
    }

    /// A targeted minion that does not run: maintenance, or a later batch that never started.
    pub(super) async fn minion_skipped(&mut self, minion: &str, phase: &str, why: &str) {
        self.retcodes.insert(minion.to_owned(), None);
        self.result(minion, phase, None, why, None, Some(Utc::now())).await;
        if phase == "maintenance" {
            let at = Utc::now();
            self.log(Entry::MinionResult {
                instance: &self.instance,
                minion,
                at,
                code: 0,
                output: "Target under maintenance",
            })
            .await;
        }
    }

    pub(super) async fn minion_did_not_respond(&mut self, minion: &str) {
        let outcome = Outcome {
            retcode: 255,
            reason: super::minion::EndReason::DidNotRespond,
            detail: "Target did not respond".to_owned(),
        };
        self.minion_finished(minion, &outcome).await;
    }

    pub(super) async fn minion_launched(&mut self, minion: &str, token: &str) {
        self.result(minion, "launching", None, "", None, None).await;
        let write = Write::Token {
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            token: token.to_owned(),
        };
        self.write(write).await;
    }

    /// How the minion's part was dispatched, and its clock skew when known.
    pub(super) async fn minion_path(&mut self, minion: &str, path: &str, skew_ms: Option<i64>) {
        let write = Write::MinionPath {
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            path: path.to_owned(),
            skew_ms,
        };
        self.write(write).await;
    }

    /// The jid of a `use_wrapper: false` minion's publish: a run resumed after a restart finds
    /// its return by it.
    pub(super) async fn minion_jid(&mut self, minion: &str, jid: &str) {
        let write = Write::MinionJid {
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            jid: jid.to_owned(),
        };
        self.write(write).await;
    }

    /// The whole output of a `use_wrapper: false` run, as Salt returned it.
    pub(super) async fn legacy_output(&mut self, minion: &str, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.output_seen(minion, data);
        let write = Write::Output {
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            seq: None,
            offset: 0,
            stream: crate::store::Stream::Stdout,
            data: data.to_vec(),
            cap: self.deps.settings.output_cap,
        };
        self.write(write).await;
    }

    pub(super) async fn minion_armed(&mut self, minion: &str) {
        self.result(minion, "armed", None, "", None, None).await;
    }

    pub(super) async fn minion_started(&mut self, minion: &str) {
        self.result(minion, "running", None, "", Some(Utc::now()), None).await;
    }

    /// Output the agent session stored; kept here only as a short tail for events.
    pub(super) fn output_seen(&mut self, minion: &str, data: &[u8]) {
        let tail = self.tails.entry(minion.to_owned()).or_default();
        tail.extend_from_slice(data);
        if tail.len() > EVENT_TAIL {
            tail.drain(..tail.len() - EVENT_TAIL);
        }
    }

    pub(super) async fn minion_finished(&mut self, minion: &str, outcome: &Outcome) {
        let now = Utc::now();
        self.retcodes.insert(minion.to_owned(), Some(outcome.retcode));
        self.result(minion, "done", Some(outcome.retcode), &outcome.detail, None, Some(now)).await;
        let tail = self.tails.remove(minion).unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail).into_owned();
        let item = LogItem::MinionResult {
            job: self.job.name.as_str().to_owned(),
            instance: self.instance.clone(),
            minion: minion.to_owned(),
            at: now,
            code: outcome.retcode,
            detail: outcome.detail.clone(),
        };
        let _ = self.outbox.joblog.send(item).await;
        self.event(
            &format!("minion/{minion}/done"),
            vec![
                ("minion", s(minion)),
                ("retcode", Value::from(outcome.retcode)),
                ("reason", s(format!("{:?}", outcome.reason))),
                ("detail", s(outcome.detail.as_str())),
                ("finished", time(now)),
                ("output_tail", s(tail)),
            ],
        )
        .await;
    }

    pub(super) async fn finished(&mut self, status: RunStatus, summary: &Summary) {
        let now = Utc::now();
        self.write(Write::UpdateRun {
            instance: self.instance.clone(),
            status,
            reason: summary.reason.clone(),
            started: self.started,
            finished: Some(now),
        })
        .await;
        self.log(Entry::End { instance: &self.instance, at: now }).await;
        let retcodes = Value::Map(
            self.retcodes
                .iter()
                .map(|(m, c)| (s(m.as_str()), c.map_or(Value::Nil, Value::from)))
                .collect(),
        );
        let counts = map(vec![
            ("succeeded", Value::from(summary.succeeded)),
            ("failed", Value::from(summary.failed)),
            ("not_started", Value::from(summary.not_started)),
        ]);
        self.event(
            "complete",
            vec![
                ("scheduled", time(self.scheduled)),
                ("started", self.started.map_or(Value::Nil, time)),
                ("finished", time(now)),
                ("success", Value::from(status == RunStatus::Succeeded)),
                ("status", s(status.as_str())),
                ("reason", s(summary.reason.as_str())),
                ("retcodes", retcodes),
                ("counts", counts),
            ],
        )
        .await;
    }
}
