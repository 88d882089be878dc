//! One minion's part of a run, as a pure state machine: inputs (Salt's return of the launch, the
//! agent's messages, a kill request, the passing of time) go in, effects (send `kill` to the
//! agent, kill through Salt, finish with an outcome) come out. Nothing here does I/O or reads a
//! clock; the run's task feeds it `now`.
//!
//! The two phases of monitoring: phase 1 waits for the agent to be launched (Salt's return of
//! `cmd.run`, or the agent's own start message, whichever comes first); phase 2 follows the agent
//! (heartbeats, the job's timeout counted from the agent's start confirmation, kill escalation).
//! A kill is only reported as a kill once something confirmed the process is gone: the agent's
//! completion, or `saltpeter-agent kill` run through Salt. If neither confirms, the outcome says
//! the process may still be running.

use std::time::{Duration, Instant};

use saltpeter_protocol::ExitCode;

/// The deadlines that govern one minion's part of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Phase 1: from the publish until Salt returns the launch or the agent says it started.
    pub launch: Duration,
    /// From Salt's successful return of the launch until the agent says it started.
    pub connect: Duration,
    /// Phase 2: the longest silence from the agent before the run counts as lost (253).
    pub heartbeat: Duration,
    /// The job's timeout, counted from the agent's start confirmation. `None`: no timeout.
    pub timeout: Option<Duration>,
    /// After sending `kill` to the agent, how long it has to report the end (it escalates from
    /// SIGTERM to SIGKILL after 5 s) before we kill through Salt.
    pub kill_grace: Duration,
    /// How long the kill through Salt may take to return.
    pub salt_kill: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            launch: Duration::from_secs(30),
            connect: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            timeout: Some(Duration::from_secs(3600)),
            kill_grace: Duration::from_secs(10),
            salt_kill: Duration::from_secs(30),
        }
    }
}

/// Why a minion is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The job's timeout passed (124).
    Timeout,
    /// Someone asked (143).
    Kill,
}

impl StopReason {
    fn exit_code(self) -> ExitCode {
        match self {
            StopReason::Timeout => ExitCode::Timeout,
            StopReason::Kill => ExitCode::Killed,
        }
    }
}

/// What happens to a minion's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Salt returned the launch (`cmd.run` of the agent) with this code and output.
    LaunchReturned { retcode: i32, output: String },
    /// The minion answered neither the launch nor the liveness probe sent with it.
    Unresponsive,
    /// The agent armed a pre-armed run: it starts the command at `start_at` by its clock.
    AgentArmed { start_at: Instant },
    /// The agent confirmed the command started.
    AgentStarted,
    /// `use_wrapper: false`: Salt took the command; no agent will report (no heartbeat).
    LegacyStarted,
    /// Any other sign of life from the agent: a heartbeat, output, a reconnect.
    AgentAlive,
    /// The agent reports the command ended with this code.
    AgentCompleted { retcode: i32 },
    /// The agent reports it could not run the command.
    AgentError { message: String },
    /// A kill was requested (API, UI, CLI).
    Kill,
    /// The kill through Salt returned: `confirmed` when the minion says no process of the run
    /// is left.
    SaltKillReturned { confirmed: bool, output: String },
    /// Time passed; deadlines are checked.
    Tick,
}

/// What the run's task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `kill` to the agent over its connection.
    SendKill(StopReason),
    /// Run `saltpeter-agent kill` on the minion through Salt.
    KillThroughSalt(StopReason),
    /// This minion's part is over.
    Finish(Outcome),
}

/// Why a minion's part ended, beyond its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The command ran and exited by itself.
    Exited,
    /// Salt ran the launch and it failed (126, 127, or the agent's configuration error).
    LaunchFailed,
    /// Salt did not return the launch in time (254).
    LaunchTimedOut,
    /// Salt started the agent but it never connected (254).
    NeverConnected,
    /// The minion did not respond (255).
    DidNotRespond,
    /// The agent went silent (253).
    HeartbeatLost,
    /// Stopped at the job's timeout (124).
    TimedOut,
    /// Killed on request (143).
    Killed,
    /// Killed on request while armed, before its instant: the command never started (143).
    Cancelled,
    /// The agent reported an error (255).
    AgentError,
    /// A kill was sent but nothing confirmed the process ended: it may still be running.
    KillUnconfirmed,
}

/// How a minion's part of a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub retcode: i32,
    pub reason: EndReason,
    /// For people: what happened, e.g. Salt's output of a failed launch.
    pub detail: String,
}

impl Outcome {
    fn new(code: ExitCode, reason: EndReason, detail: impl Into<String>) -> Self {
        Outcome { retcode: code.code(), reason, detail: detail.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Phase 1. `returned`: Salt already returned the launch with 0.
    Launching {
        deadline: Instant,
        returned: bool,
    },
    /// Pre-armed: the agent holds the run and starts it at `start_at`; it heartbeats meanwhile.
    Armed {
        start_at: Instant,
    },
    /// Phase 2.
    Running,
    /// A kill was sent to the agent at `asked`; `salt_kill_at` once we also killed through Salt.
    Stopping {
        why: StopReason,
        asked: Instant,
        salt_kill_at: Option<Instant>,
    },
    Done,
}

/// One minion's part of a run.
#[derive(Debug, Clone)]
pub struct MinionRun {
    limits: Limits,
    phase: Phase,
    /// When the agent confirmed the start: the job's timeout counts from here.
    started: Option<Instant>,
    /// The last time the agent was heard from.
    last_seen: Option<Instant>,
}

impl MinionRun {
    /// A minion whose launch was published at `now`.
    pub fn launched(limits: Limits, now: Instant) -> Self {
        MinionRun {
            limits,
            phase: Phase::Launching { deadline: now + limits.launch, returned: false },
            started: None,
            last_seen: None,
        }
    }

    /// A minion whose agent had started before a restart of the sidecar: it is followed as
    /// running, and the heartbeat deadline gives its agent time to reconnect.
    pub fn resumed(limits: Limits, now: Instant, running_for: Duration) -> Self {
        MinionRun {
            limits,
            phase: Phase::Running,
            started: Some(now.checked_sub(running_for).unwrap_or(now)),
            last_seen: Some(now),
        }
    }

    /// A `use_wrapper: false` minion whose command Salt had taken before a restart of the
    /// sidecar: running, with no agent and so no heartbeat; its return comes through Salt.
    pub fn resumed_legacy(limits: Limits, now: Instant, running_for: Duration) -> Self {
        MinionRun { last_seen: None, ..Self::resumed(limits, now, running_for) }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the agent has confirmed the start.
    pub fn has_started(&self) -> bool {
        self.started.is_some()
    }

    /// The next instant at which [`Input::Tick`] could change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Launching { deadline, .. } => Some(deadline),
            Phase::Armed { start_at } => {
                let heartbeat = self.last_seen.map(|t| t + self.limits.heartbeat);
                let start = start_at + self.limits.connect;
                Some(heartbeat.map_or(start, |h| h.min(start)))
            }
            Phase::Running => {
                let heartbeat = self.last_seen.map(|t| t + self.limits.heartbeat);
                let timeout = self.started.zip(self.limits.timeout).map(|(s, t)| s + t);
                [heartbeat, timeout].into_iter().flatten().min()
            }
            Phase::Stopping { asked, salt_kill_at: None, .. } => {
                Some(asked + self.limits.kill_grace)
            }
            Phase::Stopping { salt_kill_at: Some(at), .. } => Some(at + self.limits.salt_kill),
            Phase::Done => None,
        }
    }

    /// Applies one input at `now` and returns what to do.
    pub fn on(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        match input {
            Input::LaunchReturned { retcode, output } => {
                self.on_launch_returned(retcode, output, now)
            }
            Input::Unresponsive => match self.phase {
                Phase::Launching { returned: false, .. } => self.finish(Outcome::new(
                    ExitCode::Error,
                    EndReason::DidNotRespond,
                    "the minion did not respond",
                )),
                _ => Vec::new(),
            },
            Input::LegacyStarted => {
                if let Phase::Launching { .. } = self.phase {
                    self.phase = Phase::Running;
                    self.started = Some(now);
                }
                Vec::new()
            }
            Input::AgentArmed { start_at } => {
                self.last_seen = Some(now);
                if let Phase::Launching { .. } = self.phase {
                    self.phase = Phase::Armed { start_at };
                }
                Vec::new()
            }
            Input::AgentStarted | Input::AgentAlive => {
                self.last_seen = Some(now);
                let armed = matches!(self.phase, Phase::Armed { .. });
                if matches!(self.phase, Phase::Launching { .. })
                    || armed && input == Input::AgentStarted
                {
                    self.phase = Phase::Running;
                    self.started = Some(now);
                }
                Vec::new()
            }
            Input::AgentCompleted { retcode } => {
                let outcome = match self.phase {
                    Phase::Stopping { why: StopReason::Kill, .. }
                        if retcode != 0 && self.started.is_none() =>
                    {
                        Outcome::new(
                            ExitCode::Killed,
                            EndReason::Cancelled,
                            "cancelled while armed, before its scheduled start: the command never ran",
                        )
                    }
                    Phase::Stopping { why, .. } if retcode != 0 => Outcome::new(
                        why.exit_code(),
                        stop_reason(why),
                        format!("the agent stopped the command (it reported {retcode})"),
                    ),
                    _ => Outcome { retcode, reason: EndReason::Exited, detail: String::new() },
                };
                self.finish(outcome)
            }
            Input::AgentError { message } => {
                self.finish(Outcome::new(ExitCode::Error, EndReason::AgentError, message))
            }
            Input::Kill => self.stop(StopReason::Kill, now),
            Input::SaltKillReturned { confirmed, output } => match self.phase {
                Phase::Stopping { why, .. } if confirmed => self.finish(Outcome::new(
                    why.exit_code(),
                    stop_reason(why),
                    format!("killed through Salt: {output}"),
                )),
                Phase::Stopping { .. } => self.unconfirmed(&output),
                _ => Vec::new(),
            },
            Input::Tick => self.on_tick(now),
        }
    }

    fn on_launch_returned(&mut self, retcode: i32, output: String, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Launching { .. } if retcode != 0 => {
                self.finish(Outcome { retcode, reason: EndReason::LaunchFailed, detail: output })
            }
            Phase::Launching { .. } => {
                self.phase =
                    Phase::Launching { deadline: now + self.limits.connect, returned: true };
                Vec::new()
            }
            // The agent already said it started; Salt's return only confirms it.
            _ => Vec::new(),
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Launching { deadline, returned } if now >= deadline => {
                let (reason, detail) = if returned {
                    (EndReason::NeverConnected, "Salt started the agent but it never connected")
                } else {
                    (
                        EndReason::LaunchTimedOut,
                        "Salt did not return the launch of the agent in time",
                    )
                };
                self.finish(Outcome::new(ExitCode::StartFailed, reason, detail))
            }
            Phase::Armed { start_at } => {
                if self.last_seen.is_some_and(|seen| now >= seen + self.limits.heartbeat) {
                    return self.finish(Outcome::new(
                        ExitCode::HeartbeatLost,
                        EndReason::HeartbeatLost,
                        format!("no word from the armed agent for {:?}", self.limits.heartbeat),
                    ));
                }
                if now >= start_at + self.limits.connect {
                    return self.finish(Outcome::new(
                        ExitCode::StartFailed,
                        EndReason::NeverConnected,
                        "the agent armed the run but never reported its start",
                    ));
                }
                Vec::new()
            }
            Phase::Running => {
                if self.last_seen.is_some_and(|seen| now >= seen + self.limits.heartbeat) {
                    return self.finish(Outcome::new(
                        ExitCode::HeartbeatLost,
                        EndReason::HeartbeatLost,
                        format!("no word from the agent for {:?}", self.limits.heartbeat),
                    ));
                }
                let timed_out =
                    self.started.zip(self.limits.timeout).is_some_and(|(s, t)| now >= s + t);
                if timed_out { self.stop(StopReason::Timeout, now) } else { Vec::new() }
            }
            Phase::Stopping { why, asked, salt_kill_at: None }
                if now >= asked + self.limits.kill_grace =>
            {
                self.phase = Phase::Stopping { why, asked, salt_kill_at: Some(now) };
                vec![Effect::KillThroughSalt(why)]
            }
            Phase::Stopping { salt_kill_at: Some(at), .. } if now >= at + self.limits.salt_kill => {
                self.unconfirmed("the kill through Salt did not return in time")
            }
            _ => Vec::new(),
        }
    }

    fn stop(&mut self, why: StopReason, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Running | Phase::Armed { .. } => {
                self.phase = Phase::Stopping { why, asked: now, salt_kill_at: None };
                vec![Effect::SendKill(why)]
            }
            // Not connected yet: the agent may be starting right now, so kill through Salt at
            // once, and over the connection too should it connect.
            Phase::Launching { .. } => {
                self.phase = Phase::Stopping { why, asked: now, salt_kill_at: Some(now) };
                vec![Effect::SendKill(why), Effect::KillThroughSalt(why)]
            }
            Phase::Stopping { .. } | Phase::Done => Vec::new(),
        }
    }

    fn unconfirmed(&mut self, detail: &str) -> Vec<Effect> {
        self.finish(Outcome::new(
            ExitCode::Error,
            EndReason::KillUnconfirmed,
            format!("the kill could not be confirmed, the process may still be running: {detail}"),
        ))
    }

    fn finish(&mut self, outcome: Outcome) -> Vec<Effect> {
        self.phase = Phase::Done;
        vec![Effect::Finish(outcome)]
    }
}

fn stop_reason(why: StopReason) -> EndReason {
    match why {
        StopReason::Timeout => EndReason::TimedOut,
        StopReason::Kill => EndReason::Killed,
    }
}

#[cfg(test)]
mod tests;
