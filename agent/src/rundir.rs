//! A run's directory on the minion, `<state>/runs/<job>/<instance>/`: what `saltpeter-agent
//! status|kill` reads when the WebSocket is gone. `agent.lock` is held by the run's agent for
//! its whole life (so "running" is never a guess from a PID), `run.json` says who runs it,
//! `result.json` how it ended and whether the sidecar has it, `spool/` holds undelivered output.

use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use saltpeter_protocol::{JobInstance, JobName, RunState, RunStatus, Timestamp};
use serde::{Deserialize, Serialize};

use crate::lock::{self, Held};

#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

/// `run.json`: written when the agent takes the run, updated when the command starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub job_name: JobName,
    pub job_instance: JobInstance,
    pub agent_pid: u32,
    #[serde(default)]
    pub pgid: Option<u32>,
    pub started: Timestamp,
}

/// `result.json`: written when the command ends, and again when the sidecar acknowledges it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub retcode: i32,
    pub finished: Timestamp,
    pub delivered: bool,
}

impl RunDir {
    pub fn new(state_dir: &Path, job: &JobName, instance: &JobInstance) -> RunDir {
        RunDir { path: state_dir.join("runs").join(job.as_str()).join(instance.as_str()) }
    }

    /// Creates the directory (0700: output can hold secrets) and takes its agent lock.
    pub fn claim(&self) -> anyhow::Result<Held> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", self.path.display()))?;
        Ok(lock::try_exclusive(&self.path.join("agent.lock"))?)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.path.join("spool")
    }

    pub fn write_info(&self, info: &RunInfo) -> io::Result<()> {
        write_json(&self.path.join("run.json"), info)
    }

    pub fn write_result(&self, result: &RunResult) -> io::Result<()> {
        write_json(&self.path.join("result.json"), result)
    }

    pub fn status(&self) -> Option<RunStatus> {
        let info: RunInfo = read_json(&self.path.join("run.json"))?;
        let result: Option<RunResult> = read_json(&self.path.join("result.json"));
        let alive = lock::is_held(&self.path.join("agent.lock"));
        let state = match (&result, alive) {
            (Some(_), _) => RunState::Finished,
            (None, true) => RunState::Running,
            (None, false) => RunState::Lost,
        };
        Some(RunStatus {
            job_name: info.job_name,
            job_instance: info.job_instance,
            state,
            agent_pid: info.agent_pid,
            pgid: info.pgid,
            started: info.started,
            finished: result.as_ref().map(|r| r.finished),
            retcode: result.as_ref().map(|r| r.retcode),
            delivered: result.is_some_and(|r| r.delivered),
        })
    }

    /// Every run directory of `job` (one `instance` if given), oldest name first.
    pub fn list(state_dir: &Path, job: &JobName, instance: Option<&JobInstance>) -> Vec<RunDir> {
        if let Some(instance) = instance {
            return vec![RunDir::new(state_dir, job, instance)];
        }
        let job_dir = state_dir.join("runs").join(job.as_str());
        let mut dirs: Vec<RunDir> = std::fs::read_dir(job_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| RunDir { path: e.path() })
            .collect();
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        dirs
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(value).map_err(io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
