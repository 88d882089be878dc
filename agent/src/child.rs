//! The job's process: `/bin/sh -c "$SP_COMMAND"` in a session and process group of its own, as
//! the run's user for real (groups, gid, uid, and the login variables), with stdout and stderr
//! on separate pipes; and the signals that stop the whole group.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::env::{PRIVATE_VARS, RunSpec};
use crate::sys::{self, Identity};

pub struct Job {
    pub child: Child,
    /// The shell's pid, which is also the group's id.
    pub pgid: u32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// The run's command, ready to start (everything but the fork and exec).
pub fn command(spec: &RunSpec) -> std::process::Command {
    #[allow(clippy::disallowed_methods)] // the one place the agent starts the job
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(&spec.command);
    for var in PRIVATE_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(&spec.env);
    let home = spec.account.as_ref().map(|a| a.home.as_path());
    let cwd = spec.cwd.as_deref().or(home.filter(|h| h.is_dir())).unwrap_or(Path::new("/"));
    cmd.current_dir(cwd);
    match &spec.account {
        Some(account) => {
            cmd.envs(login_env(account));
            sys::new_session_as(
                &mut cmd,
                Identity { uid: account.uid, gid: account.gid, groups: account.groups.clone() },
            );
        }
        None => sys::new_session(&mut cmd),
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Starts a command from [`command`]: fork and exec. Errors are the spawn's (no `/bin/sh`, cwd
/// refused to the user). Needs a runtime's context (its pipes
/// and its exit are followed by the runtime).
pub fn start(cmd: std::process::Command) -> std::io::Result<Job> {
    let mut child = tokio::process::Command::from(cmd).spawn()?;
    let pgid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the job exited before its pid was read"))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the job's pipes are missing"));
    };
    Ok(Job { child, pgid, stdout, stderr })
}

fn login_env(account: &crate::users::Account) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("HOME", account.home.display().to_string()),
        ("USER", account.name.clone()),
        ("LOGNAME", account.name.clone()),
        ("SHELL", account.shell.display().to_string()),
    ])
}

/// Sends `signal` to every process of the group. `false` if the group is gone.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    send(pgid, Some(signal))
}

/// Whether any process (zombies included) is left in the group.
pub fn group_alive(pgid: u32) -> bool {
    send(pgid, None)
}

fn send(pgid: u32, signal: Option<Signal>) -> bool {
    let Ok(raw) = i32::try_from(pgid) else { return false };
    // pgid 0 or 1 would signal our own group or everything: never.
    if raw <= 1 {
        return false;
    }
    !matches!(killpg(Pid::from_raw(raw), signal), Err(Errno::ESRCH))
}

/// The status of a command that ended by itself, as a shell reports it: its exit code, or
/// 128+N if signal N ended it.
pub fn retcode(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}
