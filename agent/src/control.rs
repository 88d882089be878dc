//! `saltpeter-agent status|kill --job NAME [--instance ID]`: asks or stops runs on this minion
//! without the WebSocket, from their directories, so the sidecar can reach a run through Salt
//! when its connection is gone. `kill` signals the run's agent (which stops the group and
//! reports 143); if the agent is gone but its group is not, it stops the group itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use saltpeter_protocol::{EnvVar, JobInstance, JobName, RunState};

use crate::child;
use crate::env::DEFAULT_STATE_DIR;
use crate::run::KILL_GRACE;
use crate::rundir::RunDir;

pub struct Query {
    pub job: JobName,
    pub instance: Option<JobInstance>,
    pub state_dir: PathBuf,
}

pub const USAGE: &str =
    "usage: saltpeter-agent status|kill --job NAME [--instance ID] [--state-dir DIR]";

impl Query {
    pub fn parse(args: &[String]) -> Result<Query, String> {
        let (mut job, mut instance, mut state_dir) = (None, None, None);
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--job" => job = Some(JobName::new(value()?)),
                "--instance" => instance = Some(JobInstance::new(value()?)),
                "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let state_dir = state_dir
            .or_else(|| std::env::var_os(EnvVar::StateDir.name()).map(PathBuf::from))
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        Ok(Query { job: job.ok_or("--job is required")?, instance, state_dir })
    }

    fn runs(&self) -> Vec<RunDir> {
        RunDir::list(&self.state_dir, &self.job, self.instance.as_ref())
    }
}

/// Prints one JSON line per run; exit 1 if there is none.
#[allow(clippy::print_stdout)] // this is the command's output
pub fn status(query: &Query) -> ExitCode {
    let statuses: Vec<_> = query.runs().iter().filter_map(RunDir::status).collect();
    for s in &statuses {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    }
    if statuses.is_empty() {
        eprintln!("saltpeter-agent: no runs of job {} here", query.job);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Stops every running run of the query and waits (up to 15 s) until each has ended.
#[allow(clippy::print_stdout)]
pub fn kill_runs(query: &Query) -> ExitCode {
    let mut acted = false;
    for dir in query.runs() {
        let Some(status) = dir.status() else { continue };
        match status.state {
            RunState::Running => {
                let Ok(pid) = i32::try_from(status.agent_pid) else { continue };
                if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
                    acted = true;
                    println!("{}: asked agent {pid} to kill the run", status.job_instance);
                }
            }
            RunState::Lost => {
                if let Some(pgid) = status.pgid.filter(|p| child::group_alive(*p)) {
                    acted = true;
                    stop_group(pgid);
                    println!(
                        "{}: agent gone; stopped process group {pgid} itself",
                        status.job_instance
                    );
                }
            }
            RunState::Finished => {}
        }
    }
    if !acted {
        eprintln!("saltpeter-agent: no running run of job {} here", query.job);
        return ExitCode::FAILURE;
    }
    let deadline = Instant::now() + KILL_GRACE * 3;
    while Instant::now() < deadline {
        let running =
            query.runs().iter().filter_map(RunDir::status).any(|s| s.state == RunState::Running);
        if !running {
            break;
        }
        pause();
    }
    status(query)
}

/// SIGTERM, then SIGKILL after the grace if anything of the group is left.
fn stop_group(pgid: u32) {
    child::signal_group(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    while child::group_alive(pgid) && Instant::now() < deadline {
        pause();
    }
    child::signal_group(pgid, Signal::SIGKILL);
}

/// The polling rate of this short-lived command (no runtime here).
fn pause() {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(Duration::from_millis(50));
}
