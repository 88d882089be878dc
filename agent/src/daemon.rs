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
    forward_signals(vec![control.clone()]);
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

/// SIGTERM and SIGINT stop every run, as a kill would (143).
pub fn forward_signals(runs: Vec<mpsc::Sender<Control>>) {
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let Ok(mut stream) = signal(kind) else { continue };
        let runs = runs.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                info!(?kind, "Signal received: killing the run.");
                for run in &runs {
                    run.try_send(Control::Kill(KillReason::User)).ok();
                }
            }
        });
    }
}
