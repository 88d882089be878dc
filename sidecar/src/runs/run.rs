//! One run as a whole, as a pure state machine: its minions in sequential batches, the failure
//! threshold that stops later batches, the wait between batches, and the run's final status.
//! Per-minion decisions are made by [`MinionRun`]; this only routes inputs to them and aggregates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::minion::{self, Effect as MinionEffect, Input, Limits, MinionRun, Outcome};

/// How the chosen targets are run, resolved to numbers for this run's target count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Minions per batch; 0 runs all at once.
    pub batch_size: usize,
    /// Stop starting batches once this many minions failed. `None`: never stop.
    pub max_failures: Option<usize>,
    /// The pause between the end of one batch and the start of the next.
    pub batch_wait: Duration,
    pub limits: Limits,
}

/// What the run's task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Publish the launch to these minions now.
    Launch(Vec<String>),
    /// An effect for one minion (send kill, kill through Salt, its outcome).
    Minion(String, MinionEffect),
    /// Minions that will not run because the failure threshold was reached.
    NotStarted { minions: Vec<String>, why: String },
    /// The run is over.
    Finished(Summary),
}

/// The final word on a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub status: Status,
    /// For people: "3 of 3 minions succeeded", "stopped after 2 failures (max_failures 2)".
    pub reason: String,
    pub succeeded: usize,
    pub failed: usize,
    pub not_started: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    Killed,
}

/// One run.
#[derive(Debug)]
pub struct Run {
    plan: Plan,
    batches: Vec<Vec<String>>,
    /// Index of the next batch to launch.
    next_batch: usize,
    /// When the next batch may start, once the current one is done.
    next_batch_at: Option<Instant>,
    minions: BTreeMap<String, MinionRun>,
    outcomes: BTreeMap<String, Outcome>,
    not_started: Vec<String>,
    stop_reason: Option<String>,
    killed: bool,
    finished: bool,
}

impl Run {
    /// A run over `targets` (already chosen and ordered), started at `now`. The returned
    /// effects launch the first batch.
    pub fn start(plan: Plan, targets: Vec<String>, now: Instant) -> (Run, Vec<Effect>) {
        let size = if plan.batch_size == 0 { targets.len().max(1) } else { plan.batch_size };
        let batches = targets.chunks(size).map(<[String]>::to_vec).collect();
        let mut run = Run {
            plan,
            batches,
            next_batch: 0,
            next_batch_at: Some(now),
            minions: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            not_started: Vec::new(),
            stop_reason: None,
            killed: false,
            finished: false,
        };
        let effects = run.on_tick(now);
        (run, effects)
    }

    /// A run whose minions were already launched before a restart of the sidecar: `started`
    /// are followed as running (their agents reconnect), `launching` get a fresh launch window,
    /// `queued` (the later batches) start in batches of the plan once those are done.
    /// `ended` are the minions that had already finished, with their codes.
    pub fn resume(
        plan: Plan,
        ended: Vec<(String, i32)>,
        started: Vec<(String, Duration)>,
        legacy: Vec<(String, Duration)>,
        launching: Vec<String>,
        queued: Vec<String>,
        now: Instant,
    ) -> Run {
        let outcomes = ended
            .into_iter()
            .map(|(id, retcode)| {
                let outcome =
                    Outcome { retcode, reason: minion::EndReason::Exited, detail: String::new() };
                (id, outcome)
            })
            .collect();
        let mut minions = BTreeMap::new();
        for (id, running_for) in started {
            minions.insert(id, MinionRun::resumed(plan.limits, now, running_for));
        }
        for (id, running_for) in legacy {
            minions.insert(id, MinionRun::resumed_legacy(plan.limits, now, running_for));
        }
        for id in launching {
            minions.insert(id, MinionRun::launched(plan.limits, now));
        }
        let size = if plan.batch_size == 0 { queued.len().max(1) } else { plan.batch_size };
        let batches: Vec<Vec<String>> = queued.chunks(size).map(<[String]>::to_vec).collect();
        // With nothing in flight the next batch starts at once; otherwise when the current one
        // is done, as in a run that never stopped.
        let next_batch_at = (minions.is_empty() && !batches.is_empty()).then_some(now);
        Run {
            plan,
            batches,
            next_batch: 0,
            next_batch_at,
            minions,
            outcomes,
            not_started: Vec::new(),
            stop_reason: None,
            killed: false,
            finished: false,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Minions launched so far and not yet finished.
    pub fn active(&self) -> impl Iterator<Item = &str> {
        self.minions.iter().filter(|(_, m)| !m.is_done()).map(|(id, _)| id.as_str())
    }

    /// The next instant at which [`Run::on_tick`] could change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        let minions = self.minions.values().filter_map(MinionRun::next_deadline);
        minions.chain(self.next_batch_at).min()
    }

    /// An input for one minion of this run. Inputs for minions not launched (or unknown) are
    /// ignored: a stray message must not invent a result.
    pub fn on_minion(&mut self, minion: &str, input: Input, now: Instant) -> Vec<Effect> {
        let Some(m) = self.minions.get_mut(minion) else { return Vec::new() };
        let effects = m.on(input, now);
        self.after(minion, effects, now)
    }

    /// Kill the run: every active minion, and no further batch starts.
    pub fn kill(&mut self, now: Instant) -> Vec<Effect> {
        self.killed = true;
        self.stop_reason.get_or_insert_with(|| "killed".to_owned());
        let ids: Vec<String> = self.active().map(str::to_owned).collect();
        let mut effects = self.cancel_pending_batches("the run was killed");
        for id in ids {
            effects.extend(self.on_minion(&id, Input::Kill, now));
        }
        effects.extend(self.maybe_finish());
        effects
    }

    /// Time passed: deadlines of minions, and the next batch.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let due: Vec<String> = self
            .minions
            .iter()
            .filter(|(_, m)| m.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            effects.extend(self.on_minion(&id, Input::Tick, now));
        }
        if self.next_batch_at.is_some_and(|at| at <= now) {
            self.next_batch_at = None;
            effects.extend(self.launch_next_batch(now));
        }
        effects.extend(self.maybe_finish());
        effects
    }

    fn after(&mut self, minion: &str, effects: Vec<MinionEffect>, now: Instant) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len());
        let mut ended = false;
        for effect in effects {
            if let MinionEffect::Finish(outcome) = &effect {
                self.outcomes.insert(minion.to_owned(), outcome.clone());
                ended = true;
            }
            out.push(Effect::Minion(minion.to_owned(), effect));
        }
        let batch_over = ended && self.active().next().is_none();
        if batch_over && self.next_batch < self.batches.len() && !self.killed {
            out.extend(self.batch_done(now));
        }
        out.extend(self.maybe_finish());
        out
    }

    /// The current batch has ended: stop at the failure threshold, or schedule the next batch.
    fn batch_done(&mut self, now: Instant) -> Vec<Effect> {
        if let Some(stop) = self.stop_at_threshold() {
            return stop;
        }
        self.next_batch_at = Some(now + self.plan.batch_wait);
        if self.plan.batch_wait.is_zero() {
            self.next_batch_at = None;
            return self.launch_next_batch(now);
        }
        Vec::new()
    }

    /// At the failure threshold: the later batches do not start, and the run says why.
    fn stop_at_threshold(&mut self) -> Option<Vec<Effect>> {
        let failed = self.failed();
        let max = self.plan.max_failures.filter(|max| failed >= *max)?;
        let why = format!("stopped after {failed} failed minions (max_failures {max})");
        self.stop_reason = Some(why.clone());
        Some(self.cancel_pending_batches(&why))
    }

    fn launch_next_batch(&mut self, now: Instant) -> Vec<Effect> {
        // Checked again here for a run resumed after a restart with nothing in flight.
        if let Some(stop) = self.stop_at_threshold() {
            return stop;
        }
        let Some(batch) = self.batches.get(self.next_batch).cloned() else { return Vec::new() };
        self.next_batch += 1;
        for id in &batch {
            self.minions.insert(id.clone(), MinionRun::launched(self.plan.limits, now));
        }
        if batch.is_empty() { Vec::new() } else { vec![Effect::Launch(batch)] }
    }

    fn cancel_pending_batches(&mut self, why: &str) -> Vec<Effect> {
        self.next_batch_at = None;
        let rest: Vec<String> = self.batches.drain(self.next_batch..).flatten().collect();
        if rest.is_empty() {
            return Vec::new();
        }
        self.not_started.extend(rest.iter().cloned());
        vec![Effect::NotStarted { minions: rest, why: why.to_owned() }]
    }

    fn failed(&self) -> usize {
        self.outcomes.values().filter(|o| o.retcode != 0).count()
    }

    fn maybe_finish(&mut self) -> Vec<Effect> {
        let more_batches = self.next_batch < self.batches.len();
        if self.finished || self.active().next().is_some() || more_batches {
            return Vec::new();
        }
        self.finished = true;
        let failed = self.failed();
        let succeeded = self.outcomes.len() - failed;
        let not_started = self.not_started.len();
        let ran = self.outcomes.len();
        let status = if self.killed
            && self.outcomes.values().any(|o| o.reason == minion::EndReason::Killed)
        {
            Status::Killed
        } else if failed == 0 && ran > 0 && not_started == 0 {
            Status::Succeeded
        } else {
            Status::Failed
        };
        let mut reason = format!("{succeeded} of {} minions succeeded", ran + not_started);
        if ran == 0 {
            reason = "no minion ran".to_owned();
        }
        if let Some(stop) = &self.stop_reason {
            reason = format!("{reason}; {stop}");
        }
        vec![Effect::Finished(Summary { status, reason, succeeded, failed, not_started })]
    }
}

#[cfg(test)]
mod tests;
