//! The detached agent of one `SP_*` run: claims the run's directory, runs the command and the
//! connection side by side on a current-thread runtime, and turns SIGTERM/SIGINT (what
//! `saltpeter-agent kill` sends) into a kill of the run.

use std::sync::{Arc, Mutex};

use saltpeter_protocol::{HelloTarget, KillReason, Timestamp};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use crate::conn::{Session, SessionEnd};
use crate::env::{LogLevel, RunSpec, Settings};
use crate::outbox::Outbox;
use crate::run::{self, Control, RunLink};
use crate::rundir::{RunDir, RunInfo};
use crate::spool::Spool;

pub fn init_tracing(level: LogLevel) {
    let max = match level {
        LogLevel::Off => return,
        LogLevel::Normal => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(max)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

pub fn main(settings: Settings, spec: RunSpec) -> std::process::ExitCode {
    init_tracing(settings.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "Cannot start the runtime.");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(single(Arc::new(settings), spec));
    std::process::ExitCode::SUCCESS
}

/// Prepares one run: its directory, lock, spool and outbox. `None` (logged) if the run cannot
/// even be recorded, or another agent already has it.
pub fn prepare(
    settings: &Settings,
    spec: &RunSpec,
) -> Option<(RunDir, crate::lock::Held, Arc<Mutex<Outbox>>)> {
    let dir = RunDir::new(&settings.state_dir, &spec.run.job_name, &spec.run.job_instance);
    let held = match dir.claim() {
        Ok(held) => held,
        Err(e) => {
            error!(error = format!("{e:#}"), "Cannot claim the run (another agent has it?).");
            return None;
        }
    };
    let info = RunInfo {
        job_name: spec.run.job_name.clone(),
        job_instance: spec.run.job_instance.clone(),
        agent_pid: std::process::id(),
        pgid: None,
        started: Timestamp::now(),
    };
    if let Err(e) = dir.write_info(&info) {
        warn!(error = %e, "Cannot write run.json.");
    }
    let spool = match Spool::create(dir.spool_dir(), settings.spool_cap) {
        Ok(spool) => spool,
        Err(e) => {
            error!(error = %e, dir = %dir.spool_dir().display(), "Cannot create the spool.");
            return None;
        }
    };
    let outbox = Outbox::new(spec.run.clone(), dir.clone(), spool, spec.output_interval);
    Some((dir, held, Arc::new(Mutex::new(outbox))))
}

async fn single(settings: Arc<Settings>, spec: RunSpec) {
    info!(run = %spec.run, version = env!("CARGO_PKG_VERSION"), "Agent started.");
    let Some((dir, _held, outbox)) = prepare(&settings, &spec) else { return };
    let wake = Arc::new(Notify::new());
    let (control, inbox) = mpsc::channel(4);
    let controls = Controls::default();
    controls.add(control.clone());
    forward_signals(controls);
    let session = Session {
        settings: settings.clone(),
        target: HelloTarget::Run {
            job_name: spec.run.job_name.clone(),
            job_instance: spec.run.job_instance.clone(),
        },
        runs: vec![RunLink { outbox: outbox.clone(), control }],
        wake: wake.clone(),
        delivery_window: settings.delivery_window,
        on_manifest: None,
        manifest_received: false,
    };
    let (_, end) = tokio::join!(run::drive(spec, dir.clone(), outbox, wake, inbox), session.run());
    if end == SessionEnd::GaveUp {
        error!(
            window = ?settings.delivery_window,
            dir = %dir.path.display(),
            "The sidecar never took the result; it stays here (saltpeter-agent status)."
        );
    }
}

/// The control inboxes of every run of this agent, for signals; grows as a manifest arrives.
#[derive(Clone, Default)]
pub struct Controls(Arc<Mutex<Vec<mpsc::Sender<Control>>>>);

impl Controls {
    pub fn add(&self, control: mpsc::Sender<Control>) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(control);
    }

    fn kill_all(&self) {
        for run in self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            // A full inbox already holds a kill: kills are idempotent.
            run.try_send(Control::Kill(KillReason::User)).ok();
        }
    }
}

/// SIGTERM and SIGINT stop every run, as a kill would (143).
pub fn forward_signals(controls: Controls) {
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let Ok(mut stream) = signal(kind) else { continue };
        let controls = controls.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                info!(?kind, "Signal received: killing the runs.");
                controls.kill_all();
            }
        });
    }
}
