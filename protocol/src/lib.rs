//! Messages between `saltpeter-agent` (on each minion) and the sidecar (on the Salt master),
//! their version, the exit codes both sides agree on, and the names of the `SP_*` environment
//! contract. Serde only: no I/O lives here.
//!
//! The wire format is JSON text frames over WebSocket, one message per frame, internally tagged
//! by `type`. It is a superset of the original Python wrapper's messages (protocol version 0):
//! every field that wrapper sends or expects keeps its name and meaning, so a sidecar built on
//! this crate accepts the original wrapper, and new fields are optional. `docs/protocol.md`
//! shows an example of every message.
//!
//! Versions: [`ORIGINAL_PROTOCOL_VERSION`] (0) is the Python wrapper, which never says its
//! version; [`PROTOCOL_VERSION`] (2) is this crate. A peer that sends `protocol` in its
//! `connect` speaks at least version 1. Each message documents the version it appeared in.
//! Version 2 adds binary output frames ([`OutputHeader`], [`BinaryOutput`]), used only when
//! both sides said 2 or more.
#![forbid(unsafe_code)]

mod binary;
mod env;
mod exit;
mod ids;
mod messages;
mod output;
mod status;
mod time;

pub use binary::{
    BINARY_OUTPUT, BINARY_OUTPUT_VERSION, BinaryOutput, MAX_HEADER_BYTES, OutputHeader,
};
pub use env::EnvVar;
pub use exit::ExitCode;
pub use ids::{DispatchId, JobInstance, JobName, LastSeq, MachineId, RunKey, Seq, Token};
pub use messages::{
    Ack, AckType, AgentError, AgentMessage, Armed, Complete, Connect, EndReason, Heartbeat,
    HelloTarget, Kill, KillReason, Killed, Manifest, ManifestEntry, Nack, NackType, Output,
    ServerError, ServerErrorCode, ServerMessage, Start, SyncRequest, SyncResponse,
};
pub use output::{Encoding, OutputData, Stream, utf8_boundary};
pub use status::{RunState, RunStatus};
pub use time::Timestamp;

/// The version of the agent⇄sidecar protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The version the original Python wrapper speaks; it sends no `protocol` field.
pub const ORIGINAL_PROTOCOL_VERSION: u32 = 0;

/// Why a frame could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, not an object, an unknown `type`, or a field of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Larger than the receiver accepts; see [`MAX_FRAME_BYTES`].
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// A binary frame that is not a well-formed binary output frame.
    #[error("malformed binary frame: {0}")]
    Binary(&'static str),
}

/// The largest frame either side must accept: output is split into messages well below it
/// (the original wrapper split at 500 KiB, under the 1 MiB default of Python `websockets`).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The largest raw output carried by one `output` message. Base64 grows it by 4/3 and JSON
/// escaping by at most 6x for control bytes, which is why agents send valid UTF-8 as text
/// and everything else as base64: 128 KiB stays under [`MAX_FRAME_BYTES`] either way.
pub const MAX_OUTPUT_CHUNK: usize = 128 * 1024;

impl AgentMessage {
    /// Parses one frame sent by an agent (this one or the original wrapper).
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        check_len(frame)?;
        Ok(serde_json::from_str(frame)?)
    }

    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // A message is plain data with string keys: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerMessage {
    /// Parses one frame sent by a sidecar (this one or the original server).
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        check_len(frame)?;
        Ok(serde_json::from_str(frame)?)
    }

    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // A message is plain data with string keys: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn check_len(frame: &str) -> Result<(), DecodeError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge { len: frame.len(), limit: MAX_FRAME_BYTES });
    }
    Ok(())
}
