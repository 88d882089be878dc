//! The `saltpeter` binary: parses arguments, sets up tracing, and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use saltpeter::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 64 (EX_USAGE); --help and --version exit 0.
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Some(Command::Check(args)) => saltpeter::cli::check::run(&cli.config, &args),
        Some(Command::ImportCrontab(args)) => saltpeter::cli::import_crontab::run(&args),
        Some(Command::Run(args)) => report(saltpeter::cli::control::run(&args)),
        Some(Command::Kill(args)) => report(saltpeter::cli::control::kill(&args)),
        Some(Command::Runs(args)) => report(saltpeter::cli::runs::run(&cli.serve.state_dir, &args)),
        Some(Command::Jobs(args)) => report(saltpeter::cli::jobs::jobs(&args)),
        Some(Command::Maintenance(args)) => report(saltpeter::cli::jobs::maintenance(&args)),
        Some(Command::Token(args)) => report(saltpeter::cli::token::run(&args)),
        Some(Command::Salt(args)) => {
            block_on(saltpeter::cli::salt::run(&cli.salt_master_config, args))
        }
        None => block_on(saltpeter::cli::serve::run(cli.config, cli.salt_master_config, cli.serve)),
    }
}

/// The exit code of a synchronous subcommand, its error printed.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("saltpeter: {e:#}");
        ExitCode::FAILURE
    })
}

/// Runs an async subcommand to completion on a multi-threaded runtime.
fn block_on(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("saltpeter: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("saltpeter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
