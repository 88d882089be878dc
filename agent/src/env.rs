//! The `SP_*` environment contract (the original wrapper's, plus `SP_TOKEN`, `SP_CA_FILE` and
//! `SP_STATE_DIR`), validated in one pass before the agent detaches, so every bad value
//! reaches Salt's output as one clear line naming the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use saltpeter_protocol::{EnvVar, JobInstance, JobName, MachineId, RunKey, Token};

use crate::endpoint::Endpoint;
use crate::users::{Account, AccountDb};

/// One run, as the environment (or a dispatch manifest entry) describes it.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub run: RunKey,
    pub command: String,
    /// `None`: run as the agent's own user.
    pub account: Option<Account>,
    pub cwd: Option<PathBuf>,
    /// `None`: no timeout (`SP_TIMEOUT` unset or 0).
    pub timeout: Option<Duration>,
    pub overlap: Overlap,
    pub output_interval: Duration,
    /// Variables set for the command on top of the agent's environment.
    pub env: BTreeMap<String, String>,
    /// Coalesced dispatch: start at this instant by the agent's clock, not at once.
    pub scheduled: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether another run of the same job may run at the same time on this minion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    Allowed,
    /// Refused: the run holds an `flock` on this file for its agent's lifetime.
    Locked(PathBuf),
}

/// The agent's own settings, shared by every run of a connection.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub machine: MachineId,
    pub log_level: LogLevel,
    pub log_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `SP_SPOOL_MAX_BYTES` (agent-local): the most undelivered output kept per run.
    pub spool_cap: u64,
    /// `SP_DELIVERY_WINDOW_SECS` (agent-local): how long results are retried after the end.
    pub delivery_window: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Normal,
    Debug,
    Off,
}

/// A bad variable: the message Salt shows.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvError {
    pub var: &'static str,
    pub reason: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.reason)
    }
}

pub const SPOOL_CAP_VAR: &str = "SP_SPOOL_MAX_BYTES";
pub const DELIVERY_WINDOW_VAR: &str = "SP_DELIVERY_WINDOW_SECS";
pub const DEFAULT_SPOOL_CAP: u64 = 64 << 20;
pub const DEFAULT_DELIVERY_WINDOW: Duration = Duration::from_secs(600);
pub const DEFAULT_STATE_DIR: &str = "/var/lib/saltpeter-agent";
pub const DEFAULT_LOG_DIR: &str = "/var/log/sp_wrapper";
/// Variables the agent consumes and does not pass to the job: the secret, and the marker
/// that tells the re-executed agent it is the daemon.
pub const PRIVATE_VARS: [&str; 2] = ["SP_TOKEN", crate::detach::DAEMON_MARKER];

/// Reads the whole contract from `vars`, reporting every problem at once.
pub fn from_vars(
    vars: &BTreeMap<String, String>,
    accounts: &AccountDb,
) -> Result<(Settings, RunSpec), Vec<EnvError>> {
    let mut errors = Vec::new();
    let mut fail = |var: EnvVar, reason: String| errors.push(EnvError { var: var.name(), reason });
    let get = |var: EnvVar| vars.get(var.name()).map(String::as_str).filter(|v| !v.is_empty());

    let mut required = |var: EnvVar| {
        let value = get(var);
        if value.is_none() {
            fail(var, "is required and not set".to_owned());
        }
        value.unwrap_or_default().to_owned()
    };
    let url = required(EnvVar::WebsocketUrl);
    let job_name = required(EnvVar::JobName);
    let command = required(EnvVar::Command);
    let instance = get(EnvVar::JobInstance).or_else(|| get(EnvVar::JobInstanceLegacy));
    if instance.is_none() {
        fail(EnvVar::JobInstance, "is required and not set (nor SP_JOB_INSTANCE_NAME)".into());
    }

    let endpoint = match Endpoint::parse(&url, get(EnvVar::Token).map(Token::new)) {
        Ok(mut e) => {
            e.ca_file = get(EnvVar::CaFile).map(PathBuf::from);
            if let Some(ca) = &e.ca_file
                && !ca.is_file()
            {
                fail(EnvVar::CaFile, format!("`{}` is not a readable file", ca.display()));
            }
            Some(e)
        }
        Err(reason) if !url.is_empty() => {
            fail(EnvVar::WebsocketUrl, format!("`{url}`: {reason}"));
            None
        }
        Err(_) => None,
    };

    let account = match get(EnvVar::User) {
        None => None,
        Some(name) => match accounts.lookup(name) {
            Ok(a) if !nix::unistd::geteuid().is_root() && a.uid != nix::unistd::geteuid() => {
                fail(EnvVar::User, format!("running as `{name}` needs root"));
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                fail(EnvVar::User, e.to_string());
                None
            }
        },
    };
    let cwd = get(EnvVar::Cwd).map(PathBuf::from);
    if let Some(dir) = &cwd
        && !dir.is_dir()
    {
        fail(EnvVar::Cwd, format!("`{}` is not a directory", dir.display()));
    }
    let timeout = match get(EnvVar::Timeout).map(str::trim) {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                fail(EnvVar::Timeout, format!("`{text}` is not a whole number of seconds"));
                None
            }
        },
    };
    let output_interval = match get(EnvVar::OutputIntervalMs).map(str::trim) {
        None => Duration::from_millis(1000),
        Some(text) => match text.parse::<u64>() {
            Ok(ms) if ms <= 3_600_000 => Duration::from_millis(ms),
            _ => {
                fail(EnvVar::OutputIntervalMs, format!("`{text}` is not milliseconds (0-3600000)"));
                Duration::from_millis(1000)
            }
        },
    };
    let log_level = match get(EnvVar::LogLevel).map(str::to_ascii_lowercase).as_deref() {
        None | Some("normal") => LogLevel::Normal,
        Some("debug") => LogLevel::Debug,
        Some("off") => LogLevel::Off,
        Some(other) => {
            fail(EnvVar::LogLevel, format!("`{other}` is not one of normal, debug, off"));
            LogLevel::Normal
        }
    };
    let log_dir = get(EnvVar::LogDir).map_or_else(|| DEFAULT_LOG_DIR.into(), PathBuf::from);
    let state_dir = get(EnvVar::StateDir).map_or_else(|| DEFAULT_STATE_DIR.into(), PathBuf::from);
    for (var, dir) in [(EnvVar::LogDir, &log_dir), (EnvVar::StateDir, &state_dir)] {
        if !dir.is_absolute() {
            fail(var, format!("`{}` is not an absolute path", dir.display()));
        }
    }
    let allow_overlap = match get(EnvVar::AllowOverlap).map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(other) => {
            fail(EnvVar::AllowOverlap, format!("`{other}` is not true/false (or 1/0, yes/no)"));
            true
        }
    };
    let lockfile = match get(EnvVar::Lockfile).map(PathBuf::from) {
        Some(path) if !path.is_absolute() => {
            fail(EnvVar::Lockfile, format!("`{}` is not an absolute path", path.display()));
            None
        }
        Some(path) => Some(path),
        None => None,
    };
    if job_name.contains('/') || job_name == "." || job_name == ".." {
        fail(EnvVar::JobName, format!("`{job_name}` cannot name a file (contains `/`)"));
    }
    if let Some(i) = instance
        && (i.contains('/') || i == "." || i == "..")
    {
        fail(EnvVar::JobInstance, format!("`{i}` cannot name a directory (contains `/`)"));
    }
    let spool_cap = match vars.get(SPOOL_CAP_VAR).map(|v| v.trim()) {
        None | Some("") => DEFAULT_SPOOL_CAP,
        Some(text) => text.parse::<u64>().ok().filter(|n| *n >= 1 << 20).unwrap_or_else(|| {
            errors.push(EnvError {
                var: SPOOL_CAP_VAR,
                reason: format!("`{text}` is not a byte count of at least 1048576"),
            });
            DEFAULT_SPOOL_CAP
        }),
    };
    let delivery_window = match vars.get(DELIVERY_WINDOW_VAR).map(|v| v.trim()) {
        None | Some("") => DEFAULT_DELIVERY_WINDOW,
        Some(text) => text.parse::<u64>().map(Duration::from_secs).unwrap_or_else(|_| {
            errors.push(EnvError {
                var: DELIVERY_WINDOW_VAR,
                reason: format!("`{text}` is not a whole number of seconds"),
            });
            DEFAULT_DELIVERY_WINDOW
        }),
    };
    let machine = get(EnvVar::MachineId).map_or_else(crate::machine::default_id, str::to_owned);

    let (Some(endpoint), true) = (endpoint, errors.is_empty()) else {
        return Err(errors);
    };
    let overlap = if allow_overlap {
        Overlap::Allowed
    } else {
        Overlap::Locked(lockfile.unwrap_or_else(|| default_lockfile(&state_dir, &job_name)))
    };
    let run = RunKey {
        job_name: JobName::new(job_name),
        job_instance: JobInstance::new(instance.unwrap_or_default()),
        machine: MachineId::new(machine),
    };
    let settings = Settings {
        endpoint,
        machine: run.machine.clone(),
        log_level,
        log_dir,
        state_dir,
        spool_cap,
        delivery_window,
    };
    let spec = RunSpec {
        run,
        command,
        account,
        cwd,
        timeout,
        overlap,
        output_interval,
        env: BTreeMap::new(),
        scheduled: None,
    };
    Ok((settings, spec))
}

/// Per job, in the agent's root-owned state directory (not world-writable /tmp).
pub fn default_lockfile(state_dir: &std::path::Path, job: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{job}.lock"))
}
