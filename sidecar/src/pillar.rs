//! Jobs and maintenance from Salt pillar, read through the master: `saltpeter:jobs` and
//! `saltpeter:maintenance` of one minion id (setting `pillar_minion`, default the master's own
//! id) rendered by runner `pillar.show_pillar`, and the minions whose own pillar says
//! `saltpeter:maintenance: true` from the master's pillar cache (runner `cache.pillar`).
//!
//! [`Pillar::follow`] sits between the file watcher and the daemon: it merges each file reload
//! with the last pillar read (`config::with_pillar`), and reads the pillar again on a
//! `saltpeter/reload` event fired by someone else, when minions return from
//! `saltutil.refresh_pillar`, and every `pillar_refresh`. A pillar that cannot be read or
//! rendered leaves the jobs it gave as they were.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_yaml::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{self, JobDiff, Loaded, PillarConfig, Reloaded};
use crate::salt::{BusItem, EventKind, MasterConfig, SaltClient, to_json};

/// How long one runner call may take.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time after a trigger: a fleet's `refresh_pillar` returns arrive together.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long the start waits for the first read (a slow master must not hold the file jobs).
const STARTUP_WAIT: Duration = Duration::from_secs(15);
/// When a read failed and nothing was read yet, the next try.
const RETRY: Duration = Duration::from_secs(5);
/// The function whose returns mean "the minions' pillar changed".
const REFRESH_FUN: &str = "saltutil.refresh_pillar";

/// The pillar side of the configuration: the files last loaded, the pillar last read, and
/// their merge in effect.
pub struct Pillar {
    master_id: String,
    files: Loaded,
    read: Option<PillarConfig>,
    current: Loaded,
}

impl Pillar {
    /// Reads the pillar once (when the settings say so) and merges it with `files`.
    pub async fn start(salt: &SaltClient, master: &MasterConfig, files: &Loaded) -> Pillar {
        let master_id = master.id.clone().unwrap_or_else(|| format!("{}_master", host_name()));
        let mut pillar =
            Pillar { master_id, files: files.clone(), read: None, current: files.clone() };
        if files.settings.pillar
            && tokio::time::timeout(STARTUP_WAIT, pillar.refresh(salt)).await.is_err()
        {
            warn!(waited = ?STARTUP_WAIT, "The pillar was not read in time; starting with the file jobs, the pillar's come when it answers.");
        }
        pillar.current = pillar.merge();
        for d in pillar.current.report.errors.iter().filter(|d| is_pillar(d)) {
            error!("{d}");
        }
        for d in pillar.current.report.warnings.iter().filter(|d| is_pillar(d)) {
            warn!("{d}");
        }
        pillar
    }

    /// The configuration in effect: files and pillar.
    pub fn loaded(&self) -> &Loaded {
        &self.current
    }

    fn minion(&self) -> String {
        self.files.settings.pillar_minion.clone().unwrap_or_else(|| self.master_id.clone())
    }

    fn merge(&self) -> Loaded {
        match (&self.read, self.files.settings.pillar) {
            (Some(read), true) => {
                config::with_pillar(&self.files, read, Some(&self.current), Utc::now())
            }
            _ => self.files.clone(),
        }
    }

    /// Reads the pillar; on failure keeps what the last good read gave.
    async fn refresh(&mut self, salt: &SaltClient) {
        let minion = self.minion();
        debug!(minion, "Reading the pillar.");
        match read(salt, &minion).await {
            Ok(fresh) if fresh.errors.is_empty() => {
                if self.read.as_ref() != Some(&fresh) {
                    info!(minion, jobs = fresh.jobs.len(), in_maintenance = ?fresh.minions_in_maintenance, "Read the pillar.");
                }
                self.read = Some(fresh);
            }
            Ok(broken) => {
                // Keep the last good jobs, and say why.
                let last =
                    self.read.take().filter(|r| r.origin == broken.origin).unwrap_or_default();
                self.read =
                    Some(PillarConfig { origin: broken.origin, errors: broken.errors, ..last });
            }
            Err(e) => {
                warn!(minion, error = %e, "Cannot read the pillar; the pillar jobs stay as they were.");
            }
        }
    }

    /// Forwards file reloads merged with the pillar, and pillar changes, until `cancel`. A file
    /// reload that comes with `true` (asked for: SIGHUP, the API) also reads the pillar again.
    pub fn follow(
        mut self,
        tasks: &TaskTracker,
        salt: Arc<SaltClient>,
        mut file_reloads: mpsc::Receiver<(Reloaded, bool)>,
        cancel: CancellationToken,
    ) -> mpsc::Receiver<Reloaded> {
        let (out, reloads) = mpsc::channel(8);
        let mut events = salt.subscribe();
        tasks.spawn(async move {
            let mut every = self.files.settings.pillar_refresh;
            let mut tick = Instant::now() + every;
            // Nothing read yet (the master did not answer at start): try again soon.
            let mut pending =
                (self.files.settings.pillar && self.read.is_none()).then(|| Instant::now() + RETRY);
            loop {
                let due = pending.unwrap_or(tick);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    reload = file_reloads.recv() => {
                        let Some((reload, read_pillar)) = reload else { return };
                        let minion_before = self.minion();
                        self.files = reload.loaded;
                        if self.files.settings.pillar && self.minion() != minion_before {
                            pending = Some(Instant::now());
                        }
                        if self.files.settings.pillar_refresh != every {
                            every = self.files.settings.pillar_refresh;
                            tick = Instant::now() + every;
                        }
                        if self.files.settings.pillar && (read_pillar || self.read.is_none()) {
                            pending = Some(Instant::now());
                        }
                    }
                    item = events.recv() => {
                        let Some(item) = item else { return };
                        let wanted = match &item {
                            BusItem::Event(e) => triggers(e),
                            // Events may have been missed while the bus was down.
                            BusItem::Reconnected => true,
                            BusItem::Lagged(_) | BusItem::Disconnected => false,
                        };
                        if wanted && self.files.settings.pillar {
                            let cause = match &item {
                                BusItem::Event(e) => e.tag.to_string(),
                                _ => "the event bus reconnected".to_owned(),
                            };
                            debug!(cause, "Pillar refresh requested.");
                            pending = Some(Instant::now() + DEBOUNCE);
                        }
                        continue;
                    }
                    () = tokio::time::sleep_until(due) => {
                        pending = None;
                        tick = Instant::now() + every;
                        if !self.files.settings.pillar {
                            continue;
                        }
                        self.refresh(&salt).await;
                        if self.read.is_none() {
                            pending = Some(Instant::now() + RETRY);
                        }
                    }
                }
                let merged = self.merge();
                let diff = JobDiff::between(&self.current.jobs, &merged.jobs);
                let same = diff.is_empty()
                    && merged.report == self.current.report
                    && merged.settings == self.current.settings
                    && merged.maintenance == self.current.maintenance;
                if same {
                    continue;
                }
                let new_errors =
                    merged.report.errors.iter().filter(|d| !self.current.report.errors.contains(d));
                for d in new_errors.filter(|d| is_pillar(d)) {
                    warn!("{d}");
                }
                self.current = merged.clone();
                if out.send(Reloaded { loaded: merged, diff }).await.is_err() {
                    return;
                }
            }
        });
        reloads
    }
}

fn is_pillar(d: &config::Diagnostic) -> bool {
    d.origin.file.to_string_lossy().starts_with("pillar:")
}

/// An event that asks for the pillar to be read again: `saltpeter/reload` fired by someone
/// else (ours carries the diff), or a minion's return from `saltutil.refresh_pillar`.
fn triggers(e: &crate::salt::Event) -> bool {
    match &e.kind {
        EventKind::JobReturn(r) => r.fun == REFRESH_FUN,
        _ if e.tag == "saltpeter/reload" => {
            let data = e.decode_data().map(|d| to_json(&d)).unwrap_or_default();
            data.get("added").is_none()
        }
        _ => false,
    }
}

/// Why the pillar could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PillarError {
    #[error("runner {fun}: {source}")]
    Runner {
        fun: &'static str,
        #[source]
        source: crate::salt::ClientError,
    },
    #[error("runner {fun} failed: {detail}")]
    Failed { fun: &'static str, detail: String },
}

/// Reads what the pillar holds for Saltpeter: the jobs and maintenance of `minion`, and the
/// minions in maintenance by their own pillar.
pub async fn read(salt: &SaltClient, minion: &str) -> Result<PillarConfig, PillarError> {
    let origin: PathBuf = PillarConfig::origin_of(minion);
    let args = vec![rmpv::Value::from(minion)];
    let shown = call(salt, "pillar.show_pillar", args, Vec::new()).await?;
    let mut read = PillarConfig { origin, ..PillarConfig::default() };
    if let Some(errors) = shown.get("_errors") {
        let list = match errors {
            serde_json::Value::Array(items) => items.iter().map(text).collect(),
            other => vec![text(other)],
        };
        read.errors = list;
    }
    let saltpeter = shown.get("saltpeter").cloned().unwrap_or_default();
    match saltpeter.get("jobs").map(yaml) {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(jobs)) => read.jobs = jobs,
        Some(other) => read.errors.push(format!(
            "{} is {}, not a map of job names to jobs",
            config::JOBS_KEY,
            kind(&other)
        )),
    }
    read.maintenance = saltpeter.get("maintenance").map(yaml);

    let kwargs = vec![
        ("tgt".to_owned(), rmpv::Value::from("I@saltpeter:maintenance:True")),
        ("tgt_type".to_owned(), rmpv::Value::from("compound")),
    ];
    let cached = call(salt, "cache.pillar", Vec::new(), kwargs).await?;
    if let serde_json::Value::Object(by_minion) = cached {
        for (id, pillar) in by_minion {
            let flag = pillar.get("saltpeter").and_then(|s| s.get("maintenance"));
            if flag == Some(&serde_json::Value::Bool(true)) {
                read.minions_in_maintenance.push(id);
            }
        }
    }
    read.minions_in_maintenance.sort();
    Ok(read)
}

async fn call(
    salt: &SaltClient,
    fun: &'static str,
    args: Vec<rmpv::Value>,
    kwargs: Vec<(String, rmpv::Value)>,
) -> Result<serde_json::Value, PillarError> {
    let ret = salt
        .runner(fun, args, kwargs, RUNNER_TIMEOUT)
        .await
        .map_err(|source| PillarError::Runner { fun, source })?;
    let value = ret
        .ret
        .decode()
        .map_err(|e| PillarError::Failed { fun, detail: format!("undecodable return: {e}") })?;
    let value = to_json(&value);
    // A runner that raised returns its traceback as a string, with success false.
    if ret.success == Some(false) || value.is_string() {
        return Err(PillarError::Failed { fun, detail: text(&value) });
    }
    Ok(value)
}

fn yaml(value: &serde_json::Value) -> Value {
    serde_yaml::to_value(value).unwrap_or(Value::Null)
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Sequence(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "not a map",
    }
}

fn host_name() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
