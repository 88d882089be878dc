//! The event bus subscriber: one reader task per master connection, fanning events out to any
//! number of [`Subscription`]s.
//!
//! The reader never waits for a consumer. Fan-out is a bounded `tokio::sync::broadcast` ring: a
//! consumer that falls more than `capacity` items behind loses the oldest ones and is told so with
//! [`BusItem::Lagged`] carrying how many it missed; everyone else, and the reader, carry on. When
//! the master goes away (EOF, error) the reader says [`BusItem::Disconnected`], reconnects with
//! backoff (100 ms doubling to 5 s), re-detects the framing, and says [`BusItem::Reconnected`].
//! The bus has no history: events fired in the gap are lost, and consumers that care reconcile
//! (for jobs, `jobs.lookup_jid`). A malformed frame or event is logged and skipped.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::config::IpcEndpoint;
use super::event::Event;
use super::frame::{FrameDecoder, Framing};
use super::ipc::{IpcError, IpcStream};

/// Fan-out ring size: how far a consumer may fall behind before it gets `Lagged`.
pub const DEFAULT_CAPACITY: usize = 4096;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum BusItem {
    /// An event from the master.
    Event(Arc<Event>),
    /// This subscriber was too slow and missed this many items (events or notices).
    Lagged(u64),
    /// The connection to the master was lost; events fired until `Reconnected` are lost.
    Disconnected,
    /// Connected again, with the framing detected on the new connection (if bytes arrived yet).
    Reconnected,
}

/// The state of the connection to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Down,
    /// Connected. `live` once a first byte arrived: then the master has registered us.
    Up {
        live: bool,
        framing: Option<Framing>,
    },
}

/// A handle to the event bus reader. Clones share one connection; the reader stops when the
/// last handle is dropped (subscriptions then end).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<BusItem>,
    link: watch::Receiver<Link>,
    endpoint: IpcEndpoint,
    _stop: DropGuard,
}

impl EventBus {
    /// Connects to the master's event publisher and starts the reader task. The first connection
    /// must succeed, so that a missing socket or a permission problem is reported at once.
    pub async fn connect(endpoint: IpcEndpoint) -> Result<Self, IpcError> {
        Self::with_capacity(endpoint, DEFAULT_CAPACITY).await
    }

    /// Like [`connect`](Self::connect) with a chosen fan-out capacity.
    pub async fn with_capacity(endpoint: IpcEndpoint, capacity: usize) -> Result<Self, IpcError> {
        let stream = IpcStream::connect(&endpoint).await?;
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (link_tx, link) = watch::channel(Link::Up { live: false, framing: None });
        let stop = CancellationToken::new();
        let reader = Reader { endpoint: endpoint.clone(), tx: tx.clone(), link: link_tx };
        tokio::spawn(reader.run(stream, stop.clone()));
        Ok(Self { inner: Arc::new(Inner { tx, link, endpoint, _stop: stop.drop_guard() }) })
    }

    /// A new subscription; it receives everything the reader gets from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.inner.tx.subscribe() }
    }

    /// The connection state, to watch.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.inner.link.clone()
    }

    /// The socket this bus reads.
    pub fn endpoint(&self) -> &IpcEndpoint {
        &self.inner.endpoint
    }

    /// Waits until the reader is connected, up to `timeout`. True if it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut link = self.link();
        let up = link.wait_for(|l| matches!(l, Link::Up { .. }));
        matches!(tokio::time::timeout(timeout, up).await, Ok(Ok(_)))
    }
}

/// One consumer's view of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<BusItem>,
}

impl Subscription {
    /// The next item; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusItem> {
        match self.rx.recv().await {
            Ok(item) => Some(item),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(BusItem::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event, skipping notices. `None` once the bus is gone.
    pub async fn next_event(&mut self) -> Option<Arc<Event>> {
        loop {
            if let BusItem::Event(e) = self.recv().await? {
                return Some(e);
            }
        }
    }
}

struct Reader {
    endpoint: IpcEndpoint,
    tx: broadcast::Sender<BusItem>,
    link: watch::Sender<Link>,
}

impl Reader {
    async fn run(self, first: IpcStream, stop: CancellationToken) {
        let mut stream = Some(first);
        let mut backoff = BACKOFF_START;
        loop {
            let conn = match stream.take() {
                Some(s) => s,
                None => {
                    let connected = tokio::select! {
                        () = stop.cancelled() => return,
                        c = IpcStream::connect(&self.endpoint) => c,
                    };
                    match connected {
                        Ok(s) => {
                            info!(endpoint = %self.endpoint, "Reconnected to the Salt event bus.");
                            backoff = BACKOFF_START;
                            let _ = self.tx.send(BusItem::Reconnected);
                            s
                        }
                        Err(e) => {
                            debug!(endpoint = %self.endpoint, error = %e, ?backoff, "Event bus still down.");
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            };
            self.link.send_replace(Link::Up { live: false, framing: None });
            let why = tokio::select! {
                () = stop.cancelled() => return,
                why = self.read(conn) => why,
            };
            warn!(endpoint = %self.endpoint, reason = %why, "Lost the Salt event bus; reconnecting.");
            self.link.send_replace(Link::Down);
            let _ = self.tx.send(BusItem::Disconnected);
        }
    }

    /// Reads one connection until it ends; returns why it ended.
    async fn read(&self, mut conn: IpcStream) -> String {
        let mut decoder = FrameDecoder::new();
        loop {
            let buf = decoder.buffer_mut();
            buf.reserve(64 * 1024);
            match conn.read_buf(buf).await {
                Ok(0) => return "end of stream (master stopped?)".to_owned(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
            loop {
                match decoder.next_event() {
                    // No subscriber is not an error: the bus keeps reading.
                    Ok(Some(Ok(event))) => {
                        let _ = self.tx.send(BusItem::Event(Arc::new(event)));
                    }
                    Ok(Some(Err(bad))) => warn!(error = %bad, "Skipped a bad event."),
                    Ok(None) => break,
                    Err(desync) => return desync.to_string(),
                }
            }
            let framing = decoder.framing();
            self.link.send_if_modified(|l| {
                let now = Link::Up { live: true, framing };
                let changed = *l != now;
                *l = now;
                changed
            });
        }
    }
}
