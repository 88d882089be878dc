//! Prometheus metrics (`prometheus-client`), served at `/metrics`.
//!
//! Run figures are read from the store, not hooked into the run engine: a task follows the runs
//! that finished (or were skipped) since it last looked, every [`POLL`], so each recorded outcome
//! is counted once, whatever part of the engine decided it. Live figures (connected agents, the
//! Salt event bus) are read at scrape time or followed on their `watch`.
//!
//! Per-minion failures carry a `minion` label; past [`MINION_LABELS`] distinct minions the rest
//! are counted under `minion="other"`, so a large fleet cannot blow up the series count. The
//! per-minion clock skew (read from the agent registry at scrape time) has the same limit.
//!
//! Dispatch figures (`DispatchMetrics`) are counted by the run engine as it publishes: Salt
//! publishes by mode and per firing, and pre-armed minion runs armed in time or fallen back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::salt::Link;
use crate::store::{RunRow, RunStatus, StoreHandle};

/// How often finished runs are collected.
pub const POLL: Duration = Duration::from_secs(2);
/// Distinct minions with their own failure series.
pub const MINION_LABELS: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    job: String,
    /// `overlap`, `maintenance`, `missed`, `no_targets` or `other`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MinionLabel {
    minion: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    /// `coalesced`, `single` or `legacy`.
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabel {
    /// `armed` (the agent confirmed it before the instant) or `fallback` (it had not fetched
    /// its manifest by the instant, and was dispatched the ordinary way).
    outcome: String,
}

/// The dispatch figures the run engine counts as it publishes (a clone shares the series).
#[derive(Clone)]
pub struct DispatchMetrics {
    publishes: Family<ModeLabel, Counter>,
    per_firing: Histogram,
    prearmed: Family<ArmLabel, Counter>,
}

impl Default for DispatchMetrics {
    fn default() -> Self {
        DispatchMetrics {
            publishes: Family::default(),
            per_firing: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            prearmed: Family::default(),
        }
    }
}

impl DispatchMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dispatch_publishes",
            "Salt publishes made to start runs, by dispatch mode",
            self.publishes.clone(),
        );
        registry.register(
            "dispatch_publishes_per_firing",
            "Coalesced Salt publishes made for the runs due at one instant",
            self.per_firing.clone(),
        );
        registry.register(
            "prearmed_minion_runs",
            "Pre-armed minion runs: armed in time, or fallen back to an ordinary dispatch",
            self.prearmed.clone(),
        );
    }

    /// `n` Salt publishes of `mode` (`coalesced`, `single`, `legacy`).
    pub fn published(&self, mode: &str, n: u64) {
        self.publishes.get_or_create(&ModeLabel { mode: mode.to_owned() }).inc_by(n);
    }

    /// One firing (an engine turn's flush) made `n` coalesced publishes.
    pub fn firing(&self, n: usize) {
        #[allow(clippy::cast_precision_loss)] // a count of publishes
        self.per_firing.observe(n as f64);
    }

    /// A pre-armed minion run armed in time.
    pub fn armed(&self) {
        self.prearmed.get_or_create(&ArmLabel { outcome: "armed".to_owned() }).inc();
    }

    /// A pre-armed minion run whose agent fetched its manifest in time but started the
    /// command without having armed it before its instant.
    pub fn late_armed(&self) {
        self.prearmed.get_or_create(&ArmLabel { outcome: "late-armed".to_owned() }).inc();
    }

    /// `n` pre-armed minion runs that fell back.
    pub fn fell_back(&self, n: u64) {
        self.prearmed.get_or_create(&ArmLabel { outcome: "fallback".to_owned() }).inc_by(n);
    }
}

type Histograms = Family<JobLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 s … ~4.5 h.
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    duration: Histograms,
    start_delay: Histogram,
    skipped: Family<SkipLabels, Counter>,
    minion_failures: Family<MinionLabel, Counter>,
    minions_seen: Mutex<HashSet<String>>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    agents: Gauge,
    bus_reconnects: Counter,
    bus_up: Gauge,
    /// The agent registry, read at scrape time (sessions, clock skews).
    sessions: Option<crate::agents::Registry>,
    dispatch: DispatchMetrics,
    skew: Family<MinionLabel, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    pub fn new(sessions: Option<crate::agents::Registry>) -> Metrics {
        let mut registry = Registry::with_prefix("saltpeter");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register("runs", "Runs finished, by job and final status", runs.clone());
        let duration: Histograms = Family::new_with_constructor(duration_histogram);
        registry.register(
            "run_duration_seconds",
            "Wall time of finished runs, from start to finish",
            duration.clone(),
        );
        let start_delay = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "run_start_delay_seconds",
            "From a run's scheduled slot to its start (fire lag plus target resolution)",
            start_delay.clone(),
        );
        let skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "runs_skipped",
            "Slots not run: overlapping, in maintenance, missed (late), no targets",
            skipped.clone(),
        );
        let minion_failures = Family::<MinionLabel, Counter>::default();
        registry.register(
            "minion_failures",
            "Per-minion non-zero results (minions past the label limit count as other)",
            minion_failures.clone(),
        );
        let last_success = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When each job last finished successfully (Unix time)",
            last_success.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents_connected", "Agent sessions connected now", agents.clone());
        let bus_reconnects = Counter::default();
        registry.register(
            "salt_bus_reconnects",
            "Times the Salt event bus was lost and reconnected",
            bus_reconnects.clone(),
        );
        let bus_up = Gauge::default();
        registry.register("salt_bus_up", "1 while the Salt event bus is connected", bus_up.clone());
        let dispatch = DispatchMetrics::default();
        dispatch.register(&mut registry);
        let skew = Family::<MinionLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "minion_clock_skew_seconds",
            "Each minion's clock minus the sidecar's, from its agent's last hello (minions past the label limit: the largest skew among them, as other)",
            skew.clone(),
        );
        Metrics {
            registry,
            runs,
            duration,
            start_delay,
            skipped,
            minion_failures,
            minions_seen: Mutex::new(HashSet::new()),
            last_success,
            agents,
            bus_reconnects,
            bus_up,
            sessions,
            dispatch,
            skew,
        }
    }

    /// The handles the run engine counts its publishes with.
    pub fn dispatch(&self) -> DispatchMetrics {
        self.dispatch.clone()
    }

    /// Sets the skew gauges: the first [`MINION_LABELS`] minions (by id) by name, the rest as
    /// `other` (the largest skew among them).
    fn set_skews(&self, skews: &[(String, i64)]) {
        #[allow(clippy::cast_precision_loss)] // milliseconds of clock skew
        let secs = |ms: i64| ms as f64 / 1000.0;
        let (named, rest) = skews.split_at(skews.len().min(MINION_LABELS));
        for (minion, ms) in named {
            self.skew.get_or_create(&MinionLabel { minion: minion.clone() }).set(secs(*ms));
        }
        if let Some((_, ms)) = rest.iter().max_by_key(|(_, ms)| ms.unsigned_abs()) {
            self.skew.get_or_create(&MinionLabel { minion: "other".to_owned() }).set(secs(*ms));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        if let Some(sessions) = &self.sessions {
            self.agents.set(i64::try_from(sessions.sessions()).unwrap_or(i64::MAX));
            self.set_skews(&sessions.skews());
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "Cannot encode the metrics.");
        }
        out
    }

    fn job(run: &RunRow) -> JobLabel {
        JobLabel { job: run.job.clone() }
    }

    /// Counts one run that reached its end.
    fn observe(&self, run: &RunRow) {
        if run.status == RunStatus::Skipped {
            let reason = skip_reason(&run.reason).to_owned();
            self.skipped.get_or_create(&SkipLabels { job: run.job.clone(), reason }).inc();
            return;
        }
        let labels = RunLabels { job: run.job.clone(), status: run.status.as_str().to_owned() };
        self.runs.get_or_create(&labels).inc();
        if let (Some(started), Some(finished)) = (run.started, run.finished) {
            let secs = (finished - started).num_milliseconds().max(0);
            #[allow(clippy::cast_precision_loss)] // milliseconds of a run
            self.duration.get_or_create(&Self::job(run)).observe(secs as f64 / 1000.0);
        }
        if let Some(started) = run.started {
            let secs = (started - run.scheduled).num_milliseconds().max(0);
            #[allow(clippy::cast_precision_loss)]
            self.start_delay.observe(secs as f64 / 1000.0);
        }
        if run.status == RunStatus::Succeeded
            && let Some(finished) = run.finished
        {
            self.success(&run.job, finished);
        }
    }

    fn success(&self, job: &str, at: DateTime<Utc>) {
        #[allow(clippy::cast_precision_loss)]
        let secs = at.timestamp_millis() as f64 / 1000.0;
        let gauge = self.last_success.get_or_create(&JobLabel { job: job.to_owned() });
        if gauge.get() < secs {
            gauge.set(secs);
        }
    }

    fn minion_failed(&self, minion: &str) {
        let mut seen = self.minions_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let label = if seen.contains(minion) || seen.len() < MINION_LABELS {
            seen.insert(minion.to_owned());
            minion.to_owned()
        } else {
            "other".to_owned()
        };
        self.minion_failures.get_or_create(&MinionLabel { minion: label }).inc();
    }
}

fn skip_reason(reason: &str) -> &'static str {
    let r = reason.to_lowercase();
    if r.contains("overlap") || r.contains("still running") {
        "overlap"
    } else if r.contains("maintenance") {
        "maintenance"
    } else if r.contains("late") || r.contains("missed") || r.contains("catch") {
        "missed"
    } else if r.contains("target") || r.contains("no minion") {
        "no_targets"
    } else {
        "other"
    }
}

/// Starts following the store (and the Salt bus link, when given) on `tasks`.
pub fn spawn(
    tasks: &TaskTracker,
    metrics: Arc<Metrics>,
    store: StoreHandle,
    bus: Option<watch::Receiver<Link>>,
    cancel: CancellationToken,
) {
    if let Some(mut link) = bus {
        let (metrics, cancel) = (Arc::clone(&metrics), cancel.clone());
        tasks.spawn(async move {
            let mut was_down = false;
            loop {
                let up = matches!(*link.borrow_and_update(), Link::Up { .. });
                metrics.bus_up.set(i64::from(up));
                if up && was_down {
                    metrics.bus_reconnects.inc();
                }
                was_down = !up;
                tokio::select! {
                    changed = link.changed() => if changed.is_err() { return },
                    () = cancel.cancelled() => return,
                }
            }
        });
    }
    tasks.spawn(async move {
        match store.last_successes().await {
            Ok(list) => list.into_iter().for_each(|(job, at)| metrics.success(&job, at)),
            Err(e) => warn!(error = %e, "Cannot read the last successes for metrics."),
        }
        let mut mark = Utc::now();
        let mut seen: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            mark = collect(&metrics, &store, mark, &mut seen).await;
        }
    });
}

/// Counts what ended since `mark`; returns the new mark. `seen` holds the instances counted at
/// the mark's millisecond, so a run is never counted twice.
async fn collect(
    metrics: &Metrics,
    store: &StoreHandle,
    mark: DateTime<Utc>,
    seen: &mut HashMap<String, DateTime<Utc>>,
) -> DateTime<Utc> {
    // Look a little before the mark: rows are written in batches, their times set before commit.
    let from = mark - chrono::Duration::seconds(10);
    let rows = match store.finished_since(from, 10_000).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "Cannot read finished runs for metrics.");
            return mark;
        }
    };
    let mut newest = mark;
    for run in rows {
        let at = run.finished.unwrap_or(run.created);
        if seen.insert(run.instance.clone(), at).is_some() {
            continue;
        }
        newest = newest.max(at);
        metrics.observe(&run);
        if matches!(run.status, RunStatus::Failed | RunStatus::Killed)
            && let Ok(results) = store.results(&run.instance).await
        {
            for r in results.iter().filter(|r| r.retcode.is_some_and(|c| c != 0)) {
                metrics.minion_failed(&r.minion);
            }
        }
    }
    // Forget what the next look-back window cannot return.
    let horizon = newest - chrono::Duration::seconds(10);
    seen.retain(|_, at| *at >= horizon);
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Trigger;

    fn run(job: &str, status: RunStatus, secs: i64, reason: &str) -> RunRow {
        let t = DateTime::parse_from_rfc3339("2026-11-01T03:00:00Z").unwrap().to_utc();
        RunRow {
            instance: format!("{job}-{secs}"),
            job: job.into(),
            group: "g".into(),
            scheduled: t,
            trigger: Trigger::Schedule,
            status,
            reason: reason.into(),
            created: t,
            started: Some(t + chrono::Duration::milliseconds(250)),
            finished: Some(t + chrono::Duration::seconds(secs)),
        }
    }

    #[test]
    fn runs_are_counted_by_job_and_status_with_durations_and_last_success() {
        let m = Metrics::new(None);
        m.observe(&run("backup", RunStatus::Succeeded, 3, ""));
        m.observe(&run("backup", RunStatus::Failed, 7, ""));
        m.observe(&run(
            "backup",
            RunStatus::Skipped,
            0,
            "the previous run is still running (overlap)",
        ));
        for i in 0..(MINION_LABELS + 3) {
            m.minion_failed(&format!("m{i}"));
        }
        let text = m.render();
        for line in [
            "saltpeter_runs_total{job=\"backup\",status=\"succeeded\"} 1",
            "saltpeter_runs_total{job=\"backup\",status=\"failed\"} 1",
            "saltpeter_run_duration_seconds_count{job=\"backup\"} 2",
            "saltpeter_runs_skipped_total{job=\"backup\",reason=\"overlap\"} 1",
            "saltpeter_last_success_timestamp_seconds{job=\"backup\"} 1793502003",
            "saltpeter_minion_failures_total{minion=\"other\"} 3",
            "saltpeter_run_start_delay_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn dispatch_figures_and_skews_are_exposed_with_the_label_limit() {
        let m = Metrics::new(None);
        let d = m.dispatch();
        d.published("coalesced", 2);
        d.firing(2);
        d.armed();
        d.fell_back(3);
        let mut skews: Vec<(String, i64)> =
            (0..MINION_LABELS + 2).map(|i| (format!("m{i:04}"), 10)).collect();
        skews.push(("zz".to_owned(), -1500));
        m.set_skews(&skews);
        let text = m.render();
        for line in [
            "saltpeter_dispatch_publishes_total{mode=\"coalesced\"} 2",
            "saltpeter_dispatch_publishes_per_firing_count 1",
            "saltpeter_prearmed_minion_runs_total{outcome=\"armed\"} 1",
            "saltpeter_prearmed_minion_runs_total{outcome=\"fallback\"} 3",
            "saltpeter_minion_clock_skew_seconds{minion=\"m0000\"} 0.01",
            "saltpeter_minion_clock_skew_seconds{minion=\"other\"} -1.5",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("saltpeter_minion_clock_skew_seconds{").count(), MINION_LABELS + 1);
    }
}
