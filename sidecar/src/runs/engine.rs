//! The engine actor: owns every run in flight, applies inputs to their state machines, and turns
//! the effects into work for `dispatch` (Salt), the agent registry (kills) and `record`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom as _;
use saltpeter_protocol::{
    JobInstance, JobName as WireJobName, KillReason, MachineId, RunKey, ServerMessage, Token,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::minion::{self, Input, Limits, StopReason};
use super::record::{Outbox, Recorder};
use super::run::{self, Plan, Run};
use super::{AgentEvent, AgentEventKind, Deps, DispatchMode, coalesce, dispatch};
use crate::agents::RunMinion;
use crate::config::{BatchSize, Job, Maintenance};
use crate::scheduler::{Due, Trigger};
use crate::store::RunStatus;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KillError {
    #[error("no run {0} is in flight")]
    NotRunning(String),
    #[error("run {instance} has no minion {minion} in flight")]
    NoMinion { instance: String, minion: String },
    #[error("the run engine is shutting down")]
    ShuttingDown,
}

pub(super) enum Command {
    Agent(AgentEvent),
    /// An agent's result; the reply says whether the run was in flight, once it is recorded.
    AgentResult {
        event: AgentEvent,
        reply: oneshot::Sender<bool>,
    },
    Kill {
        instance: String,
        minion: Option<String>,
        reply: oneshot::Sender<Result<(), KillError>>,
    },
    Maintenance(Maintenance),
    /// Jobs removed by a reload.
    JobsRemoved(Vec<String>),
    Active {
        reply: oneshot::Sender<Vec<String>>,
    },
    /// The target resolved to these minions (the master's prediction), or failed.
    Resolved {
        instances: Vec<String>,
        result: Result<Vec<String>, String>,
    },
    /// The liveness probe ended: who answered, who did not.
    Pinged {
        instances: Vec<String>,
        answered: Vec<String>,
        silent: Vec<String>,
    },
    /// `use_wrapper: false`: Salt returned the command itself on a minion.
    Returned {
        instance: String,
        minion: String,
        retcode: i32,
        output: String,
    },
    /// `use_wrapper: false`: Salt took the command on these minions with this jid.
    LegacyJid {
        instance: String,
        minions: Vec<String>,
        jid: String,
    },
    /// Salt reported something about one minion (its launch, a kill through Salt).
    Minion {
        instance: String,
        minion: String,
        input: Input,
    },
}

/// Where a run is in its life.
enum Stage {
    /// Waiting for the target to resolve (and, with `number_of_targets`, for the liveness probe).
    Resolving {
        candidates: Option<Vec<String>>,
        killed: bool,
    },
    Running(Box<Run>),
}

struct Active {
    job: Arc<Job>,
    stage: Stage,
    recorder: Recorder,
    /// Pre-armed: the instant the agents start the command at (published before it).
    armed_at: Option<DateTime<Utc>>,
    /// Minions launched the legacy way (`cmd.run` of the command through Salt): they are
    /// killed with `saltutil.kill_job` of their publish, never through an agent.
    legacy: HashMap<String, LegacyMinion>,
    /// Minions published pre-armed whose agent has not confirmed `armed` yet: one that starts
    /// the command without having armed (its manifest came too late to arm every entry
    /// before the instant) is recorded `late-armed`.
    unarmed: HashSet<String>,
}

#[derive(Default)]
struct LegacyMinion {
    /// The jid of the publish, once Salt took it.
    jid: Option<String>,
    /// A kill was asked for (sent once the jid is known).
    kill_asked: bool,
    kill_sent: bool,
}

impl Active {
    /// Asks for `minion`'s legacy kill; returns the jid to kill if it is to be sent now.
    fn legacy_kill(&mut self, minion: &str) -> Option<String> {
        let m = self.legacy.get_mut(minion)?;
        m.kill_asked = true;
        if m.kill_sent {
            return None;
        }
        let jid = m.jid.clone()?;
        m.kill_sent = true;
        Some(jid)
    }
}

/// A pre-armed dispatch whose minions must have fetched their manifest by its instant.
struct ArmedDispatch {
    at: DateTime<Utc>,
    id: saltpeter_protocol::DispatchId,
    minions: Vec<String>,
}

mod firing;

/// The least time a pre-armed publish gives its agents to fetch their manifests before their
/// minions fall back to an ordinary dispatch.
const FALLBACK_GRACE: chrono::Duration = chrono::Duration::seconds(2);

pub(super) struct Engine {
    deps: Arc<Deps>,
    tasks: TaskTracker,
    inbox: mpsc::Sender<Command>,
    runs: HashMap<String, Active>,
    maintenance: Maintenance,
    outbox: Outbox,
    /// Launches of coalesced runs collected during this turn, published at its end.
    pending: Vec<coalesce::Pending>,
    /// Numbers dispatch ids.
    dispatches: u64,
    /// Slots the scheduler handed over early (its clock runs ahead by the longest lead time),
    /// held until their publish instant.
    held: Vec<(DateTime<Utc>, Due)>,
    /// Pre-armed dispatches not yet past their instant.
    armed: Vec<ArmedDispatch>,
}

impl Engine {
    pub(super) fn new(deps: Deps, tasks: TaskTracker, inbox: mpsc::Sender<Command>) -> Self {
        let deps = Arc::new(deps);
        let outbox = Outbox::spawn(&tasks, &deps);
        Engine {
            deps,
            tasks,
            inbox,
            runs: HashMap::new(),
            maintenance: Maintenance::default(),
            outbox,
            pending: Vec::new(),
            dispatches: 0,
            held: Vec::new(),
            armed: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        jobs: Vec<Arc<Job>>,
        mut inbox: mpsc::Receiver<Command>,
        mut due: mpsc::Receiver<Due>,
        cancel: CancellationToken,
    ) {
        self.resume(&jobs).await;
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(command) = inbox.recv() => self.on_command(command).await,
                Some(d) = due.recv() => {
                    let mut batch = vec![d];
                    while let Ok(more) = due.try_recv() {
                        batch.push(more);
                    }
                    self.on_due(batch).await;
                }
                () = sleep => self.on_tick().await,
            }
            self.flush_dispatches().await;
        }
        info!(
            runs = self.runs.len(),
            "The run engine stops; runs in flight resume after a restart."
        );
    }

    /// Picks up the runs the store says were in flight when the sidecar last stopped: their
    /// agents reconnect with their tokens and resend what was not acknowledged; an agent that
    /// never comes back is lost at the heartbeat deadline (253).
    async fn resume(&mut self, jobs: &[Arc<Job>]) {
        let open = match self.deps.store.open_runs().await {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the runs in flight from the store; they stay open.");
                return;
            }
        };
        let now = Instant::now();
        let wall = Utc::now();
        for row in open {
            let close = |status: RunStatus, reason: &str| crate::store::Write::UpdateRun {
                instance: row.instance.clone(),
                status,
                reason: reason.to_owned(),
                started: None,
                finished: Some(wall),
            };
            let Some(job) = jobs.iter().find(|j| j.name.as_str() == row.job) else {
                let _ = self
                    .deps
                    .store
                    .write(close(
                        RunStatus::Failed,
                        "the job was removed while the sidecar was down",
                    ))
                    .await;
                continue;
            };
            if row.status == RunStatus::Pending {
                let _ = self
                    .deps
                    .store
                    .write(close(RunStatus::Skipped, "the sidecar stopped before dispatching it"))
                    .await;
                continue;
            }
            let results = self.deps.store.results(&row.instance).await.unwrap_or_default();
            let (mut ended, mut started, mut launching) = (Vec::new(), Vec::new(), Vec::new());
            let (mut queued, mut legacy) = (Vec::new(), Vec::new());
            // `use_wrapper: false` minions by the jid of their publish.
            let mut legacy_jids: HashMap<String, Vec<String>> = HashMap::new();
            for r in &results {
                match (r.retcode, r.phase.as_str()) {
                    (Some(code), _) => ended.push((r.minion.clone(), code)),
                    (None, "queued") => queued.push(r.minion.clone()),
                    (None, "running" | "launching") if r.jid.is_some() => {
                        let running_for =
                            r.started.map(|at| (wall - at).to_std().unwrap_or_default());
                        legacy.push((r.minion.clone(), running_for.unwrap_or_default()));
                        let jid = r.jid.clone().unwrap_or_default();
                        legacy_jids.entry(jid).or_default().push(r.minion.clone());
                    }
                    (None, "running" | "launching" | "armed") => {
                        if let Some(token) = &r.token {
                            self.deps.registry.expect(
                                RunMinion::new(&row.instance, &r.minion),
                                Token::new(token.clone()),
                            );
                        }
                        match r.started {
                            Some(at) if r.phase == "running" || r.phase == "armed" => {
                                started.push((
                                    r.minion.clone(),
                                    (wall - at).to_std().unwrap_or_default(),
                                ));
                            }
                            _ => launching.push(r.minion.clone()),
                        }
                    }
                    (None, _) => {}
                }
            }
            info!(
                instance = row.instance,
                running = started.len(),
                legacy = legacy.len(),
                launching = launching.len(),
                queued = queued.len(),
                "Resuming a run in flight."
            );
            let recorder = Recorder::resumed(
                Arc::clone(&self.deps),
                self.outbox.clone(),
                Arc::clone(job),
                &row,
                &results,
            );
            let n = ended.len() + started.len() + legacy.len() + launching.len() + queued.len();
            let limits = Limits { timeout: job.timeout, ..recorder.limits() };
            let plan = plan_for(job, n, limits);
            let ran_for: HashMap<&str, std::time::Duration> =
                legacy.iter().map(|(m, d)| (m.as_str(), *d)).collect();
            let mut resumed_legacy = Vec::new();
            for (jid, minions) in legacy_jids {
                let ran = minions.iter().filter_map(|m| ran_for.get(m.as_str())).max();
                resumed_legacy.push((jid, minions, ran.copied().unwrap_or_default()));
            }
            let run = Run::resume(plan, ended, started, legacy, launching, queued, now);
            let mut legacy_minions = HashMap::new();
            for (jid, minions, ran) in resumed_legacy {
                for minion in &minions {
                    let state = LegacyMinion { jid: Some(jid.clone()), ..LegacyMinion::default() };
                    legacy_minions.insert(minion.clone(), state);
                }
                // The wait for the returns ends with what is left of the job's timeout.
                let timeout =
                    job.timeout.map_or(dispatch::LEGACY_NO_TIMEOUT, |t| t.saturating_sub(ran));
                dispatch::resume_legacy(
                    &self.tasks,
                    Arc::clone(&self.deps),
                    &row.instance,
                    &jid,
                    minions,
                    timeout,
                    self.inbox.clone(),
                );
            }
            self.runs.insert(
                row.instance.clone(),
                Active {
                    job: Arc::clone(job),
                    stage: Stage::Running(Box::new(run)),
                    recorder,
                    armed_at: None,
                    legacy: legacy_minions,
                    unarmed: HashSet::new(),
                },
            );
        }
        self.on_tick().await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let runs = self.runs.values().filter_map(|a| match &a.stage {
            Stage::Running(run) => run.next_deadline(),
            Stage::Resolving { .. } => None,
        });
        let held = self.held.iter().map(|(at, _)| *at);
        let held = held.chain(self.pending.iter().map(|p| p.publish_at));
        let armed = self.armed.iter().map(|a| a.at);
        let wall = held.chain(armed).min().map(instant_of);
        runs.chain(wall).min()
    }

    fn running(&self, job: &Job) -> bool {
        self.runs.values().any(|a| a.job.name == job.name)
    }

    /// `<job>_<unix seconds of the slot>`, as the original named instances; a suffix keeps it
    /// unique when two runs of a job share a second (manual runs).
    fn instance_id(&self, due: &Due) -> String {
        let base = format!("{}_{}", due.job.name.as_str(), due.scheduled.timestamp());
        let mut id = base.clone();
        let mut n = 1;
        while self.runs.contains_key(&id) {
            n += 1;
            id = format!("{base}.{n}");
        }
        if n == 1 && due.trigger == Trigger::Manual {
            id = format!("{base}.m{}", due.scheduled.timestamp_subsec_millis());
        }
        id
    }

    async fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Agent(event) => self.on_agent(event, now).await,
            Command::AgentResult { event, reply } => {
                // The reply comes after the result's writes are queued: a durable barrier the
                // caller writes next commits them.
                let known = self.runs.contains_key(&event.key.instance);
                self.on_agent(event, now).await;
                let _ = reply.send(known);
            }
            Command::Kill { instance, minion, reply } => {
                let _ = reply.send(self.on_kill(&instance, minion.as_deref(), now).await);
            }
            Command::JobsRemoved(jobs) => self.cancel_removed(&jobs, now).await,
            Command::Maintenance(m) => {
                self.maintenance = m;
                self.cancel_armed_in_maintenance(now).await;
            }
            Command::Active { reply } => {
                let _ = reply.send(self.runs.keys().cloned().collect());
            }
            Command::Resolved { instances, result } => {
                for instance in instances {
                    self.on_resolved(&instance, result.clone(), now).await;
                }
            }
            Command::Pinged { instances, answered, silent } => {
                for instance in instances {
                    self.on_pinged(&instance, answered.clone(), silent.clone(), now).await;
                }
            }
            Command::Returned { instance, minion, retcode, output } => {
                if let Some(active) = self.runs.get_mut(&instance) {
                    active.recorder.legacy_output(&minion, output.as_bytes()).await;
                }
                let input = Input::AgentCompleted { retcode };
                self.apply(&instance, |run| run.on_minion(&minion, input, now), now).await;
            }
            Command::Minion { instance, minion, input } => {
                if input == Input::LegacyStarted
                    && let Some(active) = self.runs.get_mut(&instance)
                {
                    // Salt took the command: it runs from now (no agent reports its start).
                    active.recorder.minion_started(&minion).await;
                }
                self.apply(&instance, |run| run.on_minion(&minion, input, now), now).await;
            }
            Command::LegacyJid { instance, minions, jid } => {
                let Some(active) = self.runs.get_mut(&instance) else { return };
                for minion in minions {
                    active.recorder.minion_jid(&minion, &jid).await;
                    if let Some(m) = active.legacy.get_mut(&minion) {
                        m.jid = Some(jid.clone());
                    }
                    if active.legacy.get(&minion).is_some_and(|m| m.kill_asked)
                        && let Some(jid) = active.legacy_kill(&minion)
                    {
                        dispatch::legacy_kill(
                            &self.tasks,
                            Arc::clone(&self.deps),
                            &instance,
                            &minion,
                            &jid,
                            self.inbox.clone(),
                        );
                    }
                }
            }
        }
    }

    async fn on_resolved(
        &mut self,
        instance: &str,
        result: Result<Vec<String>, String>,
        now: Instant,
    ) {
        let Some(active) = self.runs.get_mut(instance) else { return };
        let Stage::Resolving { candidates, killed } = &mut active.stage else { return };
        let expected = match result {
            Ok(expected) => expected,
            Err(why) => {
                warn!(instance, why, "The target did not resolve.");
                active.recorder.no_targets(&why).await;
                self.runs.remove(instance);
                return;
            }
        };
        let (in_maintenance, rest): (Vec<String>, Vec<String>) =
            expected.into_iter().partition(|m| self.maintenance.machines.contains(m));
        for minion in &in_maintenance {
            active
                .recorder
                .minion_skipped(minion, "maintenance", "the minion is in maintenance")
                .await;
        }
        if rest.is_empty() || *killed {
            let why = if *killed {
                "killed before it started"
            } else {
                "every targeted minion is in maintenance"
            };
            active.recorder.no_targets(why).await;
            self.runs.remove(instance);
            return;
        }
        if active.job.number_of_targets.is_some() {
            // A random subset of the responsive minions: wait for the liveness probe.
            *candidates = Some(rest);
            return;
        }
        let effects = start_run(active, rest, now).await;
        self.handle(instance, effects, now).await;
    }

    async fn on_pinged(
        &mut self,
        instance: &str,
        answered: Vec<String>,
        silent: Vec<String>,
        now: Instant,
    ) {
        let Some(active) = self.runs.get_mut(instance) else { return };
        match &mut active.stage {
            Stage::Resolving { candidates: Some(candidates), .. } => {
                let answered: BTreeSet<&String> = answered.iter().collect();
                let (mut responsive, silent): (Vec<String>, Vec<String>) =
                    std::mem::take(candidates).into_iter().partition(|m| answered.contains(m));
                for minion in &silent {
                    active.recorder.minion_did_not_respond(minion).await;
                }
                responsive.shuffle(&mut rand::rng());
                if let Some(n) = active.job.number_of_targets {
                    responsive.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                }
                if responsive.is_empty() {
                    active.recorder.no_targets("no targeted minion responded").await;
                    self.runs.remove(instance);
                    return;
                }
                let effects = start_run(active, responsive, now).await;
                self.handle(instance, effects, now).await;
            }
            Stage::Running(_) => {
                for minion in silent {
                    self.apply(
                        instance,
                        |run| run.on_minion(&minion, Input::Unresponsive, now),
                        now,
                    )
                    .await;
                }
            }
            Stage::Resolving { candidates: None, .. } => {}
        }
    }

    async fn on_agent(&mut self, event: AgentEvent, now: Instant) {
        let AgentEvent { key, kind } = event;
        let Some(active) = self.runs.get_mut(&key.instance) else {
            debug!(
                instance = key.instance,
                minion = key.minion,
                "An agent event for a run not in flight."
            );
            return;
        };
        let input = match kind {
            AgentEventKind::Started { pid } => {
                debug!(
                    instance = key.instance,
                    minion = key.minion,
                    pid,
                    "The agent started the command."
                );
                active.recorder.minion_started(&key.minion).await;
                if active.unarmed.remove(&key.minion) {
                    active.recorder.minion_path(&key.minion, "late-armed", None).await;
                    self.deps.metrics.late_armed();
                }
                Input::AgentStarted
            }
            AgentEventKind::Alive => Input::AgentAlive,
            AgentEventKind::Output { data, .. } => {
                active.recorder.output_seen(&key.minion, &data);
                Input::AgentAlive
            }
            AgentEventKind::Completed { retcode } => Input::AgentCompleted { retcode },
            AgentEventKind::Error { message } => Input::AgentError { message },
            AgentEventKind::Armed { scheduled } => {
                let skew = self.deps.registry.skew(&key.minion);
                active.unarmed.remove(&key.minion);
                active.recorder.minion_path(&key.minion, "armed", skew).await;
                active.recorder.minion_armed(&key.minion).await;
                self.deps.metrics.armed();
                let wait = (scheduled - Utc::now()).to_std().unwrap_or_default();
                Input::AgentArmed { start_at: now + wait }
            }
        };
        self.apply(&key.instance, |run| run.on_minion(&key.minion, input, now), now).await;
    }

    async fn on_kill(
        &mut self,
        instance: &str,
        minion: Option<&str>,
        now: Instant,
    ) -> Result<(), KillError> {
        let Some(active) = self.runs.get_mut(instance) else {
            return Err(KillError::NotRunning(instance.to_owned()));
        };
        info!(instance, minion, "Kill requested.");
        let effects = match (&mut active.stage, minion) {
            (Stage::Resolving { killed, .. }, _) => {
                *killed = true;
                return Ok(());
            }
            (Stage::Running(run), None) => run.kill(now),
            (Stage::Running(run), Some(m)) => {
                if !run.active().any(|a| a == m) {
                    return Err(KillError::NoMinion {
                        instance: instance.to_owned(),
                        minion: m.to_owned(),
                    });
                }
                run.on_minion(m, Input::Kill, now)
            }
        };
        self.handle(instance, effects, now).await;
        Ok(())
    }

    async fn on_tick(&mut self) {
        self.release_held().await;
        self.fall_back().await;
        let now = Instant::now();
        let due: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, a)| matches!(&a.stage, Stage::Running(r) if r.next_deadline().is_some_and(|d| d <= now)))
            .map(|(id, _)| id.clone())
            .collect();
        for instance in due {
            self.apply(&instance, |run| run.on_tick(now), now).await;
        }
    }

    /// Applies `f` to the run `instance` if it is running, then carries out the effects.
    async fn apply(
        &mut self,
        instance: &str,
        f: impl FnOnce(&mut Run) -> Vec<run::Effect>,
        now: Instant,
    ) {
        let Some(Active { stage: Stage::Running(run), .. }) = self.runs.get_mut(instance) else {
            return;
        };
        let effects = f(run);
        self.handle(instance, effects, now).await;
    }

    async fn handle(&mut self, instance: &str, effects: Vec<run::Effect>, _now: Instant) {
        let Some(active) = self.runs.get_mut(instance) else { return };
        let mut finished = false;
        for effect in effects {
            match effect {
                run::Effect::Launch(minions) => {
                    // Each minion by its mode (`minion_dispatch` may override the job's).
                    // Coalesced ones are published their lead time before the instant and
                    // armed for it (without a lead time, at the instant); single and legacy
                    // ones at the instant.
                    let wall = Utc::now();
                    let instant = active
                        .armed_at
                        .filter(|at| *at > wall + chrono::Duration::milliseconds(20));
                    let mut groups: Vec<(DispatchMode, Option<String>, Vec<String>)> = Vec::new();
                    for minion in minions {
                        let (mode, wrapper) = self.deps.settings.minion_mode(&active.job, &minion);
                        let wrapper = wrapper.map(str::to_owned);
                        match groups.iter_mut().find(|(m, w, _)| *m == mode && *w == wrapper) {
                            Some((_, _, list)) => list.push(minion),
                            None => groups.push((mode, wrapper, vec![minion])),
                        }
                    }
                    for (mode, wrapper, minions) in groups {
                        let job = match wrapper {
                            Some(path) => {
                                let mut job = (*active.job).clone();
                                job.wrapper_path = Some(path);
                                Arc::new(job)
                            }
                            None => Arc::clone(&active.job),
                        };
                        let pending = if mode == DispatchMode::Coalesced {
                            let lead = super::lead_of(&active.job, &self.deps.settings);
                            let lead = chrono::Duration::from_std(lead).unwrap_or_default();
                            let scheduled = instant.filter(|_| lead > chrono::Duration::zero());
                            if scheduled.is_some() {
                                active.unarmed.extend(minions.iter().cloned());
                            }
                            coalesce::Pending {
                                instance: instance.to_owned(),
                                job,
                                minions,
                                scheduled,
                                path: if scheduled.is_some() { "pre-armed" } else { "coalesced" },
                                publish_at: instant.map_or(wall, |at| at - lead),
                                mode,
                            }
                        } else {
                            coalesce::Pending {
                                instance: instance.to_owned(),
                                job,
                                minions,
                                scheduled: None,
                                path: if mode == DispatchMode::Legacy {
                                    "legacy"
                                } else {
                                    "single"
                                },
                                publish_at: instant.unwrap_or(wall),
                                mode,
                            }
                        };
                        self.pending.push(pending);
                    }
                }
                run::Effect::Minion(
                    minion,
                    minion::Effect::SendKill(_) | minion::Effect::KillThroughSalt(_),
                ) if active.legacy.contains_key(&minion) => {
                    // No agent: `saltutil.kill_job` of the publish (once its jid is known).
                    if let Some(jid) = active.legacy_kill(&minion) {
                        info!(
                            instance,
                            minion, jid, "Killing a legacy run with saltutil.kill_job."
                        );
                        dispatch::legacy_kill(
                            &self.tasks,
                            Arc::clone(&self.deps),
                            instance,
                            &minion,
                            &jid,
                            self.inbox.clone(),
                        );
                    }
                }
                run::Effect::Minion(minion, minion::Effect::SendKill(why)) => {
                    let key = RunMinion::new(instance, &minion);
                    let message = kill_message(&active.job, instance, &minion, why);
                    let reason = kill_reason(why);
                    if !self.deps.registry.kill(&key, reason, message) {
                        debug!(instance, minion, "No agent session to take the kill now.");
                    }
                }
                run::Effect::Minion(minion, minion::Effect::KillThroughSalt(why)) => {
                    warn!(
                        instance,
                        minion,
                        ?why,
                        "The agent did not confirm the kill; killing through Salt."
                    );
                    dispatch::kill_through_salt(
                        &self.tasks,
                        Arc::clone(&self.deps),
                        &active.job,
                        instance,
                        &minion,
                        self.inbox.clone(),
                    );
                }
                run::Effect::Minion(minion, minion::Effect::Finish(outcome)) => {
                    self.deps.registry.forget(&RunMinion::new(instance, &minion));
                    active.recorder.minion_finished(&minion, &outcome).await;
                }
                run::Effect::NotStarted { minions, why } => {
                    for minion in minions {
                        active.recorder.minion_skipped(&minion, "not_started", &why).await;
                    }
                }
                run::Effect::Finished(summary) => {
                    let status = match summary.status {
                        run::Status::Succeeded => RunStatus::Succeeded,
                        run::Status::Failed => RunStatus::Failed,
                        run::Status::Killed => RunStatus::Killed,
                    };
                    info!(instance, status = status.as_str(), summary.reason, "Run finished.");
                    active.recorder.finished(status, &summary).await;
                    finished = true;
                }
            }
        }
        if finished {
            self.runs.remove(instance);
        }
    }
}

/// Starts the state machine of a run over `targets`.
async fn start_run(active: &mut Active, targets: Vec<String>, now: Instant) -> Vec<run::Effect> {
    let job = &active.job;
    // `use_wrapper: false`: Salt runs the command and its own task enforces the timeout
    // (`saltutil.kill_job`); there is no agent to heartbeat or to kill.
    let limits = Limits {
        timeout: if job.use_wrapper { job.timeout } else { None },
        ..active.recorder.limits()
    };
    let plan = plan_for(job, targets.len(), limits);
    active.recorder.running(&targets).await;
    // Every target is recorded as queued before any is launched, so that a restart of the
    // sidecar knows the minions it had not launched yet (later batches, or a first batch that
    // was not published) and runs them in their turn.
    for minion in &targets {
        active.recorder.minion_queued(minion).await;
    }
    let (run, effects) = Run::start(plan, targets, now);
    active.stage = Stage::Running(Box::new(run));
    effects
}

/// How a run of `job` over `n` targets goes: its batches and failure threshold.
fn plan_for(job: &Job, n: usize, limits: Limits) -> Plan {
    Plan {
        batch_size: job.batch_size.map_or(0, |b| amount(b, n).max(1)),
        max_failures: job.max_failures.map(|t| amount(t, n).max(1)),
        batch_wait: job.batch_wait,
        limits,
    }
}

/// A count or a percentage of `n`, rounded up.
fn amount(a: BatchSize, n: usize) -> usize {
    match a {
        BatchSize::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
        BatchSize::Percent(p) => (n * usize::from(p)).div_ceil(100),
    }
}

/// The monotonic instant of a wall-clock time (now, if it is past).
fn instant_of(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or_default()
}

fn kill_reason(why: StopReason) -> KillReason {
    match why {
        StopReason::Timeout => KillReason::Timeout,
        StopReason::Kill => KillReason::User,
    }
}

fn kill_message(job: &Job, instance: &str, minion: &str, why: StopReason) -> ServerMessage {
    ServerMessage::Kill(saltpeter_protocol::Kill {
        run: RunKey {
            job_name: WireJobName::new(job.name.as_str()),
            job_instance: JobInstance::new(instance),
            machine: MachineId::new(minion),
        },
        timestamp: Some(saltpeter_protocol::Timestamp::now()),
        reason: Some(kill_reason(why)),
    })
}
