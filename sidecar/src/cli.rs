//! The command line: global flags and one subcommand per module in `cli/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod salt;

/// Saltpeter: distributed cron for SaltStack fleets.
#[derive(Debug, Parser)]
#[command(name = "saltpeter", version, about)]
pub struct Cli {
    /// The directory of job files.
    #[arg(short = 'c', long = "config", global = true, default_value = "/etc/saltpeter")]
    pub config: PathBuf,
    /// The Salt master's config file (its `master.d/` is read too).
    #[arg(long, global = true, default_value = crate::salt::DEFAULT_MASTER_CONFIG)]
    pub salt_master_config: PathBuf,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to the Salt master directly: watch events, run jobs, fire events.
    Salt(salt::SaltArgs),
}
