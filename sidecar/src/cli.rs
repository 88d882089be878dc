//! The command line: global flags and one variant per subcommand; each subcommand's code lives in
//! `cli/<name>.rs`.

pub mod check;
pub mod control;
pub mod import_crontab;
pub mod jobs;
pub mod runs;
pub mod salt;
pub mod serve;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Saltpeter: distributed cron for SaltStack fleets.
#[derive(Debug, Parser)]
#[command(name = "saltpeter", version, about = "Distributed cron for SaltStack fleets")]
pub struct Cli {
    /// The config directory: job files and saltpeter_config.
    #[arg(short = 'c', long = "config", global = true, default_value = "/etc/saltpeter")]
    pub config: PathBuf,
    /// The Salt master's config file (its `master.d/` is read too).
    #[arg(long, global = true, default_value = crate::salt::DEFAULT_MASTER_CONFIG)]
    pub salt_master_config: PathBuf,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub serve: serve::Args,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config directory and show each job's next fire instants.
    Check(check::Args),
    /// Convert a crontab into job YAML.
    ImportCrontab(import_crontab::Args),
    /// Run a job now, outside its schedule (asks the daemon's API).
    Run(control::RunArgs),
    /// Kill a run, or one minion of it (asks the daemon's API).
    Kill(control::KillArgs),
    /// The recorded runs (asks the daemon's API; --store reads the run store in --state-dir).
    Runs(runs::Args),
    /// Talk to the Salt master directly: watch events, run jobs, fire events.
    Salt(salt::SaltArgs),
    /// The daemon's jobs: next run, last result, success rate (asks the daemon's API).
    Jobs(jobs::JobsArgs),
    /// Maintenance set through the API: list, start, end (asks the daemon's API).
    Maintenance(jobs::MaintenanceArgs),
    /// API tokens: `token new --name N --role viewer|operator|admin`.
    Token(token::Args),
}
