//! `/ws`: the UI's live stream, typed JSON both ways. The browser cannot set headers on a
//! WebSocket, so the token comes as `?token=` (checked by the same middleware as every route).
//!
//! Client → server: `{"type":"watch_run","instance":I}`, `{"type":"unwatch_run"}`.
//! Server → client, every [`TICK`] while something changed:
//! `{"type":"overview","active":[instances],"latest":instance|null}` (the jobs page refetches
//! when it changes), `{"type":"run","run":RunDto}` (status and per-minion results of the watched
//! run) and `{"type":"output","instance","minion","offset","data"}` (new output, from the offset
//! the client has, as text with invalid UTF-8 replaced).
//!
//! The original UI's messages are served on the same socket until the client sends
//! `{"type":"hello"}` (ours does); see `ws_original`.
//!
//! Connections share the work (`feed`): one task per watched run reads its new output and status
//! once a tick and broadcasts each message serialized once; the overview is read once a tick for
//! all. A connection that falls behind (a slow browser) misses broadcast frames rather than
//! holding them and catches up from the store on its own, a bounded slice a tick, so it only
//! slows itself; nothing is buffered without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};

use super::api::{ResultDto, RunDto};
use super::auth::Viewer;
use super::{State, ws_original};
use feed::Frame;
pub(crate) use feed::Hub;

mod feed;
#[cfg(test)]
mod tests;

/// How often a connection looks for changes.
pub(super) const TICK: Duration = Duration::from_millis(500);
/// The most output bytes read per tick for one run, all minions together (2 MiB/s: a connection
/// that fell behind catches up with a run writing 1 MB/s).
const OUTPUT_BUDGET: u64 = 1 << 20;
/// The most output bytes in one message: a connection's write buffer grows to its largest
/// message and keeps that size, so messages stay small whatever the rate.
const PIECE: usize = 64 << 10;

/// `data` (output from `offset`) cut into pieces of at most [`PIECE`] bytes on character
/// boundaries, each with its offset.
pub(super) fn pieces(data: &str, offset: u64) -> Vec<(&str, u64)> {
    let mut out = Vec::new();
    let (mut rest, mut at) = (data, offset);
    while !rest.is_empty() {
        let mut cut = rest.len().min(PIECE);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        out.push((piece, at));
        at += piece.len() as u64;
        rest = tail;
    }
    out
}

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    /// Our UI says so first: no messages of the original protocol for this connection.
    Hello,
    WatchRun {
        instance: String,
    },
    UnwatchRun,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    Overview { active: &'a [String], latest: Option<&'a str> },
    Run { run: &'a RunDto },
    Output { instance: &'a str, minion: &'a str, offset: u64, data: &'a str },
    Error { error: String },
}

async fn upgrade(
    AxumState(state): AxumState<Arc<State>>,
    axum::Extension(hub): axum::Extension<Arc<Hub>>,
    Viewer(caller): Viewer,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| session(state, hub, caller, socket))
}

/// What the client has been sent.
#[derive(Default)]
struct Sent {
    overview: Option<Arc<feed::Overview>>,
    /// The last `run` message.
    run: Option<String>,
    /// Per minion: the next output offset.
    offsets: HashMap<String, u64>,
    /// Per minion: where the feed's last frame ended (catching up stops there, so the next
    /// frame follows on exactly).
    feed_next: HashMap<String, u64>,
    /// Whether the client is level with the feed (frames are forwarded as they come).
    synced: bool,
}

/// The watched run and its feed.
struct Watch {
    instance: String,
    frames: tokio::sync::broadcast::Receiver<Frame>,
}

async fn session(state: Arc<State>, hub: Arc<Hub>, caller: super::Caller, socket: WebSocket) {
    use tokio::sync::broadcast::error::RecvError;
    let (mut tx, mut rx) = socket.split();
    let mut watched: Option<Watch> = None;
    let mut sent = Sent::default();
    // The original UI's protocol until the client says `hello`.
    let mut original = Some(ws_original::Session::default());
    let mut ticks: u64 = 0;
    if send_value(&mut tx, &ws_original::config(&state)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = async {
            match watched.as_mut() {
                Some(w) => w.frames.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Hello) => original = None,
                    Ok(ClientMessage::WatchRun { instance }) => {
                        let frames = hub.watch(&state, &instance);
                        watched = Some(Watch { instance, frames });
                        sent = Sent { overview: sent.overview.take(), ..Sent::default() };
                        tick.reset_immediately();
                    }
                    Ok(ClientMessage::UnwatchRun) => watched = None,
                    Err(_) if original.is_some() && serde_json::from_str::<ws_original::Original>(&text).is_ok() => {
                        let (Ok(message), Some(session)) = (serde_json::from_str(&text), original.as_mut()) else { continue };
                        for answer in ws_original::handle(&state, &caller, session, message).await {
                            if send_value(&mut tx, &answer).await.is_err() { return; }
                        }
                    }
                    Err(e) => {
                        let m = ServerMessage::Error { error: format!("unknown message: {e}") };
                        if send(&mut tx, &m).await.is_err() { return; }
                    }
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            frame = frame => match frame {
                Ok(frame) => if forward(&mut tx, &mut sent, frame).await.is_err() { return },
                // Fell behind: catch up from the store on the next ticks.
                Err(RecvError::Lagged(_)) => sent.synced = false,
                Err(RecvError::Closed) => {
                    if let Some(w) = watched.as_mut() {
                        w.frames = hub.watch(&state, &w.instance);
                    }
                }
            },
            _ = tick.tick() => {
                ticks += 1;
                if let Some(session) = original.as_mut() {
                    let mut out = ws_original::follow(&state, session).await;
                    // `status` every 2 s, as the original broadcast it.
                    if ticks % 4 == 1 && let Some(status) = ws_original::status(&state).await {
                        out.push(status);
                    }
                    for message in out {
                        if send_value(&mut tx, &message).await.is_err() { return; }
                    }
                }
                if let Some(overview) = hub.overview(&state).await
                    && sent.overview.as_deref() != Some(&*overview)
                {
                    let m = ServerMessage::Overview { active: &overview.0, latest: overview.1.as_deref() };
                    if send(&mut tx, &m).await.is_err() { return; }
                    sent.overview = Some(overview);
                }
                if let Some(w) = &watched
                    && !sent.synced
                {
                    // Read a few at a time (waiting here only delays this connection); send
                    // without the turn, so a stalled browser holds nobody's.
                    let messages = {
                        let Ok(_turn) = hub.catching_up.acquire().await else { return };
                        catch_up(&state, &w.instance, &mut sent).await
                    };
                    for m in messages {
                        if tx.send(Message::Text(m.into())).await.is_err() { return; }
                    }
                }
            }
        }
    }
}

/// A feed's frame: sent as is when the client is level with it; otherwise noted, and the client
/// catches up from the store.
async fn forward(tx: &mut Tx, sent: &mut Sent, frame: Frame) -> Result<(), ()> {
    match frame {
        Frame::Output { minion, offset, next, text } => {
            let mine = sent.offsets.get(&minion).copied().unwrap_or(0);
            sent.feed_next.insert(minion.clone(), next);
            if sent.synced && offset == mine {
                tx.send(Message::Text(text)).await.map_err(|_| ())?;
                sent.offsets.insert(minion, next);
            } else if next > mine {
                sent.synced = false;
            }
        }
        Frame::Run { text } => {
            if sent.synced && sent.run.as_deref() != Some(text.as_str()) {
                sent.run = Some(text.as_str().to_owned());
                tx.send(Message::Text(text)).await.map_err(|_| ())?;
            }
        }
    }
    Ok(())
}

type Tx = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send_value(tx: &mut Tx, value: &serde_json::Value) -> Result<(), ()> {
    tx.send(Message::Text(value.to_string().into())).await.map_err(|_| ())
}

async fn send(tx: &mut Tx, message: &ServerMessage<'_>) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}

/// The messages that bring the client level with the watched run: its output the client has
/// not had, from the store (at most [`OUTPUT_BUDGET`] bytes, up to where the feed's frames
/// start), then its status when it changed. The client is level with the feed once nothing is
/// left. `sent` records them as sent.
async fn catch_up(state: &State, instance: &str, sent: &mut Sent) -> Vec<String> {
    let mut messages = Vec::new();
    let (Ok(Some(row)), Ok(results)) =
        (state.store.run(instance).await, state.store.results(instance).await)
    else {
        return messages;
    };
    // New output first, so the run's final status never arrives before its last lines.
    let mut budget = OUTPUT_BUDGET;
    let mut level = true;
    for r in &results {
        let from = sent.offsets.get(&r.minion).copied().unwrap_or(0);
        let upto = sent.feed_next.get(&r.minion).copied().unwrap_or(r.output_bytes);
        if upto <= from {
            continue;
        }
        let read = read_output(state, instance, &r.minion, from, budget.min(upto - from), upto);
        let Some((data, next)) = read.await else {
            level = false;
            continue;
        };
        budget = budget.saturating_sub(next - from);
        if next > from {
            for (piece, offset) in pieces(&data, from) {
                let m = ServerMessage::Output { instance, minion: &r.minion, offset, data: piece };
                messages.extend(serde_json::to_string(&m).ok());
            }
            sent.offsets.insert(r.minion.clone(), next);
        }
        level &= next >= upto;
    }
    let mut dto = RunDto::from(row);
    dto.results = Some(results.into_iter().map(ResultDto::from).collect());
    let json = serde_json::to_string(&ServerMessage::Run { run: &dto }).unwrap_or_default();
    if sent.run.as_deref() != Some(json.as_str()) {
        sent.run = Some(json.clone());
        messages.push(json);
    }
    sent.synced = level;
    messages
}

/// A minion's output from `from`, about `limit` bytes (whole stored chunks) but not past `upto`,
/// as text ending on a character boundary, and the offset after it; none when the store cannot
/// be read.
pub(super) async fn read_output(
    state: &State,
    instance: &str,
    minion: &str,
    from: u64,
    limit: u64,
    upto: u64,
) -> Option<(String, u64)> {
    let chunks = state.store.output(instance, minion, from, limit).await.ok()?;
    let (mut data, mut next) = stitch(chunks, from);
    if next > upto {
        // The feed's frames start at `upto`, a character boundary: frames end on one.
        data.truncate(usize::try_from(upto - from).unwrap_or(usize::MAX));
        next = upto;
    }
    // A character split between two reads is sent whole with the next one.
    if let Err(e) = std::str::from_utf8(&data)
        && e.error_len().is_none()
        && data.len() - e.valid_up_to() < 4
    {
        next -= (data.len() - e.valid_up_to()) as u64;
        data.truncate(e.valid_up_to());
    }
    Some((String::from_utf8_lossy(&data).into_owned(), next))
}

/// The bytes of `chunks` from offset `from` on (the first chunk may start before it), and the
/// offset after them.
pub(super) fn stitch(chunks: Vec<crate::store::OutputChunk>, from: u64) -> (Vec<u8>, u64) {
    let mut data = Vec::new();
    let mut next = from;
    for c in chunks {
        let skip =
            usize::try_from(next.saturating_sub(c.offset)).unwrap_or(usize::MAX).min(c.data.len());
        data.extend_from_slice(&c.data[skip..]);
        next = next.max(c.offset + c.data.len() as u64);
    }
    (data, next)
}
