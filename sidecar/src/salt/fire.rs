//! Firing our own events onto the master bus, where reactors and `salt-run state.event` see them.
//!
//! One frame written to the master's pull socket. Its framing changed inside every LTS series
//! (3006.26, 3007.15, 3008.2 added a length prefix) and the wrong one is dropped without a word,
//! so it is detected per connection: a small probe event goes out plain on a fresh connection and
//! we watch the bus for it; if it does not come back, the probe goes out prefixed on another.
//! When the pub socket itself is prefixed (3006.26+), prefixed is tried first. A wrong guess costs
//! one connection and nothing else. The detected framing is kept with the connection; when the
//! connection breaks (the master restarted, maybe upgraded) it is detected again.

use std::time::Duration;

use rmpv::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::{debug, info};

use super::bus::{BusItem, EventBus, Link};
use super::config::IpcEndpoint;
use super::frame::{Framing, encode_frame};
use super::ipc::{IpcError, IpcStream};

/// How long a probe event may take to show up on the bus.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Firing an event failed.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("event tag {0:?} is empty or contains a blank line")]
    BadTag(String),
    #[error("event data must be a map (Salt refuses anything else)")]
    DataNotMap,
    #[error(transparent)]
    Connect(#[from] IpcError),
    #[error("write an event to {endpoint}")]
    Write {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not tell the master's event framing: a probe fired to {endpoint} never came back \
         on the bus (is the master busy or restarting?)"
    )]
    Undetected { endpoint: String },
}

/// Writes events to the master's pull socket.
pub struct EventFirer {
    endpoint: IpcEndpoint,
    bus: EventBus,
    conn: Mutex<Option<(IpcStream, Framing)>>,
}

impl EventFirer {
    /// A firer for `endpoint` (`MasterConfig::event_pull`); `bus` watches for probes.
    pub fn new(endpoint: IpcEndpoint, bus: EventBus) -> Self {
        Self { endpoint, bus, conn: Mutex::new(None) }
    }

    /// Fires `tag` with `data` (a map). `_stamp` is added when missing, as Salt does.
    pub async fn fire(&self, tag: &str, data: Value) -> Result<Framing, FireError> {
        if tag.is_empty() || tag.contains("\n\n") {
            return Err(FireError::BadTag(tag.to_owned()));
        }
        let Value::Map(mut entries) = data else {
            return Err(FireError::DataNotMap);
        };
        if !entries.iter().any(|(k, _)| k.as_str() == Some("_stamp")) {
            let stamp = chrono::Utc::now().naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f");
            entries.push(("_stamp".into(), stamp.to_string().into()));
        }
        let data = Value::Map(entries);
        let mut guard = self.conn.lock().await;
        // Two attempts: a cached connection may have died with a master restart.
        for attempt in 0..2 {
            if guard.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                *guard = Some(self.detect().await?);
            }
            let Some((conn, framing)) = guard.as_mut() else { continue };
            let framing = *framing;
            let wire = encode_frame(tag, &data, framing);
            match conn.write_all(&wire).await {
                Ok(()) => return Ok(framing),
                Err(source) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(FireError::Write {
                            endpoint: self.endpoint.to_string(),
                            source,
                        });
                    }
                    debug!(error = %source, "Event pull connection broke; reconnecting.");
                }
            }
        }
        Err(FireError::Undetected { endpoint: self.endpoint.to_string() })
    }

    /// Finds the framing by probing; returns the connection the probe succeeded on.
    async fn detect(&self) -> Result<(IpcStream, Framing), FireError> {
        let mut sub = self.bus.subscribe();
        self.bus.wait_connected(PROBE_TIMEOUT).await;
        let pub_framing = match *self.bus.link().borrow() {
            Link::Up { framing, .. } => framing,
            Link::Down => None,
        };
        let order = if pub_framing == Some(Framing::Prefixed) {
            [Framing::Prefixed, Framing::Plain]
        } else {
            [Framing::Plain, Framing::Prefixed]
        };
        let nonce = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        for framing in order {
            let tag = format!("saltpeter/probe/{nonce}/{framing}");
            let mut conn = IpcStream::connect(&self.endpoint).await?;
            let stamp = chrono::Utc::now().naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
            let data = Value::Map(vec![("_stamp".into(), stamp.into())]);
            let wire = encode_frame(&tag, &data, framing);
            if let Err(source) = conn.write_all(&wire).await {
                return Err(FireError::Write { endpoint: self.endpoint.to_string(), source });
            }
            let seen = tokio::time::timeout(PROBE_TIMEOUT, async {
                while let Some(item) = sub.recv().await {
                    if let BusItem::Event(e) = item
                        && e.tag == tag
                    {
                        return true;
                    }
                }
                false
            })
            .await;
            if matches!(seen, Ok(true)) {
                info!(endpoint = %self.endpoint, %framing, "Detected the master's event pull framing.");
                return Ok((conn, framing));
            }
            // Dropping the connection frees a prefixed puller waiting for a bogus length.
            drop(conn);
        }
        Err(FireError::Undetected { endpoint: self.endpoint.to_string() })
    }
}
