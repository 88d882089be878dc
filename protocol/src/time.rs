//! The `timestamp` every message carries: UTC, written as Python's `isoformat()` writes it
//! (`2025-11-04T10:00:00.123456+00:00`), because the original server parses it with
//! `datetime.fromisoformat`, which rejects a `Z` suffix before Python 3.11.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// An instant on the sender's clock. In a `connect` it is how the sidecar learns the agent's
/// clock (and so its skew).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now())
    }

    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Self(t.with_timezone(&Utc)));
        }
        // A naive `isoformat()` (no offset) is taken as UTC, as the original server does.
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| Self(t.and_utc()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text)
            .ok_or_else(|| de::Error::custom(format!("`{text}` is not an ISO 8601 timestamp")))
    }
}
