//! A real `saltpeter` daemon for a test: its own config directory (the jobs the test gives, and
//! settings pointing at the lab and at the workspace's agent), state directory and agent port.
//! Killed on drop. Its run store is read with SQLite, read-only, as an operator would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{Lab, bin, wait_until};

/// One minion's result of a run, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinionResult {
    pub minion: String,
    pub phase: String,
    pub retcode: Option<i32>,
    pub reason: String,
    pub output: String,
}

/// A run as stored, with its minions' results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub instance: String,
    pub job: String,
    pub status: String,
    pub reason: String,
    /// `schedule`, `manual` or `catch-up`.
    pub trigger: String,
    pub results: Vec<MinionResult>,
}

pub struct Sidecar {
    child: Child,
    lab_config: PathBuf,
    port: u16,
    api_port: u16,
    pub dir: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub logdir: PathBuf,
    pub log_file: PathBuf,
}

impl Sidecar {
    /// Starts the daemon against `lab` with `jobs` (YAML: a map of job name to job).
    pub fn start(lab: &Lab, jobs: &str) -> Sidecar {
        Self::start_with(lab, jobs, &[])
    }

    /// The same, with extra command-line flags.
    pub fn start_with(lab: &Lab, jobs: &str, flags: &[&str]) -> Sidecar {
        Self::start_with_config(lab, jobs, "", flags)
    }

    /// The same, with `extra` written as one more config file (`01-extra.yaml`; e.g. another
    /// `saltpeter_config` block, applied key by key over the default settings).
    pub fn start_with_config(lab: &Lab, jobs: &str, extra: &str, flags: &[&str]) -> Sidecar {
        // Fixed ports, so that a restarted daemon is where its agents reconnect.
        let (port, api_port) = (free_port(), free_port());
        let (dir, config_dir, state_dir, logdir) = prepare(jobs, extra);
        let log_file = dir.join("sidecar.log");
        let ports = [port, api_port];
        let child = spawn(&lab.master_config, &config_dir, &state_dir, ports, flags, &log_file);
        let lab_config = lab.master_config.clone();
        let sidecar = Sidecar {
            child,
            lab_config,
            port,
            api_port,
            dir,
            config_dir,
            state_dir,
            logdir,
            log_file,
        };
        sidecar.wait_running(1);
        sidecar
    }

    /// Starts the daemon as `start_with_config` does, for a configuration it must refuse:
    /// waits up to `limit` for it to exit, and returns its exit status and its log.
    pub fn start_expecting_exit(
        lab: &Lab,
        extra: &str,
        flags: &[&str],
        limit: Duration,
    ) -> (std::process::ExitStatus, String) {
        let (dir, config_dir, state_dir, _) = prepare("", extra);
        let log_file = dir.join("sidecar.log");
        let ports = [free_port(), free_port()];
        let mut child = spawn(&lab.master_config, &config_dir, &state_dir, ports, flags, &log_file);
        let status = wait_until("the sidecar to exit", limit, || child.try_wait().ok().flatten());
        (status, fs_err::read_to_string(&log_file).unwrap_or_default())
    }

    fn wait_running(&self, starts: usize) {
        wait_until("the sidecar to start", Duration::from_secs(60), || {
            (self.log().matches("Saltpeter is running").count() >= starts).then_some(())
        });
    }

    /// SIGKILLs the daemon (no chance to record anything) and starts it again on the same
    /// directories and port.
    pub fn kill_and_restart(&mut self) {
        self.kill_and_restart_after(|| ());
    }

    /// SIGKILLs the daemon, runs `meanwhile`, and starts it again on the same directories and
    /// ports.
    pub fn kill_and_restart_after(&mut self, meanwhile: impl FnOnce()) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        meanwhile();
        let starts = self.log().matches("Saltpeter is running").count() + 1;
        self.child = spawn(
            &self.lab_config,
            &self.config_dir,
            &self.state_dir,
            [self.port, self.api_port],
            &[],
            &self.log_file,
        );
        self.wait_running(starts);
    }

    /// Sends the daemon a signal (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The daemon's process id (for its CPU and memory in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port agents connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs the `saltpeter` command line against this daemon (its API and state directory).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("saltpeter"))
            .args(args)
            .arg("--api")
            .arg(format!("http://127.0.0.1:{}", self.api_port))
            .output()
            .expect("run saltpeter")
    }

    /// The port of the daemon's HTTP API and UI.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The base URL of the daemon's HTTP API and UI.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs_err::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// A job's log file (`<logdir>/<job>.log`).
    pub fn job_log(&self, job: &str) -> String {
        fs_err::read_to_string(self.logdir.join(format!("{job}.log"))).unwrap_or_default()
    }

    /// Every run of `job`, oldest first, finished or not.
    pub fn all_runs(&self, job: &str) -> Vec<RunRecord> {
        self.runs(job).unwrap_or_default()
    }

    /// Every finished run of `job`, oldest first.
    pub fn finished_runs(&self, job: &str) -> Vec<RunRecord> {
        self.runs(job)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !matches!(r.status.as_str(), "pending" | "running"))
            .collect()
    }

    fn runs(&self, job: &str) -> anyhow::Result<Vec<RunRecord>> {
        let path = self.state_dir.join("saltpeter.db");
        if !path.exists() {
            return Ok(Vec::new());
        }
        let db = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .context("open the run store")?;
        db.busy_timeout(Duration::from_secs(5))?;
        let mut runs = db.prepare(
            "SELECT instance, job, status, reason, trigger FROM runs WHERE job = ?1 ORDER BY scheduled_at",
        )?;
        let mut results = db.prepare(
            "SELECT minion, phase, retcode, reason FROM results WHERE instance = ?1 ORDER BY minion",
        )?;
        let mut output = db.prepare(
            "SELECT data FROM output WHERE instance = ?1 AND minion = ?2 ORDER BY offset",
        )?;
        let rows: Vec<(String, String, String, String, String)> = runs
            .query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (instance, job, status, reason, trigger) in rows {
            let minions: Vec<(String, String, Option<i32>, String)> = results
                .query_map([&instance], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut list = Vec::new();
            for (minion, phase, retcode, reason) in minions {
                let chunks: Vec<Vec<u8>> = output
                    .query_map([&instance, &minion], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let output = String::from_utf8_lossy(&chunks.concat()).into_owned();
                list.push(MinionResult { minion, phase, retcode, reason, output });
            }
            out.push(RunRecord { instance, job, status, reason, trigger, results: list });
        }
        Ok(out)
    }

    /// Waits for the first finished run of `job` that `accept` takes.
    pub fn wait_for_run(
        &self,
        job: &str,
        limit: Duration,
        accept: impl Fn(&RunRecord) -> bool,
    ) -> RunRecord {
        wait_until(&format!("a finished run of {job}"), limit, || {
            self.finished_runs(job).into_iter().find(|r| accept(r))
        })
    }
}

/// A fresh directory with the config (settings pointing at the workspace's agent, `jobs`, and
/// `extra` as `01-extra.yaml`); returns it and its `conf`, `state` and `logs` paths.
fn prepare(jobs: &str, extra: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new().prefix("sidecar-").tempdir().expect("a temp dir").keep();
    let config_dir = dir.join("conf");
    let state_dir = dir.join("state");
    let logdir = dir.join("logs");
    fs_err::create_dir_all(&config_dir).expect("create the config dir");
    let agent = bin("saltpeter-agent");
    let settings = format!(
        "saltpeter_config:\n  logdir: {}\n  machines_ws_bind_addr: 127.0.0.1\n  default_saltpeter_server_host: 127.0.0.1\n  default_wrapper_path: {}\n",
        logdir.display(),
        agent.display()
    );
    fs_err::write(config_dir.join("00-settings.yaml"), settings).expect("write settings");
    fs_err::write(config_dir.join("jobs.yaml"), jobs).expect("write jobs");
    if !extra.is_empty() {
        fs_err::write(config_dir.join("01-extra.yaml"), extra).expect("write extra config");
    }
    (dir, config_dir, state_dir, logdir)
}

fn spawn(
    master_config: &std::path::Path,
    config_dir: &std::path::Path,
    state_dir: &std::path::Path,
    [port, api_port]: [u16; 2],
    flags: &[&str],
    log_file: &std::path::Path,
) -> Child {
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .expect("open the sidecar log");
    Command::new(bin("saltpeter"))
        .arg("-c")
        .arg(config_dir)
        .arg("--salt-master-config")
        .arg(master_config)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["-w", &port.to_string(), "--response-deadline", "5"])
        .args(["-a", "--api-bind", "127.0.0.1", "-p", &api_port.to_string()])
        .args(flags)
        .env("RUST_LOG", "info,saltpeter=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.into_parts().0)
        .spawn()
        .expect("start saltpeter")
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
