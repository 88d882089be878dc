//! The original Saltpeter (PyPI `saltpeter==0.9.30`) against the same lab, run as its docs say:
//! `saltpeter -c <config dir>` on the master (its `LocalClient` finds the lab's master config
//! through `SALT_MASTER_CONFIG`), its Python wrapper as `wrapper_path` on the minions. It lives
//! in the lab's venv, which `scripts/saltlab venv` builds idempotently: Salt, then
//! `pip install --no-deps saltpeter==0.9.30` plus its real dependencies (`crontab`,
//! `websockets`; `pyyaml` and `aiohttp` come with Salt; the search-engine clients are only
//! imported when configured). `scripts/original-saltpeter` does the same by hand.
//!
//! Its results are read from its own records: the per-job log files `<logdir>/<job>.log`
//! (it keeps no other state), one `########## <minion> from <instance>` block per result.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use saltpeter_tests::Lab;

/// The environment entry that marks every process of the original scheduler (for `procs`).
pub(crate) const MARKER: &str = "SALTPETER_BENCH_ORIGINAL";

pub(crate) struct Original {
    child: Child,
    pub(crate) dir: PathBuf,
    pub(crate) logdir: PathBuf,
    pub(crate) marker: String,
}

/// One minion's result of one firing, as the original logged it.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) instance: String,
    pub(crate) minion: String,
    pub(crate) retcode: i32,
    pub(crate) output: String,
}

impl Original {
    /// Starts the original with `jobs` (YAML, a map of job name to job) against `lab`.
    pub(crate) fn start(lab: &Lab, jobs: &str) -> anyhow::Result<Original> {
        let dir = tempfile::Builder::new().prefix("original-").tempdir()?.keep();
        let conf = dir.join("conf");
        let logdir = dir.join("logs");
        fs_err::create_dir_all(&conf)?;
        fs_err::create_dir_all(&logdir)?;
        let shim = wrapper_shim(lab, &dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let settings = format!(
            "saltpeter_config:\n  logdir: {}\n  machines_ws_bind_addr: 127.0.0.1\n  machines_ws_port: {port}\n  default_saltpeter_server_host: 127.0.0.1\n  default_wrapper_path: {}\n  default_wrapper_logdir: {}\n",
            logdir.display(),
            shim.display(),
            dir.join("wrapper-logs").display()
        );
        fs_err::write(conf.join("settings.yaml"), settings)?;
        fs_err::write(conf.join("jobs.yaml"), jobs)?;
        let out = fs_err::File::create(dir.join("original.log"))?;
        let marker = format!("{MARKER}={}", dir.display());
        let child = Command::new(lab.venv.join("bin/saltpeter"))
            .arg("-c")
            .arg(&conf)
            .env("SALT_MASTER_CONFIG", &lab.master_config)
            .env(MARKER, &dir)
            // `saltlab down` stops the lab's tools too, should the bench die without dropping us.
            .env("SALTLAB_NODE", format!("{}::tool", lab.dir.display()))
            .env("PYTHONUNBUFFERED", "1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?.into_parts().0)
            .stderr(out.into_parts().0)
            .spawn()
            .context("start the original saltpeter of the lab's venv")?;
        Ok(Original { child, dir, logdir, marker })
    }

    /// The original's own console output so far.
    pub(crate) fn console(&self) -> String {
        fs_err::read_to_string(self.dir.join("original.log")).unwrap_or_default()
    }

    /// Every result the original logged for the jobs whose names start with `prefix`.
    pub(crate) fn results(&self, prefix: &str) -> Vec<Logged> {
        let Ok(dir) = fs_err::read_dir(&self.logdir) else { return Vec::new() };
        let mut all = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(".log") {
                let text = fs_err::read_to_string(entry.path()).unwrap_or_default();
                all.extend(parse_log(&text));
            }
        }
        all
    }

    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Original {
    fn drop(&mut self) {
        // Its run processes and endpoints are children in its process group.
        let group = format!("-{}", self.child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ =
                Command::new("kill").args([signal, "--", &group]).stderr(Stdio::null()).status();
        }
        let _ = self.child.wait();
    }
}

/// The wrapper script the minions run: the package's `wrapper.py` with the lab venv's Python.
/// The lab's minions share one host, so it gives each the identity and files it would have on
/// a host of its own: `SP_MACHINE_ID` (the original never sends it; the wrapper would use the
/// host's FQDN, the same for all three), its own overlap lock file and wrapper log directory
/// (by default `/tmp/sp_wrapper_<job>.lock`, which three minions on one host would fight over).
fn wrapper_shim(lab: &Lab, dir: &Path) -> anyhow::Result<PathBuf> {
    let python = lab.venv.join("bin/python");
    let out = Command::new(&python)
        .args(["-c", "import saltpeter.wrapper as w, saltpeter.version as v; print(w.__file__); print(v.__version__)"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let (Some(wrapper), Some(version)) = (lines.next(), lines.next()) else {
        anyhow::bail!(
            "the lab venv {} has no saltpeter package: {}",
            lab.venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    anyhow::ensure!(version.trim() == "0.9.30", "the lab venv has saltpeter {version}, not 0.9.30");
    let shim = dir.join("sp_wrapper.sh");
    let script = format!(
        "#!/bin/sh\nnode=\"${{SALTLAB_NODE##*::}}\"\nexport SP_MACHINE_ID=\"$node\"\nexport SP_LOCKFILE=\"{dir}/locks/$node/sp_wrapper_$SP_JOB_NAME.lock\"\nexport SP_WRAPPER_LOGDIR=\"{dir}/wrapper-logs/$node\"\nexec {python} {wrapper} \"$@\"\n",
        dir = dir.display(),
        python = python.display(),
    );
    fs_err::write(&shim, script)?;
    fs_err::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(shim)
}

/// The result blocks of one job log:
/// `########## <minion> from <instance> ####` / `**** Exit Code N ****` / output /
/// `####### END <minion> from <instance> at <time> ####`.
fn parse_log(text: &str) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(head) = line.strip_prefix("########## ") else { continue };
        let mut words = head.split_whitespace();
        let (Some(minion), Some("from"), Some(instance)) =
            (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(code) = lines.next().and_then(|l| {
            l.strip_prefix("**** Exit Code ")?.split_whitespace().next()?.parse().ok()
        }) else {
            continue;
        };
        let mut output = String::new();
        for l in lines.by_ref() {
            if l.starts_with("####### END ") {
                break;
            }
            output.push_str(l);
            output.push('\n');
        }
        out.push(Logged {
            instance: instance.to_owned(),
            minion: minion.to_owned(),
            retcode: code,
            output,
        });
    }
    out
}
