//! Leaving Salt at once: the validated agent re-executes itself (`/proc/self/exe`, so even a
//! binary replaced meanwhile runs the same code) in a new session, with its stdio on its log
//! file, and exits 0 as soon as the daemon's pid is known. Re-exec, not fork: the parent may
//! already have threads, and a fork would copy them into a broken child.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;

use crate::env::{LogLevel, Settings};
use crate::sys;

/// Set in the daemon's environment (and removed from the job's).
pub const DAEMON_MARKER: &str = "_SALTPETER_AGENT_DAEMON";

pub fn is_daemon() -> bool {
    std::env::var_os(DAEMON_MARKER).is_some()
}

/// The log file of a job's agent: `<SP_WRAPPER_LOGDIR>/<job>.log`, as the original.
pub fn log_path(settings: &Settings, job: &str) -> PathBuf {
    settings.log_dir.join(format!("{job}.log"))
}

/// Opens the log for appending; `None` if logging is off. A log that cannot be opened is
/// not fatal (the run matters more than its log): the caller warns and uses /dev/null.
pub fn open_log(settings: &Settings, job: &str) -> std::io::Result<Option<File>> {
    if settings.log_level == LogLevel::Off {
        return Ok(None);
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&settings.log_dir)?;
    OpenOptions::new().create(true).append(true).open(log_path(settings, job)).map(Some)
}

/// Starts the daemon; returns its pid.
pub fn spawn_daemon(settings: &Settings, job: &str) -> anyhow::Result<u32> {
    let log = match open_log(settings, job) {
        Ok(log) => log,
        Err(e) => {
            eprintln!(
                "saltpeter-agent: warning: cannot open {}: {e}; the agent will not log",
                log_path(settings, job).display()
            );
            None
        }
    };
    let (out, err) = match log {
        Some(file) => {
            (Stdio::from(file.try_clone().context("duplicate the log file")?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    // Without /proc (a bare chroot), the path it was started by.
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        std::ffi::OsString::from("/proc/self/exe")
    } else {
        std::env::args_os().next().context("no /proc/self/exe and no argv[0]")?
    };
    #[allow(clippy::disallowed_methods)] // the agent re-executing itself
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    // stdin: a pipe whose write end closes when this process exits (EOF), rather than
    // /dev/null, which a bare chroot may not have.
    cmd.args(std::env::args_os().skip(1))
        .env(DAEMON_MARKER, "1")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .current_dir("/");
    sys::new_session(&mut cmd);
    let child = cmd.spawn().context("re-execute the agent")?;
    Ok(child.id())
}
