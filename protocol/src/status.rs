//! What `saltpeter-agent status` prints, one JSON object per line, so the sidecar can ask a
//! minion about a run through Salt when the WebSocket is gone. Since version 1.

use serde::{Deserialize, Serialize};

use crate::{JobInstance, JobName, Timestamp};

/// Where a run stands on this minion, from its spool directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Its agent is alive (it holds the run's lock).
    Running,
    /// Its command ended; `retcode` says how. `delivered` says whether the sidecar has it.
    Finished,
    /// Its agent is gone without recording an end (killed with SIGKILL, machine rebooted).
    Lost,
}

/// One run as the minion knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    pub job_name: JobName,
    pub job_instance: JobInstance,
    pub state: RunState,
    /// The agent daemon's pid.
    pub agent_pid: u32,
    /// The command's process group (the shell's pid); absent if it never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    pub started: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retcode: Option<i32>,
    /// Whether the sidecar acknowledged the run's `complete`.
    #[serde(default)]
    pub delivered: bool,
}
