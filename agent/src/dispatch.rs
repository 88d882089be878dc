//! Coalesced dispatch (protocol version 1): `saltpeter-agent dispatch --url URL --dispatch ID
//! --token T` starts one agent per minion for every run due at one instant. Same detach rules
//! as `SP_*` mode; the daemon connects, receives the `manifest` for this minion, and runs each
//! entry as an independent run (own process group, spool, lock, timeout, kill, sequence and
//! result) multiplexed on the one connection. Commands and env never appear on Salt's bus.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use saltpeter_protocol::{DispatchId, EnvVar, HelloTarget, Manifest, ManifestEntry, RunKey, Token};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info};

use crate::conn::{Session, SessionEnd};
use crate::daemon::{self, Controls};
use crate::env::{self, EnvError, Overlap, RunSpec, Settings};
use crate::run::{self, RunLink};
use crate::users::AccountDb;

/// Threads that start commands at once (the runtime's blocking pool).
const START_THREADS: usize = 8;

pub const USAGE: &str = "usage: saltpeter-agent dispatch --url URL --dispatch ID --token TOKEN";

/// Reads the flags, and the agent's own `SP_*` settings (log, state, CA, machine) from `vars`.
pub fn parse(
    args: &[String],
    vars: &BTreeMap<String, String>,
) -> Result<(Settings, DispatchId), Vec<EnvError>> {
    let (mut url, mut dispatch, mut token) = (None, None, None);
    let mut errors = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned();
        let slot = match flag.as_str() {
            "--url" => &mut url,
            "--dispatch" => &mut dispatch,
            "--token" => &mut token,
            _ => {
                errors.push(EnvError {
                    var: "dispatch",
                    reason: format!("unknown argument `{flag}`"),
                });
                continue;
            }
        };
        *slot = value.filter(|v| !v.is_empty());
    }
    let mut need = |name: &'static str, v: Option<String>| {
        if v.is_none() {
            errors.push(EnvError { var: name, reason: "is required".to_owned() });
        }
        v.unwrap_or_default()
    };
    let (url, dispatch, token) =
        (need("--url", url), need("--dispatch", dispatch), need("--token", token));
    // Reuse the SP_* validation for the agent-wide settings, with a placeholder run.
    let mut base = vars.clone();
    for (var, value) in [
        (EnvVar::WebsocketUrl, url.as_str()),
        (EnvVar::JobName, "dispatch"),
        (EnvVar::JobInstance, dispatch.as_str()),
        (EnvVar::Command, "true"),
    ] {
        base.insert(var.name().to_owned(), value.to_owned());
    }
    for var in [EnvVar::User, EnvVar::Cwd, EnvVar::Timeout, EnvVar::AllowOverlap, EnvVar::Lockfile]
    {
        base.remove(var.name());
    }
    match env::from_vars(&base, &AccountDb::default()) {
        Ok((mut settings, _)) if errors.is_empty() => {
            settings.endpoint.token = Some(Token::new(token));
            Ok((settings, DispatchId::new(dispatch)))
        }
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more.into_iter().map(|e| match e.var {
                v if v == EnvVar::WebsocketUrl.name() => {
                    EnvError { var: "--url", reason: e.reason }
                }
                _ => e,
            }));
            Err(errors)
        }
    }
}

/// A manifest entry as a run of this minion; `Err` names what is wrong with it.
pub fn spec_of(
    entry: ManifestEntry,
    settings: &Settings,
    accounts: &AccountDb,
) -> Result<RunSpec, String> {
    let bad = |s: &str| s.is_empty() || s.contains('/') || s == "." || s == "..";
    if bad(entry.job_name.as_str()) || bad(entry.job_instance.as_str()) {
        return Err(format!(
            "job `{}` instance `{}`: not usable as file names",
            entry.job_name, entry.job_instance
        ));
    }
    let account =
        entry.user.as_deref().map(|u| accounts.lookup(u)).transpose().map_err(|e| e.to_string())?;
    let overlap =
        if entry.allow_overlap {
            Overlap::Allowed
        } else {
            let path = entry.lockfile.map(Into::into);
            Overlap::Locked(path.unwrap_or_else(|| {
                env::default_lockfile(&settings.state_dir, entry.job_name.as_str())
            }))
        };
    Ok(RunSpec {
        run: RunKey {
            job_name: entry.job_name,
            job_instance: entry.job_instance,
            machine: settings.machine.clone(),
        },
        command: entry.command,
        account,
        cwd: entry.cwd.map(Into::into),
        timeout: entry.timeout,
        overlap,
        output_interval: Duration::from_millis(entry.output_interval_ms.unwrap_or(1000)),
        env: entry.env,
        scheduled: entry.scheduled.map(|t| t.0),
    })
}

pub fn main(settings: Settings, dispatch: DispatchId) -> std::process::ExitCode {
    daemon::init_tracing(settings.log_level);
    // One thread runs the connection and every run's pipes; the runs of an instant are started
    // (lock, fork, exec) from up to START_THREADS threads side by side.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(START_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "Cannot start the runtime.");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(Arc::new(settings), dispatch));
    std::process::ExitCode::SUCCESS
}

async fn serve(settings: Arc<Settings>, dispatch: DispatchId) {
    info!(%dispatch, version = env!("CARGO_PKG_VERSION"), "Dispatch agent started.");
    let wake = Arc::new(Notify::new());
    let controls = Controls::default();
    daemon::forward_signals(controls.clone());
    let accounts = AccountDb::default();
    let build = {
        let (settings, wake, dispatch) = (settings.clone(), wake.clone(), dispatch.clone());
        move |manifest: Manifest| -> Vec<RunLink> {
            let mut links = Vec::new();
            for entry in manifest.runs {
                let spec = match spec_of(entry, &settings, &accounts) {
                    Ok(spec) => spec,
                    Err(e) => {
                        error!(error = %e, "Manifest entry refused.");
                        continue;
                    }
                };
                let Some((dir, held, outbox)) = daemon::prepare(&settings, &spec) else { continue };
                if let Some(at) = spec.scheduled.filter(|at| *at > chrono::Utc::now()) {
                    run::lock_outbox(&outbox)
                        .arm(dispatch.clone(), saltpeter_protocol::Timestamp(at));
                }
                let (control, inbox) = mpsc::channel(4);
                controls.add(control.clone());
                let wake = wake.clone();
                let task_outbox = outbox.clone();
                tokio::spawn(async move {
                    let _held = held;
                    run::drive(spec, dir, task_outbox, wake, inbox).await;
                });
                links.push(RunLink { outbox, control });
            }
            links
        }
    };
    let session = Session {
        settings: settings.clone(),
        target: HelloTarget::Dispatch { dispatch },
        runs: Vec::new(),
        wake,
        delivery_window: settings.delivery_window,
        on_manifest: Some(Box::new(build)),
        manifest_received: false,
    };
    if session.run().await == SessionEnd::GaveUp {
        error!(window = ?settings.delivery_window, "Results or the manifest never reached the sidecar; see saltpeter-agent status.");
    }
}
