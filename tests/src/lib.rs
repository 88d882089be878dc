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
pub use paths::{repo_root, venv_python};
pub use sidecar::{MinionResult, RunRecord, Sidecar};
pub use wait::wait_until;
