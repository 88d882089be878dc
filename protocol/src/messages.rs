//! The two closed sets of messages: [`AgentMessage`] (agent → sidecar) and [`ServerMessage`]
//! (sidecar → agent). Field names are the original wrapper's wherever it had the field; every
//! field added since is optional on the wire (`Option`, skipped when absent), so the original
//! wrapper's frames parse, and ours stay readable by the original server.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    DispatchId, Encoding, JobInstance, JobName, LastSeq, MachineId, OutputData, RunKey, Seq,
    Stream, Timestamp, Token,
};

/// Everything an agent sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Since version 0. The first message on every connection; answered by `ack{connect}`.
    Connect(Connect),
    /// Since version 0. The command started; answered by `ack{start}`.
    Start(Start),
    /// Since version 0. Every 5 s per run while its result is not acknowledged. No answer.
    Heartbeat(Heartbeat),
    /// Since version 0. A chunk of one stream; answered by `ack{output, seq}`.
    Output(Output),
    /// Since version 0. The run's result; answered by `ack{complete, seq}` once recorded.
    Complete(Complete),
    /// Since version 0. The agent failed outside the command (the sidecar records 255).
    Error(AgentError),
    /// Since version 0. The agent received a `kill` and is stopping the command.
    Killed(Killed),
    /// Since version 0. "Which of my messages do you hold?"; answered by `sync_response`.
    SyncRequest(SyncRequest),
    /// Since version 1. A manifest entry is armed and will start at its scheduled instant.
    Armed(Armed),
}

/// The hello. In the original (version 0) it names the one run the wrapper was started for;
/// since version 1 it also says who is speaking, and may instead name a dispatch whose runs
/// the sidecar then sends in a `manifest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    #[serde(flatten)]
    pub target: HelloTarget,
    pub machine: MachineId,
    /// The agent's clock when it sent this: the sidecar derives the minion's skew from it.
    pub timestamp: Timestamp,
    /// Since version 1; absent means the original wrapper (version 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Since version 1: the agent's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Since version 1: the secret from `SP_TOKEN` / the URL, or the dispatch's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

/// What a connection is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HelloTarget {
    /// Since version 0: the single run named by the `SP_*` environment.
    Run { job_name: JobName, job_instance: JobInstance },
    /// Since version 1: a coalesced dispatch; the sidecar answers with its `manifest`.
    Dispatch { dispatch: DispatchId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    /// The shell's pid, which is also the job's process group id.
    pub pid: u32,
    /// The agent's version (the original wrapper sends its package version here).
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    /// The original server defaults a missing stream to stdout; so do we.
    #[serde(default)]
    pub stream: Stream,
    pub data: String,
    /// Since version 1; absent means `data` is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    pub seq: Seq,
}

impl Output {
    pub fn new(run: RunKey, stream: Stream, seq: Seq, bytes: &[u8]) -> Self {
        let OutputData { data, encoding } = OutputData::from_bytes(bytes);
        Self { run, timestamp: Timestamp::now(), stream, data, encoding, seq }
    }

    pub fn payload(&self) -> OutputData {
        OutputData { data: self.data.clone(), encoding: self.encoding }
    }
}

/// Why a run ended, beside its `retcode`. Since version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The command exited by itself (`retcode` is its status, or 128+N for signal N).
    Exited,
    /// Stopped after a `kill` or a local `saltpeter-agent kill` (143).
    Killed,
    /// Stopped after its timeout (124).
    Timeout,
    /// Another run of the job held the overlap lock (254).
    Overlap,
    /// The command could not be started (254).
    StartFailed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    /// Signed: the original wrapper reports a command killed by signal N as `-N`.
    pub retcode: i32,
    /// The number after the run's last `output`; the original wrapper always sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// Since version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// Since version 1: output bytes dropped from the middle because the spool was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    pub last_acked_seq: LastSeq,
    pub next_seq: Seq,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    pub dispatch: DispatchId,
    /// The instant the command will start, by the agent's clock.
    pub scheduled: Timestamp,
}

/// Everything a sidecar sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Since version 0.
    Ack(Ack),
    /// Since version 0. A gap in a run's sequence: resend from `expected_seq`.
    Nack(Nack),
    /// Since version 0.
    SyncResponse(SyncResponse),
    /// Since version 0. Stop the run: SIGTERM to its group, SIGKILL 5 s later.
    Kill(Kill),
    /// Since version 0. The original sends `JOB_NOT_FOUND` when it forgot the run.
    Error(ServerError),
    /// Since version 1. The runs of a dispatch for this minion, answering its `connect`.
    Manifest(Manifest),
}

/// The run fields are absent in the original server's acks: on a connection that carries one
/// run they mean that run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ack_type: AckType,
    /// For `output` and `complete`: every message of the run up to this number is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<JobName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_instance: Option<JobInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineId>,
    /// Since version 1, in `ack{connect}`: the sidecar's protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckType {
    Connect,
    Start,
    Output,
    Complete,
    /// Since version 1.
    Armed,
    /// A kind this build does not know; ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub nack_type: NackType,
    pub expected_seq: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_seq: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_instance: Option<JobInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackType {
    OutOfOrder,
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// `-1`: the sidecar holds nothing of this run.
    pub last_seq: LastSeq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_instance: Option<JobInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    #[serde(flatten)]
    pub run: RunKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// Since version 1; absent means a user's kill (143).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<KillReason>,
}

/// Why the sidecar stops a run, which decides the code the agent reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// 143.
    User,
    /// 124: the sidecar enforces the job's timeout itself.
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ServerErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_instance: Option<JobInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerErrorCode {
    /// Since version 0: the sidecar does not know the run (the agent stops resending it).
    JobNotFound,
    /// Since version 1: the token is missing or wrong (the agent retries, then gives up).
    Unauthorized,
    /// A code this build does not know.
    #[serde(other)]
    Unknown,
}

/// Since version 1: the answer to a `connect` naming a dispatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub dispatch: DispatchId,
    pub machine: MachineId,
    pub runs: Vec<ManifestEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

/// One run of a dispatch: what the `SP_*` environment says for a single run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub job_name: JobName,
    pub job_instance: JobInstance,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whole seconds on the wire; absent or 0 means none.
    #[serde(default, with = "secs", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// When to start, by the agent's clock; absent means at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Timestamp>,
    /// Absent means overlap allowed, as `SP_ALLOW_OVERLAP` unset.
    #[serde(default = "yes")]
    pub allow_overlap: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_interval_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// `Option<Duration>` as whole seconds, `0` read as none.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.filter(|s| *s > 0).map(Duration::from_secs))
    }
}
