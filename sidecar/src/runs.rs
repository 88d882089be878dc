//! The run engine: a due slot becomes a run on the right minions, and every minion's part of it
//! ends with exactly one recorded outcome. This is the only place an outcome is decided.
//!
//! - `minion`: the pure state machine of one minion's part (the two phases of monitoring, kill
//!   escalation); `run`: a run over batches and its summary. Both are functions of inputs and
//!   instants.
//! - `engine`: the actor that owns every active run. It takes `Due`s from the scheduler, agent
//!   events from the agent server, kill requests from handles, and what its Salt tasks report;
//!   it sleeps until the earliest deadline of any run.
//! - `dispatch`: the tasks that talk to Salt for a run (resolve the target, launch the agent,
//!   kill through Salt). They report back to the engine through its inbox and never block it.
//! - `record`: what a run leaves behind: store rows, the per-job log, events on the Salt bus.

mod coalesce;
mod dispatch;
mod engine;
pub mod minion;
mod record;
pub mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use saltpeter_protocol::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{Registry, RunMinion};
use crate::config::Maintenance;
use crate::salt::SaltClient;
use crate::scheduler::Due;
use crate::store::StoreHandle;

pub use coalesce::{DispatchMode, lead_of, mode_of};
pub use engine::KillError;

/// The engine's own settings (the daemon's, not a job's).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Per-job log files.
    pub logdir: PathBuf,
    /// The port agents connect to, and the host they dial unless a job says otherwise.
    pub agent_port: u16,
    pub default_server_host: String,
    pub default_wrapper_path: String,
    /// How long a targeted minion has to answer before it counts as not responding (255).
    pub response_deadline: Duration,
    /// Phase 1 deadline: Salt's return of the launch (254).
    pub launch_deadline: Duration,
    /// Phase 2: the longest silence from an agent (253).
    pub heartbeat_timeout: Duration,
    /// After `kill`, how long the agent has before we kill through Salt.
    pub kill_grace: Duration,
    /// Output kept per minion and run.
    pub output_cap: u64,
    /// `default_dispatch`: the mode of jobs that set no `dispatch:`; `None`: by the agent.
    pub default_dispatch: Option<crate::config::Dispatch>,
    /// `default_lead_time`: how long before its instant a coalesced run is published.
    pub default_lead_time: Duration,
    /// Agents dial `wss://` (the agent server serves TLS; crate::tls), trusting
    /// `agent_ca_file` (`SP_CA_FILE`, a path on the minions) when set.
    pub agent_tls: bool,
    pub agent_ca_file: Option<String>,
    /// `minion_dispatch`: the mode (and agent path) of the minions whose ids match a glob.
    pub minion_dispatch: Vec<crate::config::MinionDispatch>,
}

impl EngineSettings {
    /// How `job`'s runs reach its minions.
    pub fn mode(&self, job: &crate::config::Job) -> DispatchMode {
        mode_of(job, self.default_dispatch, &self.default_wrapper_path)
    }

    /// How `job`'s run reaches `minion`: `minion_dispatch`'s first matching entry overrides
    /// the job's mode (not `use_wrapper: false`, which needs nothing on the minion), with its
    /// agent path if it names one.
    pub fn minion_mode<'a>(
        &'a self,
        job: &crate::config::Job,
        minion: &str,
    ) -> (DispatchMode, Option<&'a str>) {
        let mode = self.mode(job);
        if mode == DispatchMode::Legacy {
            return (mode, None);
        }
        let Some(entry) = self.minion_dispatch.iter().find(|e| e.glob.matches(minion)) else {
            return (mode, None);
        };
        let mode = match entry.mode {
            crate::config::MinionMode::Coalesced => DispatchMode::Coalesced,
            crate::config::MinionMode::Single => DispatchMode::Single,
            crate::config::MinionMode::Legacy => DispatchMode::Legacy,
        };
        (mode, entry.wrapper_path.as_deref())
    }

    /// The URL `job`'s agents dial (`ws://` or `wss://`), without a query.
    pub fn agent_url(&self, job: &crate::config::Job) -> String {
        let host = job.saltpeter_server_host.as_deref().unwrap_or(&self.default_server_host);
        let scheme = if self.agent_tls { "wss" } else { "ws" };
        format!("{scheme}://{host}:{}/", self.agent_port)
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            logdir: "/var/log/saltpeter".into(),
            agent_port: 8889,
            default_server_host: "localhost".into(),
            default_wrapper_path: "/usr/local/bin/saltpeter-agent".into(),
            response_deadline: Duration::from_secs(10),
            launch_deadline: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(15),
            kill_grace: Duration::from_secs(10),
            output_cap: 64 << 20,
            default_dispatch: None,
            default_lead_time: Duration::from_secs(2),
            agent_tls: false,
            agent_ca_file: None,
            minion_dispatch: Vec::new(),
        }
    }
}

/// What the agent server learned from an agent, already checked against its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub key: RunMinion,
    pub kind: AgentEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEventKind {
    /// The command started (or the agent reconnected and says so again).
    Started {
        pid: u32,
    },
    /// A heartbeat, a reconnect, any sign of life.
    Alive,
    /// Output, in order, each byte once.
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    Completed {
        retcode: i32,
    },
    Error {
        message: String,
    },
    /// A pre-armed run is armed: it starts at `scheduled` by the minion's clock.
    Armed {
        scheduled: chrono::DateTime<chrono::Utc>,
    },
}

/// Talks to the engine; cheap to clone.
#[derive(Clone)]
pub struct RunsHandle {
    tx: mpsc::Sender<engine::Command>,
}

impl RunsHandle {
    /// Hands an agent's event to the engine (waits for room: events are never dropped).
    pub async fn agent(&self, event: AgentEvent) -> Result<(), KillError> {
        self.tx.send(engine::Command::Agent(event)).await.map_err(|_| KillError::ShuttingDown)
    }

    /// Hands an agent's result to the engine and waits until its writes are queued (a durable
    /// barrier written after this returns commits them). False when the run is not in flight
    /// (it ended, or this sidecar never knew it).
    pub async fn agent_result(&self, event: AgentEvent) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(engine::Command::AgentResult { event, reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Kills a run, or one minion of it.
    pub async fn kill(&self, instance: &str, minion: Option<&str>) -> Result<(), KillError> {
        let (reply, rx) = oneshot::channel();
        let command = engine::Command::Kill {
            instance: instance.to_owned(),
            minion: minion.map(str::to_owned),
            reply,
        };
        self.tx.send(command).await.map_err(|_| KillError::ShuttingDown)?;
        rx.await.map_err(|_| KillError::ShuttingDown)?
    }

    /// Replaces the maintenance settings from the config files.
    pub async fn set_maintenance(&self, maintenance: Maintenance) {
        let _ = self.tx.send(engine::Command::Maintenance(maintenance)).await;
    }

    /// Jobs removed by a reload: their armed runs that have not started yet are cancelled.
    pub async fn jobs_removed(&self, jobs: Vec<String>) {
        if !jobs.is_empty() {
            let _ = self.tx.send(engine::Command::JobsRemoved(jobs)).await;
        }
    }

    /// The instances of runs in flight.
    pub async fn active(&self) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(engine::Command::Active { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// What the engine needs from the rest of the sidecar.
pub struct Deps {
    pub salt: Arc<SaltClient>,
    pub store: StoreHandle,
    pub registry: Registry,
    pub settings: EngineSettings,
    /// Publishes per firing and mode, pre-armed runs armed or fallen back.
    pub metrics: crate::metrics::DispatchMetrics,
}

/// Starts the engine on `tasks`. It takes `Due`s from `due` until it is cancelled, then records
/// the state of runs in flight (they resume after a restart) and ends.
/// `jobs` are the jobs known at start-up, for the runs it resumes.
pub fn spawn(
    tasks: &TaskTracker,
    deps: Deps,
    jobs: Vec<Arc<crate::config::Job>>,
    due: mpsc::Receiver<Due>,
    cancel: CancellationToken,
) -> RunsHandle {
    let (tx, rx) = mpsc::channel(1024);
    let handle = RunsHandle { tx: tx.clone() };
    let engine = engine::Engine::new(deps, tasks.clone(), tx);
    tasks.spawn(engine.run(jobs, rx, due, cancel));
    handle
}

/// How long before its publish instant a pre-armed slot starts resolving its target (a
/// `test.ping` shared by the runs of the instant takes a few hundred milliseconds).
pub(crate) const RESOLVE_AHEAD: Duration = Duration::from_secs(1);

/// The scheduler's clock for this engine: ahead of the wall clock by the longest lead time of
/// `jobs` (at most a minute), so that slots reach the engine early enough to be pre-armed;
/// the engine holds each until its own publish instant.
pub fn scheduler_clock(
    settings: &EngineSettings,
    jobs: &[Arc<crate::config::Job>],
) -> Arc<dyn crate::scheduler::Clock> {
    let ahead = jobs
        .iter()
        .map(|j| lead_of(j, settings))
        .chain([settings.default_lead_time])
        .max()
        .unwrap_or_default()
        .min(Duration::from_secs(60))
        + RESOLVE_AHEAD;
    Arc::new(LeadClock { ahead: chrono::Duration::from_std(ahead).unwrap_or_default() })
}

/// The wall clock, `ahead` in the future.
struct LeadClock {
    ahead: chrono::Duration,
}

impl crate::scheduler::Clock for LeadClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.ahead
    }

    fn ahead(&self) -> chrono::Duration {
        self.ahead
    }
}

impl RunsHandle {
    /// A handle whose engine has stopped: every request answers `ShuttingDown`. For tests of
    /// what holds a handle (the HTTP API) without a Salt master.
    #[doc(hidden)]
    pub fn stopped() -> RunsHandle {
        let (tx, _) = mpsc::channel(1);
        RunsHandle { tx }
    }
}
