//! `JobTable`: every job's next slot, and what is due at a given instant. Pure: `now` is always a
//! parameter, so tests feed instants instead of waiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Due, Trigger};
use crate::config::{CatchUp, Job, JobDiff, JobName};

/// A slot later than this (the timer woke late: load, suspend, a wall-clock step forward) still
/// fires, marked late, unless the job sets a `catch_up_window`; older slots follow `catch_up`.
pub const DEFAULT_LATE_WINDOW: Duration = Duration::from_secs(60);
/// The most missed slots one job replays at once (`catch_up: all` after a long stop).
const MAX_BACKLOG: usize = 10_000;

struct Entry {
    job: Arc<Job>,
    /// The next slot not yet emitted; `None` = never again (or disabled).
    next: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct JobTable {
    entries: HashMap<JobName, Entry>,
    /// The jobs due at each pending instant: the first key is the timer's deadline. One bucket
    /// per instant makes a burst (10,000 jobs at `0 0 * * *`) one map operation, not 10,000.
    queue: BTreeMap<DateTime<Utc>, HashSet<JobName>>,
    /// Jobs whose slot `take_first` emitted and whose next slot `advance` has yet to compute.
    taken: Vec<(JobName, DateTime<Utc>, Emitted)>,
    /// How far the scheduler's clock runs ahead of the wall clock (the daemon's lead time):
    /// lateness is measured by the wall clock, so a slot of the lead window taken at start is
    /// on time, whatever its `catch_up_window`.
    ahead: chrono::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Emitted {
    Yes,
    /// Too late for the window: `advance` applies the job's `catch_up` to it.
    Missed,
}

impl JobTable {
    /// Schedules `jobs` from `now`: the first slot of each is strictly after `now`.
    pub fn new(jobs: impl IntoIterator<Item = Arc<Job>>, now: DateTime<Utc>) -> JobTable {
        let mut table = JobTable::default();
        for job in jobs {
            table.insert(job, now);
        }
        table
    }

    /// Schedules `jobs` as if their last recorded slots were `last` (from the run store after a
    /// restart): slots missed since then follow each job's `catch_up`, on the first `take_due`.
    pub fn resume(
        jobs: impl IntoIterator<Item = Arc<Job>>,
        last: &HashMap<JobName, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> JobTable {
        let mut table = JobTable::default();
        for job in jobs {
            let from = last.get(&job.name).copied().filter(|l| *l < now).unwrap_or(now);
            table.insert(job, from);
        }
        table
    }

    /// Sets how far the clock the table is driven by runs ahead of the wall clock.
    pub fn set_ahead(&mut self, ahead: chrono::Duration) {
        self.ahead = ahead.max(chrono::Duration::zero());
    }

    /// How late `at` is at `now` (the scheduler's clock), by the wall clock.
    fn late(&self, now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
        (now - self.ahead - at).to_std().unwrap_or_default()
    }

    fn insert(&mut self, job: Arc<Job>, from: DateTime<Utc>) {
        let next = if job.enabled { job.schedule.next_after(from) } else { None };
        if let Some(at) = next {
            self.enqueue(at, job.name.clone());
        }
        self.entries.insert(job.name.clone(), Entry { job, next });
    }

    fn remove(&mut self, name: &JobName) -> Option<Entry> {
        let entry = self.entries.remove(name)?;
        if let Some(at) = entry.next {
            self.dequeue(at, name);
        }
        Some(entry)
    }

    fn enqueue(&mut self, at: DateTime<Utc>, name: JobName) {
        self.queue.entry(at).or_default().insert(name);
    }

    fn dequeue(&mut self, at: DateTime<Utc>, name: &JobName) {
        if let Some(bucket) = self.queue.get_mut(&at) {
            bucket.remove(name);
            if bucket.is_empty() {
                self.queue.remove(&at);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn job(&self, name: &JobName) -> Option<Arc<Job>> {
        self.entries.get(name).map(|e| e.job.clone())
    }

    /// The earliest pending slot of any job.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.queue.first_key_value().map(|(at, _)| *at)
    }

    /// The next slot of one job.
    pub fn next_slot(&self, name: &JobName) -> Option<DateTime<Utc>> {
        self.entries.get(name).and_then(|e| e.next)
    }

    /// Replaces the job set with `jobs`, returning what changed (see `apply`).
    pub fn reload(&mut self, jobs: &BTreeMap<JobName, Arc<Job>>, now: DateTime<Utc>) -> JobDiff {
        let current: BTreeMap<JobName, Arc<Job>> =
            self.entries.iter().map(|(n, e)| (n.clone(), e.job.clone())).collect();
        let diff = JobDiff::between(&current, jobs);
        self.apply(jobs, &diff, now);
        diff
    }

    /// Applies a reload: only added, removed and changed jobs are touched. A changed job whose
    /// schedule is the same keeps its pending slot (a slot is never emitted twice).
    pub fn apply(
        &mut self,
        jobs: &BTreeMap<JobName, Arc<Job>>,
        diff: &JobDiff,
        now: DateTime<Utc>,
    ) {
        for name in &diff.removed {
            self.remove(name);
        }
        for name in diff.added.iter().chain(&diff.changed) {
            let Some(job) = jobs.get(name) else { continue };
            let previous = self.remove(name);
            match previous {
                Some(Entry { job: old, next: Some(at) })
                    if old.schedule == job.schedule
                        && job.enabled
                        && at > now - chrono::Duration::seconds(1) =>
                {
                    self.enqueue(at, name.clone());
                    self.entries.insert(name.clone(), Entry { job: job.clone(), next: Some(at) });
                }
                _ => self.insert(job.clone(), now),
            }
        }
    }

    /// Everything due at `now`, in slot order (then by name); each job's next slot moves past `now`.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = self.take_first(now);
        due.extend(self.advance(now));
        due.sort_by(|a, b| (a.scheduled, &a.job.name).cmp(&(b.scheduled, &b.job.name)));
        due
    }

    /// Phase one of `take_due`, the fast part the timer sends at once: the earliest due slot of
    /// each due job. Call `advance` right after: until then those jobs have no next slot.
    pub fn take_first(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if *entry.key() > now {
                break;
            }
            let (at, names) = entry.remove_entry();
            due.reserve(names.len());
            let late = self.late(now, at);
            for name in names {
                let Some(e) = self.entries.get_mut(&name) else { continue };
                e.next = None;
                let window = e.job.catch_up_window.unwrap_or(DEFAULT_LATE_WINDOW);
                let emitted = if late <= window {
                    due.push(Due {
                        job: e.job.clone(),
                        scheduled: at,
                        trigger: Trigger::Schedule,
                        late_by: late,
                    });
                    Emitted::Yes
                } else {
                    Emitted::Missed
                };
                self.taken.push((name, at, emitted));
            }
        }
        due
    }

    /// Undoes `take_first` before `advance`: the taken jobs get their slots back.
    pub fn untake(&mut self) {
        for (name, at, _) in std::mem::take(&mut self.taken) {
            if let Some(entry) = self.entries.get_mut(&name) {
                entry.next = Some(at);
                self.enqueue(at, name);
            }
        }
    }

    /// Phase two: computes the next slot of each job `take_first` took; returns the further slots
    /// that had already passed (a late wake-up), and the catch-up of those missed beyond the window.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        for (name, first, emitted) in std::mem::take(&mut self.taken) {
            let Some(job) = self.entries.get(&name).map(|e| e.job.clone()) else { continue };
            let window = job.catch_up_window.unwrap_or(DEFAULT_LATE_WINDOW);
            let mut missed = if emitted == Emitted::Missed { vec![first] } else { Vec::new() };
            let mut slot = job.schedule.next_after(first);
            while let Some(s) = slot.filter(|s| *s <= now) {
                let late = self.late(now, s);
                if late <= window {
                    due.push(Due {
                        job: job.clone(),
                        scheduled: s,
                        trigger: Trigger::Schedule,
                        late_by: late,
                    });
                } else if missed.len() < MAX_BACKLOG {
                    missed.push(s);
                }
                slot = job.schedule.next_after(s);
            }
            if !missed.is_empty() {
                catch_up(&job, &missed, now - self.ahead, &mut due);
            }
            if let Some(entry) = self.entries.get_mut(&name) {
                entry.next = slot;
            }
            if let Some(s) = slot {
                self.enqueue(s, name);
            }
        }
        due.sort_by_key(|d| d.scheduled);
        due
    }

    /// A manual run of `name` now.
    pub fn run_now(&self, name: &JobName, now: DateTime<Utc>) -> Option<Due> {
        let job = self.entries.get(name)?.job.clone();
        Some(Due { job, scheduled: now, trigger: Trigger::Manual, late_by: Duration::ZERO })
    }
}

fn catch_up(job: &Arc<Job>, missed: &[DateTime<Utc>], now: DateTime<Utc>, due: &mut Vec<Due>) {
    let late = |s: DateTime<Utc>| (now - s).to_std().unwrap_or_default();
    let (first, last) = (missed[0], missed[missed.len() - 1]);
    match job.catch_up {
        CatchUp::Skip => {
            warn!(job = %job.name, missed = missed.len(), first = %first, last = %last, "Skipped slots missed by more than the catch-up window (catch_up: skip).");
        }
        CatchUp::Latest => {
            due.push(Due {
                job: job.clone(),
                scheduled: last,
                trigger: Trigger::CatchUp,
                late_by: late(last),
            });
            if missed.len() > 1 {
                warn!(job = %job.name, missed = missed.len(), first = %first, "Running only the latest missed slot (catch_up: latest).");
            }
        }
        CatchUp::All => {
            due.extend(missed.iter().map(|s| Due {
                job: job.clone(),
                scheduled: *s,
                trigger: Trigger::CatchUp,
                late_by: late(*s),
            }));
        }
    }
}
