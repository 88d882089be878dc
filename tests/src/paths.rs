//! Where things are: the repository, the lab script, and the Python venv that has Salt and the
//! original Saltpeter in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (the directory holding `scripts/` and the root `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate.parent().unwrap_or(tests_crate).to_path_buf()
}

/// `scripts/saltlab`, run with the machine's `python3`.
pub(crate) fn saltlab() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("scripts").join("saltlab"));
    cmd
}

/// The Salt version the tests ask for: `SALTPETER_SALT_VERSION` (an exact version or a line such
/// as `3006.x`), or the lab script's pinned default.
pub(crate) fn salt_version_wanted() -> Option<String> {
    std::env::var("SALTPETER_SALT_VERSION").ok().filter(|v| !v.trim().is_empty())
}

/// `<venv>/bin/python` of the venv for the wanted Salt version, created by `saltlab venv` on first
/// use (that venv also has `crontab`, `websockets` and the original `saltpeter`).
pub fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let mut cmd = saltlab();
        cmd.arg("venv");
        if let Some(version) = salt_version_wanted() {
            cmd.args(["--salt-version", &version]);
        }
        let out = cmd.output().map_err(|e| format!("cannot run scripts/saltlab venv: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/saltlab venv failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match venv {
        Ok(dir) => dir.join("bin").join("python"),
        Err(e) => panic!("{e}"),
    }
}

/// The venv of one pinned test tool (`NAME==VERSION`), created once by `scripts/pytool venv`
/// beside the Salt venvs (its own, so the tool's dependencies leave Salt's alone).
pub fn tool_venv(spec: &str) -> PathBuf {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts").join("pytool"))
        .args(["venv", spec])
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/pytool venv {spec}: {e}"));
    assert!(
        out.status.success(),
        "scripts/pytool venv {spec} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
