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
use crate::{export, retention, store};

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
    /// Search-engine export URLs and index prefix.
    pub elasticsearch: Option<String>,
    pub opensearch: Option<String>,
    pub index: Option<String>,
    /// How long a minion has to answer before it counts as not responding.
    pub response_deadline: Duration,
    pub heartbeat_timeout: Duration,
    /// How long shutdown waits for tasks to finish.
    pub shutdown_grace: Duration,
    /// PEM certificate and key: both servers serve TLS (`tls_cert`, `tls_key`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
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

/// The export settings with the command line's overrides.
fn export_settings(settings: &config::Settings, options: &Options) -> config::Settings {
    let mut s = settings.clone();
    if let Some(url) = &options.elasticsearch {
        s.elasticsearch.clone_from(url);
    }
    if let Some(url) = &options.opensearch {
        s.opensearch.clone_from(url);
    }
    if let Some(index) = &options.index {
        s.elasticsearch_index.clone_from(index);
        s.opensearch_index.clone_from(index);
    }
    s
}

/// Forwards the file watcher's reloads, and reloads asked through the API or SIGHUP (answered
/// with what they changed in the files; they also read the pillar again), to `out` (the pillar
/// merge).
async fn file_reloads_with_api(
    config_dir: PathBuf,
    mut last: Loaded,
    mut watched: mpsc::Receiver<config::Reloaded>,
    mut api: mpsc::Receiver<http::ReloadRequest>,
    out: mpsc::Sender<(config::Reloaded, bool)>,
) {
    loop {
        let (reloaded, asked) = tokio::select! {
            r = watched.recv() => match r {
                Some(r) => (r, false),
                None => return,
            },
            Some(reply) = api.recv() => match http::reload_now(&config_dir, &last).await {
                Ok(r) => {
                    let _ = reply.send(Ok(http::ReloadOutcome::of(&r)));
                    (r, true)
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            },
        };
        last = reloaded.loaded.clone();
        if out.send((reloaded, asked)).await.is_err() {
            return;
        }
    }
}

/// SIGHUP reloads the configuration, as the API's reload does, and logs what it changed.
/// `hangups` is registered when the daemon starts, so a SIGHUP that comes early is held, not
/// fatal (its default action ends the process).
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    reload: mpsc::Sender<http::ReloadRequest>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration.");
        let (reply, answer) = tokio::sync::oneshot::channel();
        if reload.send(reply).await.is_err() {
            return;
        }
        match answer.await {
            Ok(Ok(outcome)) => info!(
                added = ?outcome.diff.added,
                removed = ?outcome.diff.removed,
                changed = ?outcome.diff.changed,
                errors = outcome.errors.len(),
                "SIGHUP reload done."
            ),
            Ok(Err(e)) => warn!(error = e, "SIGHUP reload failed; the jobs stay as they were."),
            Err(_) => return,
        }
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|e| warn!(error = %e, "Cannot listen for SIGHUP; reload with the API or by editing the files."))
        .ok();
    let loaded = config::load_dir(&options.config_dir, Utc::now())
        .with_context(|| format!("read the config directory {}", options.config_dir.display()))?;
    report(&loaded);
    let settings = &loaded.settings;
    let tls = crate::tls::acceptor(
        options.tls_cert.as_deref().or(settings.tls_cert.as_deref()),
        options.tls_key.as_deref().or(settings.tls_key.as_deref()),
    )?;
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
        minion_dispatch: settings.minion_dispatch.clone(),
        agent_tls: tls.is_tls(),
        agent_ca_file: settings.tls_ca_file.clone().filter(|_| tls.is_tls()),
        ..EngineSettings::default()
    };
    let master =
        MasterConfig::load(&options.master_config).context("read the Salt master's config")?;
    let salt = Arc::new(SaltClient::connect(&master).await.context("connect to the Salt master")?);
    // Jobs and maintenance from pillar join the files' (crate::pillar).
    let pillar = crate::pillar::Pillar::start(&salt, &master, &loaded).await;
    let merged = pillar.loaded().clone();

    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let store = store::spawn(&tasks, &options.state_dir).context("open the run store")?;
    let sinks = export::sinks(&export_settings(settings, &options));
    export::register(&store, &sinks).await.context("set up the search-engine export")?;
    for sink in sinks {
        tasks.spawn(export::run(store.clone(), sink, cancel.child_token()));
    }
    let (retention_tx, retention_rx) =
        tokio::sync::watch::channel(retention::Policy::new(settings, merged.jobs.values()));
    tasks.spawn(retention::run(
        store.clone(),
        retention_rx,
        retention::EVERY,
        cancel.child_token(),
    ));
    let bind = options.agent_bind.clone().unwrap_or_else(|| settings.machines_ws_bind_addr.clone());
    let agent_addr = format!("{bind}:{}", engine_settings.agent_port);
    let listener = TcpListener::bind(&agent_addr)
        .await
        .with_context(|| format!("listen for agents on {agent_addr}"))?;
    let agent_addr: SocketAddr =
        listener.local_addr().context("read the agent listener's address")?;
    let listener = crate::tls::Listener::new(listener, tls.clone());
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
    let jobs_now: Vec<_> = merged.jobs.values().cloned().collect();
    let clock = runs::scheduler_clock(&engine_settings, &jobs_now);
    let metrics = Arc::new(crate::metrics::Metrics::new(Some(registry.clone())));
    let deps = Deps {
        salt: Arc::clone(&salt),
        store: store.clone(),
        registry: registry.clone(),
        settings: engine_settings,
        metrics: metrics.dispatch(),
    };
    let runs = runs::spawn(&tasks, deps, jobs_now, due_rx, cancel.child_token());
    // Runtime maintenance (API) merged with the files' and the pillar's; the engine gets the
    // union.
    let maintenance = crate::maintenance::spawn(
        &tasks,
        store.clone(),
        Some(Arc::clone(&salt)),
        merged.maintenance.clone(),
        cancel.child_token(),
    )
    .await
    .context("read maintenance from the run store")?;
    crate::maintenance::forward(&tasks, &maintenance, runs.clone()).await;
    // Catch-up: each job's schedule continues from its last recorded slot (its `catch_up`
    // decides what happens to the slots missed while the sidecar was down).
    let mut last = std::collections::HashMap::new();
    for name in merged.jobs.keys() {
        if let Ok(Some(at)) = store.last_slot(name.as_str()).await {
            last.insert(name.clone(), at);
        }
    }
    // From the wall clock, not the scheduler's (ahead by the lead time), so that no slot in the
    // lead window is passed over at start; the table measures lateness by the wall clock too
    // (`Clock::ahead`), so such a slot is on time whatever the job's `catch_up_window`.
    let table = JobTable::resume(merged.jobs.values().cloned(), &last, Utc::now());
    let jobs = table.len();
    let scheduler = scheduler::spawn(&tasks, table, clock, due_tx, cancel.child_token());
    crate::metrics::spawn(
        &tasks,
        Arc::clone(&metrics),
        store.clone(),
        Some(salt.bus().link()),
        cancel.child_token(),
    );
    let (jobs_tx, jobs_rx) = tokio::sync::watch::channel(Arc::new(merged.jobs.clone()));
    let access = http::Access::new(&merged.settings);
    let (api_reload_tx, api_reloads) = mpsc::channel::<http::ReloadRequest>(4);
    if let Some(hangups) = hangups {
        tasks.spawn(reload_on_sighup(hangups, api_reload_tx.clone(), cancel.child_token()));
    }
    if let Some(listener) = api_listener {
        let state = http::State {
            runs: runs.clone(),
            scheduler: scheduler.clone(),
            store: store.clone(),
            jobs: jobs_rx,
            maintenance: maintenance.clone(),
            salt: Some(Arc::clone(&salt)),
            access: access.clone(),
            reload: Some(api_reload_tx),
            metrics: Some(metrics),
        };
        let listener = crate::tls::Listener::new(listener, tls.clone()).into_http();
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

    // File reloads, from the watcher or asked through the API, then merged with the pillar.
    let (watched_tx, watched) = mpsc::channel(8);
    tasks.spawn(config::watch(
        options.config_dir.clone(),
        loaded.clone(),
        WatchOptions::default(),
        watched_tx,
        cancel.child_token(),
    ));
    let (file_tx, file_reloads) = mpsc::channel(8);
    tasks.spawn(file_reloads_with_api(
        options.config_dir.clone(),
        loaded,
        watched,
        api_reloads,
        file_tx,
    ));
    let mut reloads = pillar.follow(&tasks, Arc::clone(&salt), file_reloads, cancel.child_token());
    let reload_salt = Arc::clone(&salt);
    tasks.spawn(async move {
        while let Some(reloaded) = reloads.recv().await {
            report(&reloaded.loaded);
            let diff = reloaded.diff;
            info!(added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed, "Config reloaded.");
            let loaded = reloaded.loaded;
            retention_tx.send_replace(retention::Policy::new(&loaded.settings, loaded.jobs.values()));
            jobs_tx.send_replace(Arc::new(loaded.jobs.clone()));
            access.update(&loaded.settings);
            if scheduler.reload(loaded.jobs).await.is_err() {
                return;
            }
            maintenance.set_file(loaded.maintenance).await;
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
    info!(version = env!("CARGO_PKG_VERSION"), jobs, agents = %agent_addr, tls = tls.is_tls(), api = ?api_addr, state_dir = %options.state_dir.display(), "Saltpeter is running.");

    shutdown.await;
    info!("Stopping: no new runs; runs in flight resume after a restart.");
    cancel.cancel();
    if tokio::time::timeout(options.shutdown_grace, tasks.wait()).await.is_err() {
        warn!(grace = ?options.shutdown_grace, "Tasks still running after the grace period.");
    }
    Ok(())
}
