//! A real Salt master and minions for a test, run by `scripts/saltlab` as local processes with
//! their own directory and free ports, so that several labs can run at once on one machine.
//!
//! Every lab is started with `--watch-pid <this process>`: a small watchdog process tears it down
//! when the test binary exits, panics or is killed. `Drop` tears a `Lab::start` lab down at once.

mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, bail};

pub use config::LabConfig;

use crate::paths::{salt_version_wanted, saltlab};

/// How long `saltlab up` may wait for the minions: long, because four engineers' labs and builds
/// can share two cores.
const UP_TIMEOUT_SECS: &str = "300";

/// A running lab. The fields are what a client of the master needs.
#[derive(Debug)]
pub struct Lab {
    /// The lab's directory: configs, keys, caches and logs of every node (`logs/<node>.log`).
    pub dir: PathBuf,
    /// The master's main config file (`salt -c` takes its directory).
    pub master_config: PathBuf,
    /// The master's `sock_dir`, which holds the event bus sockets.
    pub sock_dir: PathBuf,
    /// The master's `cachedir`.
    pub cachedir: PathBuf,
    /// The key a local client of this user presents to the master (`.<user>_key`).
    pub root_key: PathBuf,
    /// The master's request port on 127.0.0.1.
    pub ret_port: u16,
    /// The master's publish port on 127.0.0.1.
    pub publish_port: u16,
    /// `minion-1`, `minion-2`, ...
    pub minions: Vec<String>,
    /// The Python venv with Salt in it.
    pub venv: PathBuf,
    /// The exact Salt version running, e.g. `3007.17`.
    pub salt_version: String,
}

impl Lab {
    /// Starts a lab and returns once every minion answers `test.ping`. It is torn down on drop,
    /// and by its watchdog if this process dies first.
    pub fn start(cfg: LabConfig) -> anyhow::Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix("saltlab-")
            .tempdir()
            .context("cannot create a lab directory")?
            .keep();
        let mut cmd = saltlab();
        cmd.arg("up").arg("--dir").arg(&dir).args(cfg.prepare(&dir)?);
        cmd.args(["--watch-pid", &std::process::id().to_string(), "--purge-on-exit"]);
        cmd.args(["--timeout", UP_TIMEOUT_SECS]);
        if let Some(version) = salt_version_wanted() {
            cmd.args(["--salt-version", &version]);
        }
        let started = Instant::now();
        let out = cmd.output().context("cannot run scripts/saltlab up")?;
        if !out.status.success() {
            bail!(
                "scripts/saltlab up --dir {} failed ({}):\n{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let lab = Lab::describe(&dir)?;
        // Shown with a failing test's output: how long the lab took is often the clue.
        eprintln!(
            "salt lab {} (salt {}, {} minions) up in {:.1?}",
            dir.display(),
            lab.salt_version,
            lab.minions.len(),
            started.elapsed()
        );
        Ok(lab)
    }

    /// The lab shared by all tests of this binary (the default `LabConfig`), started on first
    /// use and torn down by its watchdog when the process exits. Tests that stop the master or a
    /// minion must start their own lab instead.
    pub fn shared() -> &'static Lab {
        static SHARED: OnceLock<Result<Lab, String>> = OnceLock::new();
        let lab =
            SHARED.get_or_init(|| Lab::start(LabConfig::default()).map_err(|e| format!("{e:#}")));
        match lab {
            Ok(lab) => lab,
            Err(e) => panic!("the shared Salt lab did not start: {e}"),
        }
    }

    /// Reads what `saltlab env --json` says about the lab in `dir`.
    fn describe(dir: &Path) -> anyhow::Result<Lab> {
        let out = saltlab().arg("env").arg("--dir").arg(dir).arg("--json").output()?;
        if !out.status.success() {
            bail!("scripts/saltlab env failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let env: BTreeMap<String, String> = serde_json::from_slice(&out.stdout)
            .context("saltlab env --json printed no JSON map")?;
        let var =
            |key: &str| env.get(key).cloned().with_context(|| format!("saltlab env has no {key}"));
        let port = |key: &str| -> anyhow::Result<u16> { Ok(var(key)?.parse()?) };
        Ok(Lab {
            dir: dir.to_path_buf(),
            master_config: var("SALTLAB_MASTER_CONFIG")?.into(),
            sock_dir: var("SALTLAB_SOCK_DIR")?.into(),
            cachedir: var("SALTLAB_CACHEDIR")?.into(),
            root_key: var("SALTLAB_ROOT_KEY")?.into(),
            ret_port: port("SALTLAB_RET_PORT")?,
            publish_port: port("SALTLAB_PUBLISH_PORT")?,
            minions: var("SALTLAB_MINIONS")?.split_whitespace().map(str::to_owned).collect(),
            venv: var("SALTLAB_VENV")?.into(),
            salt_version: var("SALTLAB_SALT_VERSION")?,
        })
    }

    /// Runs the real `salt` CLI against this master, e.g. `lab.salt(&["*", "test.ping"])`.
    pub fn salt(&self, args: &[&str]) -> Output {
        self.run_tool("salt", args)
    }

    /// Runs `salt-run` against this master.
    pub fn salt_run(&self, args: &[&str]) -> Output {
        self.run_tool("salt-run", args)
    }

    /// A Salt tool of the lab's venv (`salt`, `salt-run`, `salt-key`, `salt-call`, ...) with `-c`
    /// set to this lab (`salt-call` gets minion-1's config), to add arguments to and spawn.
    pub fn salt_command(&self, tool: &str) -> Command {
        let conf_dir = if tool == "salt-call" {
            self.dir.join("minion-1").join("conf")
        } else {
            self.master_config.parent().unwrap_or(&self.dir).to_path_buf()
        };
        let mut cmd = Command::new(self.venv.join("bin").join(tool));
        // `saltlab down` also stops tools that carry the lab's tag, should one outlive its test.
        let tag = format!("{}::tool", self.dir.display());
        cmd.arg("-c").arg(conf_dir).env("SALTLAB_NODE", tag);
        cmd
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> Output {
        self.salt_command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} of {}: {e}", self.venv.display()))
    }

    /// Stops the master (all its processes).
    pub fn stop_master(&self) {
        self.node("stop", "master");
    }

    /// Starts the master again and returns once every running minion answers `test.ping`.
    pub fn start_master(&self) {
        self.node("start", "master");
    }

    /// Stops one minion, e.g. `minion-2`.
    pub fn stop_minion(&self, id: &str) {
        self.node("stop", id);
    }

    /// Starts one minion again and returns once it answers `test.ping`.
    pub fn start_minion(&self, id: &str) {
        self.node("start", id);
    }

    fn node(&self, action: &str, node: &str) {
        let out = saltlab()
            .arg(action)
            .arg("--dir")
            .arg(&self.dir)
            .arg(node)
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/saltlab {action}: {e}"));
        assert!(
            out.status.success(),
            "scripts/saltlab {action} {node} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let down = saltlab()
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--grace", "1", "--purge"])
            .output();
        match down {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("saltlab down failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("cannot run saltlab down: {e}"),
        }
    }
}
