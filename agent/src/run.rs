//! One run from lock to result: takes the overlap lock, starts the command, drains both pipes
//! into the outbox whatever the connection does, and stops the group on a kill or a timeout
//! (SIGTERM, then SIGKILL 5 s later if anything of the group is left), writing each step into
//! the output. The outcome is decided here and nowhere else.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use saltpeter_protocol::{EndReason, ExitCode, KillReason, Stream, Timestamp, utf8_boundary};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{info, warn};

use crate::child;
use crate::env::{Overlap, RunSpec};
use crate::lock;
use crate::outbox::Outbox;
use crate::rundir::{RunDir, RunInfo};

/// How long a stopped group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// After the shell exits, the pipes are closed once they stay silent this long (something it
/// left running holds them open), or at the latest [`DRAIN_LIMIT`] after the exit.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
pub const DRAIN_LIMIT: Duration = Duration::from_secs(120);
const READ_BUF: usize = 64 * 1024;
/// How long before an armed run's instant the runtime hands it to its start thread.
const HANDOVER: Duration = Duration::from_millis(5);

/// A request to a run from the connection or from a signal.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    Kill(KillReason),
}

/// What the connection holds of a run: its outbox, and the way to stop it.
#[derive(Clone)]
pub struct RunLink {
    pub outbox: Arc<Mutex<Outbox>>,
    pub control: mpsc::Sender<Control>,
}

pub fn lock_outbox(outbox: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    // A panic while holding it leaves consistent data (every update is a single step).
    outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Sink<'a> {
    outbox: &'a Mutex<Outbox>,
    wake: &'a Notify,
    failed: bool,
}

impl Sink<'_> {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Err(e) = lock_outbox(self.outbox).append(stream, bytes)
            && !self.failed
        {
            warn!(error = %e, "Cannot spool output; it is read and dropped.");
            self.failed = true;
        }
        self.wake.notify_one();
    }

    fn note(&mut self, text: &str) {
        info!("{}", text.trim());
        self.write(Stream::Stderr, text.as_bytes());
    }

    fn finish(&mut self, retcode: i32, reason: EndReason) {
        if let Err(e) = lock_outbox(self.outbox).finish(retcode, reason) {
            warn!(error = %e, "Cannot write result.json.");
        }
        info!(retcode, ?reason, "Run ended.");
        self.wake.notify_one();
    }
}

/// Bytes held back until a character is complete, so text chunks stay text (for sidecars
/// older than protocol 2, which get output as JSON text).
#[derive(Default)]
struct Carry(Vec<u8>);

impl Carry {
    /// Writes what of `carried + new` ends on a character boundary; keeps the rest.
    fn write(&mut self, sink: &mut Sink<'_>, stream: Stream, new: &[u8]) {
        if self.0.is_empty() {
            // The common case: no copy.
            let cut = utf8_boundary(new);
            sink.write(stream, &new[..cut]);
            self.0.extend_from_slice(&new[cut..]);
            return;
        }
        let mut data = std::mem::take(&mut self.0);
        data.extend_from_slice(new);
        let cut = utf8_boundary(&data);
        self.0 = data.split_off(cut);
        sink.write(stream, &data);
    }

    /// The stream ended: whatever is held goes, complete character or not.
    fn finish(&mut self, sink: &mut Sink<'_>, stream: Stream) {
        let rest = std::mem::take(&mut self.0);
        sink.write(stream, &rest);
    }
}

pub async fn drive(
    spec: RunSpec,
    dir: RunDir,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    mut control: mpsc::Receiver<Control>,
) {
    let mut sink = Sink { outbox: &outbox, wake: &wake, failed: false };
    if let Some(at) = spec.scheduled {
        // Armed: wait for the instant by this machine's clock; a kill meanwhile cancels the run.
        // The runtime's timer has a grain of a millisecond and wakes every run of an instant
        // on one thread: it only hands over shortly before, and the start thread sleeps the
        // rest itself.
        let wait = (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = sleep(wait.saturating_sub(HANDOVER)) => {}
            Some(Control::Kill(_)) = control.recv() => {
                sink.note("[saltpeter-agent] killed before its scheduled start: never started\n");
                sink.finish(ExitCode::Killed.code(), EndReason::Killed);
                return;
            }
        }
    }
    // Lock and fork/exec off the runtime's thread, so the runs due at one instant start side
    // by side (a few threads at once) rather than one after the other.
    let spec = Arc::new(spec);
    let started = {
        let (spec, dir) = (Arc::clone(&spec), dir.clone());
        tokio::task::spawn_blocking(move || start(&spec, &dir)).await
    };
    let (_overlap_lock, mut job) = match started {
        Ok(Start::Ready(held, job)) => (held, *job),
        Ok(Start::Overlap(e)) => {
            sink.note(&format!(
                "LOCKFILE ERROR: job {} is already running on this minion ({e}); overlap not allowed\n",
                spec.run.job_name
            ));
            sink.finish(ExitCode::StartFailed.code(), EndReason::Overlap);
            return;
        }
        Ok(Start::Failed(e)) => {
            sink.note(&format!("[saltpeter-agent] cannot start the command: {e}\n"));
            sink.finish(ExitCode::StartFailed.code(), EndReason::StartFailed);
            return;
        }
        Err(e) => {
            // The start thread panicked or the runtime is shutting down.
            sink.note(&format!("[saltpeter-agent] cannot start the command: {e}\n"));
            sink.finish(ExitCode::StartFailed.code(), EndReason::StartFailed);
            return;
        }
    };
    let pgid = job.pgid;
    info!(pgid, command = %spec.command, "Command started.");
    lock_outbox(&outbox).started(pgid);
    wake.notify_one();

    let (mut out_buf, mut err_buf) = (vec![0u8; READ_BUF], vec![0u8; READ_BUF]);
    let (mut out_carry, mut err_carry) = (Carry::default(), Carry::default());
    let (mut out_open, mut err_open) = (true, true);
    let mut status = None;
    let mut exited_at = None;
    let mut last_data = Instant::now();
    let timeout_at = spec.timeout.map(|t| Instant::now() + t);
    // Set once the group is being stopped: why, and when SIGKILL is due.
    let mut stopping: Option<(KillReason, Instant)> = None;
    let mut group_done = false;
    let far = Instant::now() + Duration::from_secs(86400 * 365);

    let drained = lock_outbox(&outbox).drained.clone();
    loop {
        let pipes_open = out_open || err_open;
        // Connected and behind: let the job wait on its pipe until output leaves.
        let paused = lock_outbox(&outbox).congested();
        if status.is_some() && !pipes_open && (stopping.is_none() || group_done) {
            break;
        }
        let stop_at = |reason| (reason, Instant::now() + KILL_GRACE);
        tokio::select! {
            () = drained.notified(), if paused => {}
            read = job.stdout.read(&mut out_buf), if out_open && !paused => match read {
                Ok(n) if n > 0 => { last_data = Instant::now(); out_carry.write(&mut sink, Stream::Stdout, &out_buf[..n]) }
                _ => { out_open = false; out_carry.finish(&mut sink, Stream::Stdout); }
            },
            read = job.stderr.read(&mut err_buf), if err_open && !paused => match read {
                Ok(n) if n > 0 => { last_data = Instant::now(); err_carry.write(&mut sink, Stream::Stderr, &err_buf[..n]) }
                _ => { err_open = false; err_carry.finish(&mut sink, Stream::Stderr); }
            },
            exit = job.child.wait(), if status.is_none() => {
                status = Some(exit.map_or(ExitCode::Error.code(), child::retcode));
                exited_at = Some(Instant::now());
                last_data = Instant::now();
            },
            Some(Control::Kill(reason)) = control.recv(), if stopping.is_none() => {
                let why = match reason {
                    KillReason::User => "kill requested".to_owned(),
                    KillReason::Timeout => "the sidecar's timeout expired".to_owned(),
                };
                sink.note(&format!("\n[saltpeter-agent] {why}: SIGTERM sent to process group {pgid}\n"));
                group_done = !child::signal_group(pgid, Signal::SIGTERM);
                stopping = Some(stop_at(reason));
            },
            () = sleep_until(timeout_at.unwrap_or(far)), if stopping.is_none() && status.is_none() && timeout_at.is_some() => {
                let secs = spec.timeout.map_or(0, |t| t.as_secs());
                sink.note(&format!("\n[saltpeter-agent] timeout of {secs}s exceeded: SIGTERM sent to process group {pgid}\n"));
                group_done = !child::signal_group(pgid, Signal::SIGTERM);
                stopping = Some(stop_at(KillReason::Timeout));
            },
            () = sleep_until(stopping.map_or(far, |s| s.1)), if stopping.is_some() && !group_done => {
                if child::signal_group(pgid, Signal::SIGKILL) {
                    sink.note(&format!("[saltpeter-agent] process group {pgid} still running {}s after SIGTERM: SIGKILL sent\n", KILL_GRACE.as_secs()));
                }
                group_done = true;
            },
            // What is left of a stopped group is not our child: poll it until it is gone.
            () = sleep(Duration::from_millis(50)), if stopping.is_some() && !group_done && status.is_some() => {
                group_done = !child::group_alive(pgid);
            },
            () = sleep_until(drain_deadline(exited_at, last_data, far)), if exited_at.is_some() && pipes_open && !paused => {
                warn!("The command exited but something it started keeps its output open; no longer reading it.");
                (out_open, err_open) = (false, false);
                out_carry.finish(&mut sink, Stream::Stdout);
                err_carry.finish(&mut sink, Stream::Stderr);
            },
        }
    }
    let (retcode, reason) = match stopping {
        Some((KillReason::User, _)) => (ExitCode::Killed.code(), EndReason::Killed),
        Some((KillReason::Timeout, _)) => (ExitCode::Timeout.code(), EndReason::Timeout),
        None => (status.unwrap_or(ExitCode::Error.code()), EndReason::Exited),
    };
    sink.finish(retcode, reason);
}

/// What the start thread hands back.
enum Start {
    /// Started: the overlap lock (held for the run's life) and the job.
    Ready(Option<lock::Held>, Box<child::Job>),
    /// The previous run of the job still holds the lock.
    Overlap(String),
    /// The command could not be started.
    Failed(String),
}

/// Runs on a blocking thread: prepares the command, sleeps to the scheduled instant (never
/// waking before it by the wall clock), takes the overlap lock, starts the command and
/// writes `run.json`.
fn start(spec: &RunSpec, dir: &RunDir) -> Start {
    let cmd = child::command(spec);
    if let Some(at) = spec.scheduled {
        while let Ok(left) = (at - chrono::Utc::now()).to_std()
            && !left.is_zero()
        {
            std::thread::sleep(left);
        }
    }
    let held = match &spec.overlap {
        Overlap::Allowed => None,
        Overlap::Locked(path) => match lock::try_exclusive(path) {
            Ok(held) => Some(held),
            Err(e) => return Start::Overlap(e.to_string()),
        },
    };
    let job = match child::start(cmd) {
        Ok(job) => job,
        Err(e) => return Start::Failed(e.to_string()),
    };
    if let Err(e) = dir.write_info(&RunInfo {
        job_name: spec.run.job_name.clone(),
        job_instance: spec.run.job_instance.clone(),
        agent_pid: std::process::id(),
        pgid: Some(job.pgid),
        started: Timestamp::now(),
    }) {
        warn!(error = %e, "Cannot write run.json.");
    }
    Start::Ready(held, Box::new(job))
}

/// When to stop reading pipes that outlive the shell: silent for [`DRAIN_GRACE`], or
/// [`DRAIN_LIMIT`] after the exit.
fn drain_deadline(exited_at: Option<Instant>, last_data: Instant, far: Instant) -> Instant {
    exited_at.map_or(far, |t| (last_data + DRAIN_GRACE).min(t + DRAIN_LIMIT))
}
