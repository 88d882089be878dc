//! The `saltpeter` binary: parses arguments, sets up tracing, and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use saltpeter::cli::{Cli, Command, LogFormat};

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
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    match cli.command {
        Some(Command::Check(args)) => saltpeter::cli::check::run(&cli.config, &args),
        Some(Command::ImportCrontab(args)) => saltpeter::cli::import_crontab::run(&args),
        None => {
            eprintln!("saltpeter: the daemon is not part of this build yet; try `saltpeter check`");
            ExitCode::from(64)
        }
    }
}
