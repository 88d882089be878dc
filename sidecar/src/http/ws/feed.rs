//! What `/ws` connections share, so 200 browsers watching one run cost about as much as one: a
//! feed per watched run (one task reading its new output and status from the store every tick,
//! serializing each message once and broadcasting it), and the overview, read at most once a
//! tick for every connection.
//!
//! The broadcast channel is bounded: a connection that falls behind misses frames (`Lagged`)
//! instead of holding them, and catches up from the store on its own, a bounded slice a tick,
//! while the others keep their pace. A feed ends when nobody watches its run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use super::{OUTPUT_BUDGET, ServerMessage, TICK, pieces, read_output};
use crate::http::State;
use crate::http::api::{ResultDto, RunDto};
use crate::store::RunFilter;

/// Frames a feed keeps for connections that are a little behind (64 KiB at most each: 8 MiB,
/// 8 s of a run writing 1 MB/s).
const FRAMES: usize = 128;

/// A message of a feed, serialized once.
#[derive(Clone, Debug)]
pub(super) enum Frame {
    /// Output of `minion` from `offset` to `next`.
    Output { minion: String, offset: u64, next: u64, text: Utf8Bytes },
    /// The run's status and per-minion results.
    Run { text: Utf8Bytes },
}

/// The runs in flight and the newest run, as `/ws` announces them.
pub(super) type Overview = (Vec<String>, Option<String>);

/// Connections catching up from the store at once (each reads up to `OUTPUT_BUDGET` a tick):
/// bounds the memory and time a crowd of lagging browsers costs.
const CATCHING_UP: usize = 4;

pub(crate) struct Hub {
    feeds: Mutex<HashMap<String, broadcast::Sender<Frame>>>,
    overview: tokio::sync::Mutex<Option<(Instant, Arc<Overview>)>>,
    pub(super) catching_up: tokio::sync::Semaphore,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            feeds: Mutex::default(),
            overview: tokio::sync::Mutex::default(),
            catching_up: tokio::sync::Semaphore::new(CATCHING_UP),
        }
    }
}

impl Hub {
    /// Frames of `instance` from now on; starts its feed if nobody watches it yet.
    pub(super) fn watch(
        self: &Arc<Self>,
        state: &Arc<State>,
        instance: &str,
    ) -> broadcast::Receiver<Frame> {
        let mut feeds = self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = feeds.get(instance) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(FRAMES);
        feeds.insert(instance.to_owned(), tx.clone());
        drop(feeds);
        tokio::spawn(feed(Arc::clone(state), Arc::clone(self), instance.to_owned(), tx));
        rx
    }

    /// Ends `instance`'s feed if nobody receives it; answers whether it ended.
    fn end_if_unwatched(&self, instance: &str, tx: &broadcast::Sender<Frame>) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tx.receiver_count() > 0 {
            return false;
        }
        feeds.remove(instance);
        true
    }

    /// The overview, read from the store at most once a tick for all connections.
    pub(super) async fn overview(&self, state: &State) -> Option<Arc<Overview>> {
        let mut cached = self.overview.lock().await;
        if let Some((at, overview)) = cached.as_ref()
            && at.elapsed() < TICK / 2
        {
            return Some(Arc::clone(overview));
        }
        let at = Instant::now();
        let open = state.store.open_runs().await.ok()?;
        let active: Vec<String> = open.into_iter().map(|r| r.instance).collect();
        let latest = state
            .store
            .runs(RunFilter { limit: 1, ..RunFilter::default() })
            .await
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|r| format!("{}:{}", r.instance, r.status.as_str()));
        let overview = Arc::new((active, latest));
        *cached = Some((at, Arc::clone(&overview)));
        Some(overview)
    }
}

fn text(message: &ServerMessage<'_>) -> Option<Utf8Bytes> {
    serde_json::to_string(message).ok().map(Utf8Bytes::from)
}

/// One run's feed: from the output there is when it starts, each tick's new output and any
/// change of status, until nobody watches.
async fn feed(state: Arc<State>, hub: Arc<Hub>, instance: String, tx: broadcast::Sender<Frame>) {
    let mut offsets: HashMap<String, u64> = HashMap::new();
    let mut started = false;
    let mut last_run: Option<String> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if hub.end_if_unwatched(&instance, &tx) {
            return;
        }
        let (Ok(Some(row)), Ok(results)) =
            (state.store.run(&instance).await, state.store.results(&instance).await)
        else {
            continue;
        };
        if !started {
            // Watchers catch up on what came before from the store themselves.
            for r in &results {
                offsets.insert(r.minion.clone(), r.output_bytes);
            }
            started = true;
        }
        let mut budget = OUTPUT_BUDGET;
        for r in &results {
            let from = offsets.get(&r.minion).copied().unwrap_or(0);
            if r.output_bytes <= from || budget == 0 {
                continue;
            }
            let Some((data, next)) =
                read_output(&state, &instance, &r.minion, from, budget, u64::MAX).await
            else {
                continue;
            };
            budget = budget.saturating_sub(next - from);
            for (piece, offset) in pieces(&data, from) {
                let end = offset + piece.len() as u64;
                let (minion, data) = (&r.minion, piece);
                let message = ServerMessage::Output { instance: &instance, minion, offset, data };
                if let Some(text) = text(&message) {
                    let _ =
                        tx.send(Frame::Output { minion: minion.clone(), offset, next: end, text });
                }
            }
            offsets.insert(r.minion.clone(), next);
        }
        let mut dto = RunDto::from(row);
        dto.results = Some(results.into_iter().map(ResultDto::from).collect());
        if let Some(text) = text(&ServerMessage::Run { run: &dto })
            && last_run.as_deref() != Some(text.as_str())
        {
            last_run = Some(text.as_str().to_owned());
            let _ = tx.send(Frame::Run { text });
        }
    }
}
