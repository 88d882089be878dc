//! `saltpeter token new --name NAME --role ROLE`: a fresh API secret, and the `api_tokens` entry
//! (its SHA-256, never the secret) to paste under `saltpeter_config`. The daemon stores no secret.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand, ValueEnum};

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new secret and its config entry.
    New {
        /// The token's name, written to the audit log with everything it does.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum, default_value_t = RoleArg::Viewer)]
        role: RoleArg,
        /// Print only `SECRET SHA256` on one line (for scripts).
        #[arg(long)]
        plain: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let TokenCommand::New { name, role, plain } = &args.command;
    if name.trim().is_empty() || name.contains(['\n', '"', '}', ',']) {
        anyhow::bail!("--name {name:?}: use a plain name such as ci-deploy or alice");
    }
    let role = match role {
        RoleArg::Viewer => "viewer",
        RoleArg::Operator => "operator",
        RoleArg::Admin => "admin",
    };
    let (secret, sha256) = crate::http::auth::new_secret();
    let mut out = std::io::stdout().lock();
    if *plain {
        writeln!(out, "{secret} {sha256}")?;
    } else {
        writeln!(out, "Secret (shown once; send it as `Authorization: Bearer <secret>`):")?;
        writeln!(out, "  {secret}")?;
        writeln!(out, "Add under saltpeter_config.api_tokens:")?;
        writeln!(out, "    - {{name: {name}, sha256: {sha256}, role: {role}}}")?;
    }
    Ok(ExitCode::SUCCESS)
}
