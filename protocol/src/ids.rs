//! Newtypes for the names and numbers that identify a run on the wire, so a job name is never
//! passed where an instance id is expected.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// A job's name, as in the job file (`SP_JOB_NAME`).
    JobName
);
string_id!(
    /// One firing of a job (`SP_JOB_INSTANCE`); unique per job, shared by all its minions.
    JobInstance
);
string_id!(
    /// The minion a run executes on (`SP_MACHINE_ID`, by default the Salt minion id).
    MachineId
);
string_id!(
    /// One coalesced dispatch: a Salt publish that starts one agent per minion for many runs.
    /// Since version 1.
    DispatchId
);

/// A per-run or per-dispatch secret the agent proves itself with. Since version 1. Its
/// `Debug` form is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The identity every run-scoped message carries. Many runs can share one connection
/// (coalesced dispatch), so this, not the connection, says which run a message is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub job_name: JobName,
    pub job_instance: JobInstance,
    pub machine: MachineId,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.job_name, self.job_instance, self.machine)
    }
}

/// The position of an `output` or `complete` message in its run's stream. Numbered from 0 per
/// run (not per connection); `complete` takes the number after the last `output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The last sequence number one side holds, or none yet; on the wire `-1` means none, as the
/// original wrapper and server write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LastSeq(pub Option<Seq>);

impl Serialize for LastSeq {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(seq) => s.serialize_u64(seq.0),
            None => s.serialize_i64(-1),
        }
    }
}

impl<'de> Deserialize<'de> for LastSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Ok(LastSeq(u64::try_from(n).ok().map(Seq)))
    }
}
