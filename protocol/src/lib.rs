//! Messages between `saltpeter-agent` (on each minion) and the sidecar (on the Salt master),
//! their version, and the exit codes both sides agree on. Serde only: no I/O lives here.
#![forbid(unsafe_code)]

/// The version of the agent⇄sidecar protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
