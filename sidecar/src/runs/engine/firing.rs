//! Firing: the scheduler's slots become runs at their publish instant (their lead time before
//! the instant when pre-armed), the runs' coalesced launches of one turn become Salt publishes,
//! and at a pre-armed instant the minions that did not arm fall back to an ordinary dispatch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tracing::{info, warn};

use super::{Active, ArmedDispatch, Engine, Stage};
use crate::agents::RunMinion;
use crate::config::Job;
use crate::runs::minion::Input;
use crate::runs::record::Recorder;
use crate::runs::{DispatchMode, coalesce, dispatch};
use crate::scheduler::{Due, Trigger};
use saltpeter_protocol::Token;

impl Engine {
    /// Takes the scheduler's slots: each is published its lead time before its instant (held
    /// until then: the scheduler hands them over as early as the longest lead time).
    pub(super) async fn on_due(&mut self, batch: Vec<Due>) {
        let now = Utc::now();
        let mut ready = Vec::new();
        for due in batch {
            // A coalesced slot starts resolving its target a little before its publish instant
            // (its lead time before the instant; at the instant with no lead time).
            let lead = match due.trigger {
                Trigger::Manual => std::time::Duration::ZERO,
                Trigger::Schedule | Trigger::CatchUp
                    if self.deps.settings.mode(&due.job) == DispatchMode::Coalesced =>
                {
                    crate::runs::lead_of(&due.job, &self.deps.settings) + crate::runs::RESOLVE_AHEAD
                }
                Trigger::Schedule | Trigger::CatchUp => std::time::Duration::ZERO,
            };
            let publish_at = due.scheduled - chrono::Duration::from_std(lead).unwrap_or_default();
            if publish_at > now + chrono::Duration::milliseconds(20) {
                self.held.push((publish_at, due));
            } else {
                ready.push(due);
            }
        }
        if !ready.is_empty() {
            self.start_dues(ready).await;
        }
    }

    /// Releases the held slots whose publish instant came.
    pub(super) async fn release_held(&mut self) {
        let now = Utc::now();
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(at, _)| *at <= now + chrono::Duration::milliseconds(20));
        self.held = held;
        if !ready.is_empty() {
            self.start_dues(ready.into_iter().map(|(_, d)| d).collect()).await;
        }
    }

    /// Records the slots and starts resolving their targets. A slot published before its
    /// instant is pre-armed; if the previous run of a job that forbids overlap is still
    /// running then, the slot waits for its instant and is decided there.
    async fn start_dues(&mut self, batch: Vec<Due>) {
        let now = Utc::now();
        let mut started = Vec::new();
        // Jobs with a run started earlier in this batch (a catch-up and the on-time slot of
        // the same job, at a restart): overlap applies between them as with a run in flight.
        let mut in_batch: HashSet<crate::config::JobName> = HashSet::new();
        for due in batch {
            let early = due.trigger != Trigger::Manual
                && due.scheduled > now + chrono::Duration::milliseconds(100);
            let in_batch_too = !due.job.allow_overlap && in_batch.contains(&due.job.name);
            // An earlier slot of the job held back counts as running: it goes first.
            let earlier_held = self
                .held
                .iter()
                .any(|(_, d)| d.job.name == due.job.name && d.scheduled < due.scheduled);
            let overlaps = in_batch_too
                || (!due.job.allow_overlap && (self.running(&due.job) || earlier_held));
            if overlaps && (early || in_batch_too) {
                // Decided at its instant (pre-armed), and not before a moment has passed when
                // the other run is of this batch (a catch-up at a restart is quick to go, and
                // the slot then runs after it).
                let grace = if in_batch_too { now + super::FALLBACK_GRACE } else { now };
                let at = if early { due.scheduled.max(grace) } else { grace };
                self.held.push((at, due));
                continue;
            }
            let armed_at = early.then_some(due.scheduled);
            let instance = self.instance_id(&due);
            let mut recorder = Recorder::new(
                Arc::clone(&self.deps),
                self.outbox.clone(),
                Arc::clone(&due.job),
                instance.clone(),
            );
            let trigger = due.trigger;
            let skip = if self.maintenance.global {
                Some("global maintenance is on".to_owned())
            } else if overlaps {
                Some("the previous run of this job is still running (overlap)".to_owned())
            } else {
                None
            };
            recorder.created(due.scheduled, trigger, skip.as_deref(), now).await;
            if let Some(why) = skip {
                info!(job = %due.job.name, instance, why, "Run skipped.");
                continue;
            }
            in_batch.insert(due.job.name.clone());
            started.push((due, instance, recorder, armed_at));
        }
        // Every slot is durable before anything is dispatched.
        if let Err(e) = self.deps.store.write_durable(crate::store::Write::Barrier).await {
            tracing::error!(error = %e, "Cannot record the due runs; they are dispatched anyway.");
        }
        // Runs sharing a target share its resolution: one `test.ping` for all of them.
        let mut by_target: HashMap<(String, String), (Arc<Job>, Vec<String>)> = HashMap::new();
        for (due, instance, recorder, armed_at) in started {
            // A coalesced slot without lead time resolves ahead too, but is published at its
            // instant: pre-armed only with a lead time.
            let pre_armed = armed_at.is_some()
                && !crate::runs::lead_of(&due.job, &self.deps.settings).is_zero();
            info!(job = %due.job.name, instance, late_ms = due.late_by.as_millis(), pre_armed, "Run starts.");
            let key = (due.job.targets.clone(), format!("{:?}", due.job.target_type));
            by_target
                .entry(key)
                .or_insert_with(|| (Arc::clone(&due.job), Vec::new()))
                .1
                .push(instance.clone());
            self.runs.insert(
                instance,
                Active {
                    job: due.job,
                    stage: Stage::Resolving { candidates: None, killed: false },
                    recorder,
                    armed_at,
                    legacy: HashMap::new(),
                    unarmed: std::collections::HashSet::new(),
                },
            );
        }
        for (job, instances) in by_target.into_values() {
            dispatch::resolve(
                &self.tasks,
                Arc::clone(&self.deps),
                &job,
                instances,
                self.inbox.clone(),
            );
        }
    }

    /// A maintenance change during the lead window cancels the armed runs it covers (every
    /// one for global maintenance): they have not started, so they are stopped as a kill would
    /// (recorded `cancelled`).
    pub(super) async fn cancel_armed_in_maintenance(&mut self, now: Instant) {
        let wall = Utc::now();
        let mut covered = Vec::new();
        for (instance, active) in &self.runs {
            let (Some(at), Stage::Running(run)) = (active.armed_at, &active.stage) else {
                continue;
            };
            if at <= wall {
                continue;
            }
            for minion in run.active() {
                if self.maintenance.global || self.maintenance.machines.iter().any(|m| m == minion)
                {
                    covered.push((instance.clone(), minion.to_owned()));
                }
            }
        }
        for (instance, minion) in covered {
            info!(
                instance,
                minion, "Maintenance during the lead window: the armed run is cancelled."
            );
            self.apply(&instance, |run| run.on_minion(&minion, Input::Kill, now), now).await;
        }
    }

    /// Jobs removed during the lead window: their slots not yet published are dropped, and
    /// their armed runs that have not started are cancelled (stopped as a kill would).
    pub(super) async fn cancel_removed(&mut self, jobs: &[String], now: Instant) {
        let removed = |job: &Job| jobs.iter().any(|j| j == job.name.as_str());
        self.held.retain(|(_, due)| {
            let keep = !removed(&due.job);
            if !keep {
                info!(job = %due.job.name, "The job was removed before its slot was published.");
            }
            keep
        });
        let wall = Utc::now();
        let armed: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, a)| removed(&a.job) && a.armed_at.is_some_and(|at| at > wall))
            .map(|(id, _)| id.clone())
            .collect();
        for instance in armed {
            info!(
                instance,
                "The job was removed during the lead window: its armed run is cancelled."
            );
            let Some(active) = self.runs.get_mut(&instance) else { continue };
            let effects = match &mut active.stage {
                Stage::Resolving { killed, .. } => {
                    *killed = true;
                    continue;
                }
                Stage::Running(run) => run.kill(now),
            };
            self.handle(&instance, effects, now).await;
        }
    }

    /// At a pre-armed dispatch's instant, each minion whose agent has not fetched its manifest
    /// is dispatched the ordinary way at once (its manifest is withdrawn, so a late agent
    /// starts nothing).
    pub(super) async fn fall_back(&mut self) {
        let now = Utc::now();
        let (due, armed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.armed).into_iter().partition(|a| a.at <= now);
        self.armed = armed;
        for dispatch in due {
            for minion in dispatch.minions {
                let Some(instances) = self.deps.registry.withdraw(&dispatch.id, &minion) else {
                    continue;
                };
                warn!(dispatch = %dispatch.id, minion, runs = instances.len(), "The minion did not arm by the instant; dispatching it now.");
                for instance in instances {
                    let Some(active) = self.runs.get_mut(&instance) else { continue };
                    active.unarmed.remove(&minion);
                    let Stage::Running(run) = &active.stage else { continue };
                    if !run.active().any(|m| m == minion) {
                        continue;
                    }
                    self.deps.metrics.fell_back(1);
                    self.pending.push(coalesce::Pending {
                        instance,
                        job: Arc::clone(&active.job),
                        minions: vec![minion.clone()],
                        scheduled: None,
                        path: "fallback",
                        publish_at: now,
                        mode: DispatchMode::Coalesced,
                    });
                }
            }
        }
    }

    /// One publish per minion with the `SP_*` environment (single), or of the command itself
    /// through Salt (legacy), for the minions of `p`.
    async fn launch_direct(&mut self, p: coalesce::Pending) {
        let Some(active) = self.runs.get_mut(&p.instance) else { return };
        let legacy = p.mode == DispatchMode::Legacy;
        let mut launches = Vec::with_capacity(p.minions.len());
        for minion in p.minions {
            active.recorder.minion_path(&minion, p.path, None).await;
            let token = Token::new(format!("{:032x}", rand::random::<u128>()));
            if legacy {
                active.legacy.insert(minion.clone(), super::LegacyMinion::default());
            } else {
                self.deps.registry.expect(RunMinion::new(&p.instance, &minion), token.clone());
            }
            active.recorder.minion_launched(&minion, token.as_str()).await;
            launches.push((minion, token));
        }
        // Legacy: one publish for the run's minions; single: one per minion.
        let publishes = if legacy { 1 } else { launches.len() };
        self.deps.metrics.published(p.path, u64::try_from(publishes).unwrap_or(u64::MAX));
        let launch = if legacy { dispatch::legacy } else { dispatch::launch };
        launch(
            &self.tasks,
            Arc::clone(&self.deps),
            &p.job,
            &p.instance,
            launches,
            self.inbox.clone(),
        );
    }

    /// Publishes the coalesced launches collected during this turn.
    pub(super) async fn flush_dispatches(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Utc::now() + chrono::Duration::milliseconds(2);
        let (pending, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.publish_at <= now);
        self.pending = later;
        let (pending, direct): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| p.mode == DispatchMode::Coalesced);
        for p in direct {
            self.launch_direct(p).await;
        }
        if pending.is_empty() {
            return;
        }
        let plan = coalesce::plan(pending, &self.deps.settings, &mut self.dispatches);
        self.deps.metrics.firing(plan.len());
        self.deps.metrics.published("coalesced", u64::try_from(plan.len()).unwrap_or(u64::MAX));
        for planned in plan {
            let runs = planned.runs();
            let mut count = 0;
            for (minion, instances) in &runs {
                for instance in instances {
                    count += 1;
                    if let Some(active) = self.runs.get_mut(instance) {
                        let path = planned.paths.get(instance).copied().unwrap_or("coalesced");
                        active.recorder.minion_launched(minion, planned.token.as_str()).await;
                        active.recorder.minion_path(minion, path, None).await;
                    }
                }
            }
            if let Some(at) = planned.armed_at() {
                // A publish squeezed late into its lead window (a slow target resolution) gets
                // at least the time an agent needs to start before its minions fall back: a
                // second publish then would only come later than the first.
                let at = at.max(Utc::now() + super::FALLBACK_GRACE);
                let minions = runs.keys().cloned().collect();
                self.armed.push(ArmedDispatch { at, id: planned.id.clone(), minions });
            }
            self.deps.registry.expect_dispatch(
                planned.id.clone(),
                planned.token.clone(),
                planned.manifests.clone().into_iter().collect(),
            );
            info!(dispatch = %planned.id, minions = runs.len(), runs = count, "Coalesced dispatch.");
            coalesce::publish(&self.tasks, Arc::clone(&self.deps), &planned, self.inbox.clone());
        }
    }
}
