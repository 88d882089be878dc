//! The daemon: wires the parts together and runs until told to stop. Config is validated before
//! any port is bound; one cancellation token stops everything, and one task tracker waits for it,
//! with a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::agents::{self, Counters, Registry};
use crate::config::{self, Loaded, WatchOptions};
use crate::http;
use crate::runs::{self, Deps, EngineSettings};
use crate::salt::{MasterConfig, SaltClient};
use crate::scheduler::{self, JobTable};
use crate::store;

/// How the daemon was asked to run (command line and `SALTPETER_*` environment); each `Some`
/// overrides the matching `saltpeter_config` key.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_dir: PathBuf,
    pub master_config: PathBuf,
    pub state_dir: PathBuf,
    pub logdir: Option<PathBuf>,
    pub agent_port: Option<u16>,
    pub agent_bind: Option<String>,
    pub websocket_host: Option<String>,
    pub wrapper_path: Option<String>,
    /// Serve the HTTP API even if `api_ws` is off.
    pub api: bool,
    pub api_port: Option<u16>,
    pub api_bind: Option<String>,
    /// How long a minion has to answer before it counts as not responding.
    pub response_deadline: Duration,
    pub heartbeat_timeout: Duration,
    /// How long shutdown waits for tasks to finish.
    pub shutdown_grace: Duration,
}

/// Logs every diagnostic of a load; true when there was no error.
pub fn report(loaded: &Loaded) -> bool {
    for d in &loaded.report.errors {
        error!("{d}");
    }
    for d in &loaded.report.warnings {
        warn!("{d}");
    }
    loaded.report.errors.is_empty()
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let loaded = config::load_dir(&options.config_dir, Utc::now())
        .with_context(|| format!("read the config directory {}", options.config_dir.display()))?;
    report(&loaded);
    let settings = &loaded.settings;
    let engine_settings = EngineSettings {
        logdir: options.logdir.clone().unwrap_or_else(|| settings.logdir.clone()),
        agent_port: options.agent_port.unwrap_or(settings.machines_ws_port),
        default_server_host: options
            .websocket_host
            .clone()
            .unwrap_or_else(|| settings.default_saltpeter_server_host.clone()),
        default_wrapper_path: options
            .wrapper_path
            .clone()
            .unwrap_or_else(|| settings.default_wrapper_path.clone()),
        response_deadline: options.response_deadline,
        heartbeat_timeout: options.heartbeat_timeout,
        default_dispatch: settings.default_dispatch,
        default_lead_time: settings.default_lead_time,
        ..EngineSettings::default()
    };
    let master =
        MasterConfig::load(&options.master_config).context("read the Salt master's config")?;
    let salt = Arc::new(SaltClient::connect(&master).await.context("connect to the Salt master")?);

    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let store = store::spawn(&tasks, &options.state_dir).context("open the run store")?;
    let bind = options.agent_bind.clone().unwrap_or_else(|| settings.machines_ws_bind_addr.clone());
    let agent_addr = format!("{bind}:{}", engine_settings.agent_port);
    let listener = TcpListener::bind(&agent_addr)
        .await
        .with_context(|| format!("listen for agents on {agent_addr}"))?;
    let agent_addr: SocketAddr =
        listener.local_addr().context("read the agent listener's address")?;
    let api_listener = if options.api || settings.api_ws {
        let bind = options.api_bind.clone().unwrap_or_else(|| settings.api_ws_bind_addr.clone());
        let addr = format!("{bind}:{}", options.api_port.unwrap_or(settings.api_ws_port));
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listen for the HTTP API on {addr}"))?;
        Some(listener)
    } else {
        None
    };
    let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());

    // Agents dial the port actually bound (`-w 0` picks a free one).
    let engine_settings = EngineSettings { agent_port: agent_addr.port(), ..engine_settings };
    let registry = Registry::default();
    let (due_tx, due_rx) = mpsc::channel(16_384);
    let output_cap = engine_settings.output_cap;
    let jobs_now: Vec<_> = loaded.jobs.values().cloned().collect();
    let clock = runs::scheduler_clock(&engine_settings, &jobs_now);
    let deps = Deps {
        salt: Arc::clone(&salt),
        store: store.clone(),
        registry: registry.clone(),
        settings: engine_settings,
    };

    let runs = runs::spawn(&tasks, deps, jobs_now, due_rx, cancel.child_token());
    runs.set_maintenance(loaded.maintenance.clone()).await;
    // Catch-up: each job's schedule continues from its last recorded slot (its `catch_up`
    // decides what happens to the slots missed while the sidecar was down).
    let mut last = std::collections::HashMap::new();
    for name in loaded.jobs.keys() {
        if let Ok(Some(at)) = store.last_slot(name.as_str()).await {
            last.insert(name.clone(), at);
        }
    }
    let table = JobTable::resume(loaded.jobs.values().cloned(), &last, Utc::now());
    let jobs = table.len();
    let scheduler = scheduler::spawn(&tasks, table, clock, due_tx, cancel.child_token());
    if let Some(listener) = api_listener {
        let state =
            http::State { runs: runs.clone(), scheduler: scheduler.clone(), store: store.clone() };
        tasks.spawn(http::serve(listener, state, cancel.child_token()));
    }
    let shared = Arc::new(agents::Shared {
        registry,
        store,
        runs: runs.clone(),
        counters: Arc::new(Counters::default()),
        output_cap,
    });
    tasks.spawn(agents::serve(listener, shared, tasks.clone(), cancel.child_token()));

    let (reloads_tx, mut reloads) = mpsc::channel(8);
    tasks.spawn(config::watch(
        options.config_dir.clone(),
        loaded,
        WatchOptions::default(),
        reloads_tx,
        cancel.child_token(),
    ));
    let reload_salt = Arc::clone(&salt);
    tasks.spawn(async move {
        while let Some(reloaded) = reloads.recv().await {
            report(&reloaded.loaded);
            let diff = reloaded.diff;
            info!(added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed, "Config reloaded.");
            if scheduler.reload(reloaded.loaded.jobs).await.is_err() {
                return;
            }
            runs.set_maintenance(reloaded.loaded.maintenance).await;
            runs.jobs_removed(diff.removed.iter().map(|j| j.as_str().to_owned()).collect()).await;
            let names = |v: &[config::JobName]| rmpv::Value::Array(v.iter().map(|n| rmpv::Value::from(n.as_str())).collect());
            let data = rmpv::Value::Map(vec![
                ("added".into(), names(&diff.added)),
                ("removed".into(), names(&diff.removed)),
                ("changed".into(), names(&diff.changed)),
            ]);
            if let Err(e) = reload_salt.fire_event("saltpeter/reload", data).await {
                warn!(error = %e, "Cannot fire saltpeter/reload.");
            }
        }
    });
    tasks.close();
    info!(version = env!("CARGO_PKG_VERSION"), jobs, agents = %agent_addr, api = ?api_addr, state_dir = %options.state_dir.display(), "Saltpeter is running.");

    shutdown.await;
    info!("Stopping: no new runs; runs in flight resume after a restart.");
    cancel.cancel();
    if tokio::time::timeout(options.shutdown_grace, tasks.wait()).await.is_err() {
        warn!(grace = ?options.shutdown_grace, "Tasks still running after the grace period.");
    }
    Ok(())
}
