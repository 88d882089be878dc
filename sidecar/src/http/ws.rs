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
//! Each connection follows the store on its own, so a slow client only slows itself; output is
//! sent in bounded pieces and a client that cannot keep up is sent less often, never buffered
//! without bound.

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
use crate::store::RunFilter;

#[cfg(test)]
mod tests;

/// How often a connection looks for changes.
pub(super) const TICK: Duration = Duration::from_millis(500);
/// The most output bytes sent per minion per tick.
const OUTPUT_SLICE: u64 = 256 << 10;

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
    Output { instance: &'a str, minion: &'a str, offset: u64, data: String },
    Error { error: String },
}

async fn upgrade(
    AxumState(state): AxumState<Arc<State>>,
    Viewer(caller): Viewer,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| session(state, caller, socket))
}

/// What the client has been sent.
#[derive(Default)]
struct Sent {
    overview: Option<(Vec<String>, Option<String>)>,
    run: Option<String>,
    /// Per minion: the next output offset.
    offsets: HashMap<String, u64>,
}

async fn session(state: Arc<State>, caller: super::Caller, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let mut watched: Option<String> = None;
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
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Hello) => original = None,
                    Ok(ClientMessage::WatchRun { instance }) => {
                        watched = Some(instance);
                        sent.run = None;
                        sent.offsets.clear();
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
                if update(&state, &mut tx, watched.as_deref(), &mut sent).await.is_err() {
                    return;
                }
            }
        }
    }
}

type Tx = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send_value(tx: &mut Tx, value: &serde_json::Value) -> Result<(), ()> {
    tx.send(Message::Text(value.to_string().into())).await.map_err(|_| ())
}

async fn send(tx: &mut Tx, message: &ServerMessage<'_>) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn update(
    state: &State,
    tx: &mut Tx,
    watched: Option<&str>,
    sent: &mut Sent,
) -> Result<(), ()> {
    let Ok(open) = state.store.open_runs().await else { return Ok(()) };
    let active: Vec<String> = open.into_iter().map(|r| r.instance).collect();
    let latest = state
        .store
        .runs(RunFilter { limit: 1, ..RunFilter::default() })
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
        .map(|r| format!("{}:{}", r.instance, r.status.as_str()));
    let overview = (active, latest);
    if sent.overview.as_ref() != Some(&overview) {
        send(tx, &ServerMessage::Overview { active: &overview.0, latest: overview.1.as_deref() })
            .await?;
        sent.overview = Some(overview);
    }
    let Some(instance) = watched else { return Ok(()) };
    let (Ok(Some(row)), Ok(results)) =
        (state.store.run(instance).await, state.store.results(instance).await)
    else {
        return Ok(());
    };
    // New output first, so the run's final status never arrives before its last lines.
    for r in &results {
        let from = sent.offsets.get(&r.minion).copied().unwrap_or(0);
        if r.output_bytes <= from {
            continue;
        }
        let Ok(chunks) = state.store.output(instance, &r.minion, from, OUTPUT_SLICE).await else {
            continue;
        };
        let (mut data, mut next) = stitch(chunks, from);
        // A character split between two reads is sent whole with the next one.
        if let Err(e) = std::str::from_utf8(&data)
            && e.error_len().is_none()
            && data.len() - e.valid_up_to() < 4
        {
            next -= (data.len() - e.valid_up_to()) as u64;
            data.truncate(e.valid_up_to());
        }
        if next > from {
            let text = String::from_utf8_lossy(&data).into_owned();
            send(
                tx,
                &ServerMessage::Output { instance, minion: &r.minion, offset: from, data: text },
            )
            .await?;
            sent.offsets.insert(r.minion.clone(), next);
        }
    }
    let mut dto = RunDto::from(row);
    dto.results = Some(results.into_iter().map(ResultDto::from).collect());
    let json = serde_json::to_string(&dto).unwrap_or_default();
    if sent.run.as_deref() != Some(json.as_str()) {
        send(tx, &ServerMessage::Run { run: &dto }).await?;
        sent.run = Some(json);
    }
    Ok(())
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
