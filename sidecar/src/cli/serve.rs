//! `saltpeter` (no subcommand): the daemon, with the original's flags where they still mean
//! something. Every flag can also come from a `SALTPETER_*` environment variable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args as ClapArgs;

use crate::daemon::{self, Options};

/// The daemon's flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Where runs are recorded (SQLite).
    #[arg(long, global = true, env = "SALTPETER_STATE_DIR", default_value = "/var/lib/saltpeter")]
    pub state_dir: PathBuf,
    /// Per-job log files (`logdir` in saltpeter_config).
    #[arg(short = 'l', long, env = "SALTPETER_LOGDIR")]
    pub logdir: Option<PathBuf>,
    /// The port agents connect to (`machines_ws_port`, 8889).
    #[arg(short = 'w', long = "websocket-port", env = "SALTPETER_WEBSOCKET_PORT")]
    pub websocket_port: Option<u16>,
    /// The address agents connect to (`machines_ws_bind_addr`).
    #[arg(long = "websocket-bind", env = "SALTPETER_WEBSOCKET_BIND")]
    pub websocket_bind: Option<String>,
    /// The host agents dial back to (`default_saltpeter_server_host`).
    #[arg(long = "websocket-host", env = "SALTPETER_WEBSOCKET_HOST")]
    pub websocket_host: Option<String>,
    /// The agent's path on the minions (`default_wrapper_path`).
    #[arg(long = "wrapper-path", env = "SALTPETER_WRAPPER_PATH")]
    pub wrapper_path: Option<String>,
    /// Serve the HTTP API (`api_ws: true` in saltpeter_config does the same).
    #[arg(short = 'a', long = "api", env = "SALTPETER_API")]
    pub api: bool,
    /// The API's port (`api_ws_port`, 8888).
    #[arg(short = 'p', long = "api-port", env = "SALTPETER_API_PORT")]
    pub api_port: Option<u16>,
    /// The API's address (`api_ws_bind_addr`).
    #[arg(long = "api-bind", env = "SALTPETER_API_BIND")]
    pub api_bind: Option<String>,
    /// Send run events to this Elasticsearch URL (`elasticsearch` in saltpeter_config).
    #[arg(short = 'e', long, env = "SALTPETER_ELASTICSEARCH")]
    pub elasticsearch: Option<String>,
    /// Send run events to this OpenSearch URL (`opensearch` in saltpeter_config).
    #[arg(short = 'o', long, env = "SALTPETER_OPENSEARCH")]
    pub opensearch: Option<String>,
    /// The index prefix for both (`elasticsearch_index`, `opensearch_index`; `saltpeter`).
    #[arg(short = 'i', long, env = "SALTPETER_INDEX")]
    pub index: Option<String>,
    /// Seconds a targeted minion has to answer before it counts as not responding (255).
    #[arg(long, env = "SALTPETER_RESPONSE_DEADLINE", default_value_t = 10)]
    pub response_deadline: u64,
    /// Seconds of silence from an agent before its run counts as lost (253).
    #[arg(long, env = "SALTPETER_HEARTBEAT_TIMEOUT", default_value_t = 15)]
    pub heartbeat_timeout: u64,
    /// PEM certificate chain for TLS on the API and agent ports (`tls_cert`).
    #[arg(long, env = "SALTPETER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for it (`tls_key`).
    #[arg(long, env = "SALTPETER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    config_dir: PathBuf,
    master_config: PathBuf,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let options = Options {
        config_dir,
        master_config,
        state_dir: args.state_dir,
        logdir: args.logdir,
        agent_port: args.websocket_port,
        agent_bind: args.websocket_bind,
        websocket_host: args.websocket_host,
        wrapper_path: args.wrapper_path,
        api: args.api,
        api_port: args.api_port,
        api_bind: args.api_bind,
        elasticsearch: args.elasticsearch,
        opensearch: args.opensearch,
        index: args.index,
        response_deadline: Duration::from_secs(args.response_deadline),
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout),
        shutdown_grace: Duration::from_secs(10),
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    daemon::run(options, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
