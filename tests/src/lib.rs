//! Helpers for Saltpeter's end-to-end tests: a real Salt master and minions per test binary (or per
//! test, when it must stop them), the workspace's binaries, and polling with a deadline instead of
//! sleeping. The lab itself is `scripts/saltlab`; this crate only drives it.

mod bins;
mod lab;
mod paths;
mod sidecar;
mod wait;

pub use bins::bin;
pub use lab::{Lab, LabConfig};
pub use paths::{repo_root, tool_venv, venv_python};
pub use sidecar::{MinionResult, RunRecord, Sidecar};
pub use wait::wait_until;

/// A job's YAML that fires every `every` seconds, with `body` (one `key: value` a line) added.
pub fn job_every(name: &str, every: u32, body: &str) -> String {
    let mut yaml = format!(
        "{name}:\n  sec: '*/{every}'\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n"
    );
    for line in body.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}
