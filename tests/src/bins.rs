//! The workspace's binaries for tests of another package. `env!("CARGO_BIN_EXE_..")` only works
//! inside a binary's own package, so we have cargo bring it up to date (once per test process, a
//! no-op when it is fresh) in the target directory this test binary was built in.
//!
//! We ask for it the way `cargo test --workspace` builds it: as the binary an integration test of
//! its own package needs. `cargo build -p <package>` would resolve the dependencies' features
//! without the workspace's dev-dependencies (tokio's `test-util`, …) and so compile the binary and
//! most of its dependencies a second time, minutes on CI's 2 cores, right after the test build.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// An integration test of the package that holds each binary of the workspace: building it
/// builds the binary, with the features `cargo test --workspace` gives it.
fn test_of(bin: &str) -> &str {
    match bin {
        "saltpeter" => "check_cli",
        "saltpeter-agent" => "agent",
        other => panic!("no integration test known to build the binary {other}"),
    }
}

/// `<target>/<profile>`: test binaries live in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let dir = exe.parent().expect("a binary in a directory");
    // Test binaries live in `deps/`; this crate's own binaries (benchmarks) beside it.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("a test binary under <target>/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of the workspace binary `name` (e.g. `saltpeter`, `saltpeter-agent`), built with
/// `cargo test --workspace --no-run --test <a test of its package>` the first time it is asked
/// for in this process.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let profile = profile_dir();
    let target = profile.parent().expect("a target directory above the profile directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--workspace", "--no-run", "--quiet", "--test", test_of(name)])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(crate::repo_root());
    if profile.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
    assert!(status.success(), "cargo build of binary {name} failed ({status})");
    let path = profile.join(name);
    assert!(path.is_file(), "cargo built {name} but {} does not exist", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}
