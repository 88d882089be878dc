//! The exit codes Saltpeter itself assigns to a run, shared by agent and sidecar. Any other
//! code is the command's own (1-123), or 128+N for a command that died from signal N.

/// A code with a Saltpeter meaning. On the wire a `retcode` stays a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// The command succeeded.
    Success,
    /// The run exceeded its timeout and was stopped (SIGTERM to its process group, then
    /// SIGKILL after 5 s).
    Timeout,
    /// Salt could not execute the agent (not executable).
    NotExecutable,
    /// Salt could not find the agent.
    NotFound,
    /// Stopped on request (SIGTERM to its process group, then SIGKILL after 5 s).
    Killed,
    /// The sidecar stopped hearing the agent's heartbeat.
    HeartbeatLost,
    /// The run never started: the agent could not launch it, never connected, or another run
    /// of the job holds the overlap lock.
    StartFailed,
    /// An error outside the command: the minion did not answer, the agent reported an error.
    Error,
}

impl ExitCode {
    pub const ALL: [ExitCode; 8] = [
        ExitCode::Success,
        ExitCode::Timeout,
        ExitCode::NotExecutable,
        ExitCode::NotFound,
        ExitCode::Killed,
        ExitCode::HeartbeatLost,
        ExitCode::StartFailed,
        ExitCode::Error,
    ];

    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Timeout => 124,
            ExitCode::NotExecutable => 126,
            ExitCode::NotFound => 127,
            ExitCode::Killed => 143,
            ExitCode::HeartbeatLost => 253,
            ExitCode::StartFailed => 254,
            ExitCode::Error => 255,
        }
    }

    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// One line for people: UIs, logs and `docs/protocol.md` use it.
    pub const fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Timeout => "timed out: stopped after the job's timeout",
            ExitCode::NotExecutable => "Salt could not execute the agent (permission denied)",
            ExitCode::NotFound => "Salt could not find the agent (command not found)",
            ExitCode::Killed => "killed on request",
            ExitCode::HeartbeatLost => "heartbeat lost: the agent stopped reporting",
            ExitCode::StartFailed => {
                "did not start: launch failed, agent never connected, or overlap lock held"
            }
            ExitCode::Error => "error: the minion did not answer or the agent failed",
        }
    }
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        code.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_originals_and_round_trip() {
        let codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes, [0, 124, 126, 127, 143, 253, 254, 255]);
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ExitCode::from_code(1), None);
    }
}
