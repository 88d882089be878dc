//! Each job's newest runs, kept in memory for the jobs list (last result, success rate, history
//! strip), so listing 10,000 jobs reads no run from SQLite.
//!
//! The cache is filled on first use (one indexed query per job), then brought up to date before
//! each listing from what changed in the store since the previous one: the runs in flight, the
//! runs that finished or were skipped since (with a look-back, as rows are stamped before their
//! batch commits), and any run seen in flight before that is in neither set (read by id). Applying
//! a run is idempotent, so overlapping looks cost nothing but time. Jobs added by a reload are
//! loaded when first listed; removed ones are forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, MutexGuard};

use super::JobSet;
use crate::store::{RunRow, RunStatus, StoreError, StoreHandle};

/// Runs kept per job: the success-rate window (the history strip shows the newest of them).
pub(super) const WINDOW: usize = 30;
/// How far before the previous look a finished run is looked for again.
const LOOK_BACK: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// The most changed runs read in one look; more means a burst: reload everything instead.
const CHANGES_LIMIT: u32 = 10_000;

/// A run as the summaries need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) instance: Box<str>,
    pub(super) scheduled: DateTime<Utc>,
    pub(super) created: DateTime<Utc>,
    pub(super) status: RunStatus,
    pub(super) started: Option<DateTime<Utc>>,
    pub(super) finished: Option<DateTime<Utc>>,
}

impl From<&RunRow> for Entry {
    fn from(r: &RunRow) -> Self {
        Entry {
            instance: r.instance.as_str().into(),
            scheduled: r.scheduled,
            created: r.created,
            status: r.status,
            started: r.started,
            finished: r.finished,
        }
    }
}

impl Entry {
    /// The listing order, newest first: (scheduled, created, instance) descending.
    fn key(&self) -> (DateTime<Utc>, DateTime<Utc>, &str) {
        (self.scheduled, self.created, &self.instance)
    }
}

/// Puts `run` into `runs` (newest first, at most [`WINDOW`]), replacing the same instance.
pub(super) fn apply(runs: &mut Vec<Entry>, run: Entry) {
    if let Some(i) = runs.iter().position(|e| e.instance == run.instance) {
        runs.remove(i);
    }
    let at = runs.partition_point(|e| e.key() > run.key());
    if at < WINDOW {
        runs.insert(at, run);
        runs.truncate(WINDOW);
    }
}

/// The cache's content.
#[derive(Default)]
pub(super) struct Cache {
    /// Newest first, by job name.
    pub(super) jobs: HashMap<String, Vec<Entry>>,
    /// Runs in flight at the last look.
    open: HashSet<String>,
    /// When the last look started (its rows are complete up to about then).
    mark: Option<DateTime<Utc>>,
    /// When the last refresh started.
    refreshed: Option<Instant>,
    /// The job set the cache follows.
    known: Option<JobSet>,
    /// Every group of the known jobs, sorted.
    pub(super) groups: Vec<String>,
    /// Per job: its name, group, target and description, lowercased, for the search.
    pub(super) haystacks: HashMap<String, String>,
}

/// The shared cache: one refresh at a time; a listing waits for a refresh that started after it
/// arrived, or makes one.
#[derive(Default)]
pub(super) struct Summaries {
    cache: Mutex<Cache>,
}

impl Summaries {
    /// The cache, up to date with the store as of the call.
    pub(super) async fn current(
        &self,
        store: &StoreHandle,
        jobs: &JobSet,
    ) -> Result<MutexGuard<'_, Cache>, StoreError> {
        let arrived = Instant::now();
        let mut cache = self.cache.lock().await;
        if cache.refreshed.is_none_or(|r| r < arrived) {
            cache.refresh(store, jobs).await?;
        }
        Ok(cache)
    }
}

impl Cache {
    async fn refresh(&mut self, store: &StoreHandle, jobs: &JobSet) -> Result<(), StoreError> {
        let started = Instant::now();
        let now = Utc::now();
        let from = self.mark.unwrap_or(now) - LOOK_BACK;
        let mut changed = store.finished_since(from, CHANGES_LIMIT).await?;
        if changed.len() >= CHANGES_LIMIT as usize {
            // More than one look holds (a burst): read every job again instead.
            self.jobs.clear();
            self.open.clear();
            self.known = None;
            changed.clear();
        }
        if self.known.as_ref().is_none_or(|k| !Arc::ptr_eq(k, jobs)) {
            self.load(store, jobs).await?;
        }
        let open = store.open_runs().await?;
        let mut seen: HashSet<&str> = HashSet::with_capacity(changed.len() + open.len());
        for run in changed.iter().chain(&open) {
            seen.insert(&run.instance);
            self.put(run);
        }
        // In flight at the last look and neither finished nor in flight now: read it.
        let vanished: Vec<String> =
            self.open.iter().filter(|i| !seen.contains(i.as_str())).cloned().collect();
        for instance in vanished {
            if let Some(run) = store.run(&instance).await? {
                self.put(&run);
            }
        }
        self.open = open.into_iter().map(|r| r.instance).collect();
        self.mark = Some(now);
        self.refreshed = Some(started);
        Ok(())
    }

    /// Forgets removed jobs and reads the newest runs of the jobs not known yet.
    async fn load(&mut self, store: &StoreHandle, jobs: &JobSet) -> Result<(), StoreError> {
        let names: HashSet<&str> = jobs.keys().map(|n| n.as_str()).collect();
        self.jobs.retain(|name, _| names.contains(name.as_str()));
        let missing: Vec<String> =
            names.into_iter().filter(|n| !self.jobs.contains_key(*n)).map(str::to_owned).collect();
        if !missing.is_empty() {
            #[allow(clippy::cast_possible_truncation)] // WINDOW is small
            let mut recent = store.recent_runs(missing.clone(), WINDOW as u32).await?;
            for name in missing {
                let runs = recent
                    .remove(&name)
                    .map(|r| r.runs.iter().map(Entry::from).collect())
                    .unwrap_or_default();
                self.jobs.insert(name, runs);
            }
        }
        self.haystacks = jobs
            .values()
            .map(|j| {
                let fields =
                    [j.name.as_str(), &j.group, &j.targets, j.description.as_deref().unwrap_or("")];
                (j.name.as_str().to_owned(), fields.join("\n").to_lowercase())
            })
            .collect();
        let groups: std::collections::BTreeSet<&str> =
            jobs.values().map(|j| j.group.as_str()).collect();
        self.groups = groups.into_iter().map(str::to_owned).collect();
        self.known = Some(Arc::clone(jobs));
        Ok(())
    }

    fn put(&mut self, run: &RunRow) {
        if let Some(runs) = self.jobs.get_mut(&run.job) {
            apply(runs, Entry::from(run));
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn entry(instance: &str, at: i64, status: RunStatus) -> Entry {
        let t = Utc.timestamp_opt(at, 0).unwrap();
        Entry {
            instance: instance.into(),
            scheduled: t,
            created: t,
            status,
            started: None,
            finished: None,
        }
    }

    #[test]
    fn apply_keeps_the_newest_window_in_order_and_replaces_by_instance() {
        let mut runs = Vec::new();
        for i in 0..40 {
            apply(&mut runs, entry(&format!("r{i:02}"), i, RunStatus::Running));
        }
        assert_eq!(runs.len(), WINDOW);
        assert_eq!(&*runs[0].instance, "r39");
        assert_eq!(&*runs[WINDOW - 1].instance, "r10");
        // An older run than the window holds is not kept.
        apply(&mut runs, entry("old", 1, RunStatus::Failed));
        assert!(runs.iter().all(|e| &*e.instance != "old"));
        // The same run again, finished: replaced in place, not duplicated.
        apply(&mut runs, entry("r20", 20, RunStatus::Succeeded));
        assert_eq!(runs.len(), WINDOW);
        assert_eq!(runs.iter().filter(|e| &*e.instance == "r20").count(), 1);
        assert_eq!(runs[19].status, RunStatus::Succeeded);
        assert!(runs.windows(2).all(|w| w[0].key() > w[1].key()));
    }
}
