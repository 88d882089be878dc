//! The agent side of the sidecar: the WebSocket server agents connect to (any path, as the
//! original; the original Python wrapper works unchanged), and the [`Registry`] of tokens and live
//! sessions that it shares with the run engine. A task per connection (`session`).

mod registry;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub use registry::{ManifestRefused, Registry, RunMinion};

use crate::runs::RunsHandle;
use crate::store::StoreHandle;

/// Connections served at once; past it new ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 20_000;
/// Each connection's WebSocket read buffer: also the most read from the socket at once.
const READ_BUFFER: usize = 2 * 1024;

/// Counts of what agents got wrong, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub bad_messages: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> (u64, u64) {
        (self.bad_messages.load(Ordering::Relaxed), self.rejected.load(Ordering::Relaxed))
    }
}

/// What every session needs.
pub struct Shared {
    pub registry: Registry,
    pub store: StoreHandle,
    pub runs: RunsHandle,
    pub counters: Arc<Counters>,
    /// Output kept per minion and run.
    pub output_cap: u64,
}

/// Accepts agent connections on `listener` until `cancel`.
pub async fn serve(
    listener: impl Into<crate::tls::Listener>,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let crate::tls::Listener { tcp: listener, acceptor } = listener.into();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Cannot accept an agent connection.");
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        let shared = Arc::clone(&shared);
        let (cancel, acceptor) = (cancel.clone(), acceptor.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let tcp = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => return debug!(%peer, error = %e, "A TLS handshake failed."),
            };
            let mut url_token = None;
            // The error type is tungstenite's; it is only built when a handshake is refused.
            #[allow(clippy::result_large_err)]
            let capture = |request: &Request, response: Response| {
                url_token = request.uri().query().and_then(token_from_query);
                Ok(response)
            };
            // Small buffers: 10,000 idle sessions are the common case. The read buffer is
            // allocated per connection (a frame larger than it grows it for that frame);
            // nothing is batched on write (every message is flushed at once anyway).
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(0)
                .max_message_size(Some(2 * saltpeter_protocol::MAX_FRAME_BYTES))
                .max_frame_size(Some(2 * saltpeter_protocol::MAX_FRAME_BYTES));
            let ws =
                match tokio_tungstenite::accept_hdr_async_with_config(tcp, capture, Some(config))
                    .await
                {
                    Ok(ws) => ws,
                    Err(e) => {
                        debug!(%peer, error = %e, "A WebSocket handshake failed.");
                        return;
                    }
                };
            tokio::select! {
                () = session::serve(ws, peer, url_token, shared) => {}
                () = cancel.cancelled() => {}
            }
        });
    }
}

/// `token=...` from a URL query.
fn token_from_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(str::to_owned)
}
