//! The agent as Salt runs it: the real binary, real processes, a real WebSocket server on
//! loopback (`agent/server.rs`). Nothing sleeps to wait: every wait is for a fact, with a
//! deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)] // test code

mod server;

mod binary;
mod control;
mod delivery;
mod dispatch;
mod environment;
mod stopping;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use saltpeter_protocol::RunKey;

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

/// One agent invocation's environment, in a fresh state and log directory.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub vars: BTreeMap<String, String>,
    /// The daemons this agent started, killed when the test ends.
    daemons: std::sync::Mutex<Vec<u32>>,
}

impl Drop for Agent {
    /// A test's daemon must not outlive the test: one still redelivering its result (for the
    /// delivery window after its job) could reach a later test's server that was given the same
    /// port, under the same instance id, and mix its messages into that test's run.
    fn drop(&mut self) {
        let daemons = self.daemons.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for pid in daemons.iter() {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Agent {
    pub fn new(url: &str, job: &str, instance: &str, command: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let vars = BTreeMap::from([
            ("SP_WEBSOCKET_URL".to_owned(), url.to_owned()),
            ("SP_JOB_NAME".to_owned(), job.to_owned()),
            ("SP_JOB_INSTANCE".to_owned(), instance.to_owned()),
            ("SP_COMMAND".to_owned(), command.to_owned()),
            ("SP_MACHINE_ID".to_owned(), "minion-test".to_owned()),
            ("SP_STATE_DIR".to_owned(), dir.path().join("state").display().to_string()),
            ("SP_WRAPPER_LOGDIR".to_owned(), dir.path().join("log").display().to_string()),
            ("SP_WRAPPER_LOGLEVEL".to_owned(), "debug".to_owned()),
            ("SP_OUTPUT_INTERVAL_MS".to_owned(), "50".to_owned()),
            ("SP_DELIVERY_WINDOW_SECS".to_owned(), "60".to_owned()),
        ]);
        Agent { dir, vars, daemons: std::sync::Mutex::new(Vec::new()) }
    }

    pub fn set(mut self, key: &str, value: &str) -> Agent {
        self.vars.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn key(&self) -> RunKey {
        RunKey {
            job_name: self.vars["SP_JOB_NAME"].as_str().into(),
            job_instance: self.vars["SP_JOB_INSTANCE"].as_str().into(),
            machine: "minion-test".into(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs the agent as Salt would and returns its (parent's) output.
    pub fn launch(&self) -> Output {
        Command::new(bin())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(&self.vars)
            .output()
            .unwrap()
    }

    /// Launches and checks the parent detached; returns the daemon's pid.
    pub fn start(&self) -> u32 {
        let out = self.launch();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "agent failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = stdout.trim().rsplit(' ').next().unwrap().parse().expect("the daemon's pid");
        self.daemons.lock().unwrap().push(pid);
        pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.dir.path().join("log").join(format!("{}.log", self.vars["SP_JOB_NAME"])),
        )
        .unwrap_or_default()
    }

    /// `saltpeter-agent <cmd> --job J --state-dir D [--instance I]`.
    pub fn control(&self, cmd: &str, instance: bool) -> Output {
        let mut c = Command::new(bin());
        c.args([cmd, "--job", &self.vars["SP_JOB_NAME"], "--state-dir"]).arg(self.state_dir());
        if instance {
            c.args(["--instance", &self.vars["SP_JOB_INSTANCE"]]);
        }
        c.output().unwrap()
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_saltpeter-agent")
}

/// Polls `probe` every 20 ms until it returns `Some`, or panics naming `what`.
pub async fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
pub fn live_in_group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
