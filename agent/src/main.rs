//! `saltpeter-agent`: started by Salt on a minion with the run in `SP_*` variables; validates
//! them, detaches, and returns 0 at once, while its daemon runs the job and streams it to the
//! sidecar over WebSocket. `status` and `kill` act on runs of this minion locally.
//!
//! Arguments are parsed by hand: four words do not justify clap's weight in a binary whose
//! size is a goal (≤ 3 MB static).

use std::collections::BTreeMap;
use std::process::ExitCode;

use saltpeter_agent::{control, daemon, detach, dispatch, env, users};
use saltpeter_protocol::{ExitCode as SpExit, PROTOCOL_VERSION};

const USAGE: &str = "\
usage: saltpeter-agent                 run the job described by the SP_* environment (detached)
       saltpeter-agent dispatch --url URL --dispatch ID --token TOKEN   (coalesced runs, detached)
       saltpeter-agent status|kill --job NAME [--instance ID] [--state-dir DIR]
       saltpeter-agent --version";

#[allow(clippy::print_stdout)] // the command's own output
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => sp_mode(),
        Some("--version" | "-V" | "version") => {
            println!("saltpeter-agent {} (protocol {PROTOCOL_VERSION})", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("dispatch") => dispatch_mode(&args[1..]),
        Some(cmd @ ("status" | "kill")) => match control::Query::parse(&args[1..]) {
            Ok(q) if cmd == "status" => control::status(&q),
            Ok(q) => control::kill_runs(&q),
            Err(e) => {
                eprintln!("saltpeter-agent: {e}\n{}", control::USAGE);
                ExitCode::from(2)
            }
        },
        Some(other) => {
            eprintln!("saltpeter-agent: unknown command `{other}`\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn env_vars() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Coalesced dispatch: the runs come from the sidecar's manifest; same detach rules.
#[allow(clippy::print_stdout)]
fn dispatch_mode(args: &[String]) -> ExitCode {
    let (settings, id) = match dispatch::parse(args, &env_vars()) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for e in errors {
                eprintln!("saltpeter-agent: {e}");
            }
            eprintln!("{}", dispatch::USAGE);
            return exit(SpExit::StartFailed);
        }
    };
    if detach::is_daemon() {
        return dispatch::main(settings, id);
    }
    match detach::spawn_daemon(&settings, "dispatch") {
        Ok(pid) => {
            println!(
                "saltpeter-agent {}: dispatch {id} detached as pid {pid}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("saltpeter-agent: cannot detach: {e:#}");
            exit(SpExit::StartFailed)
        }
    }
}

/// The original wrapper's contract: everything from `SP_*`, checked before detaching.
#[allow(clippy::print_stdout)]
fn sp_mode() -> ExitCode {
    let vars = env_vars();
    let (settings, spec) = match env::from_vars(&vars, &users::AccountDb::default()) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("saltpeter-agent: {e}");
            }
            return exit(SpExit::StartFailed);
        }
    };
    if detach::is_daemon() {
        return daemon::main(settings, spec);
    }
    match detach::spawn_daemon(&settings, spec.run.job_name.as_str()) {
        Ok(pid) => {
            println!(
                "saltpeter-agent {}: job {} instance {} detached as pid {pid}",
                env!("CARGO_PKG_VERSION"),
                spec.run.job_name,
                spec.run.job_instance
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("saltpeter-agent: cannot detach: {e:#}");
            exit(SpExit::StartFailed)
        }
    }
}

fn exit(code: SpExit) -> ExitCode {
    ExitCode::from(u8::try_from(code.code()).unwrap_or(u8::MAX))
}
