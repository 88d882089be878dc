//! One agent connection: authenticate the run it names by its token, then take its messages in
//! order. Output is stored (each byte once: sequence numbers dedupe resends after a reconnect,
//! gaps are nacked) and acknowledged only once committed, so an acknowledged byte survives a crash
//! of the sidecar; a result is acknowledged only once the engine has recorded it. One writer task
//! per connection; a malformed message is counted and skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use saltpeter_protocol::Stream as OutStream;
use saltpeter_protocol::{
    Ack, AckType, AgentMessage, BinaryOutput, Connect, DispatchId, HelloTarget, JobInstance,
    LastSeq, MachineId, Manifest, Nack, NackType, PROTOCOL_VERSION, RunKey, Seq, ServerError,
    ServerErrorCode, ServerMessage, SyncResponse, Timestamp,
};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tracing::{Span, debug, field, info, instrument, warn};

use super::registry::{ManifestRefused, RunMinion};
use super::{Counters, Shared};
use crate::runs::{AgentEvent, AgentEventKind};
use crate::store::{Stream, Write};

/// A connection that sends nothing (not even a heartbeat) for this long is closed.
const SILENCE: Duration = Duration::from_secs(60);
/// Outbound messages queued per connection.
const OUTBOUND: usize = 256;

/// What this connection knows of one run it carries.
struct RunState {
    key: RunMinion,
    job_name: String,
    /// The next sequence number expected from the agent.
    expected: u64,
    /// The next output offset.
    offset: u64,
    /// The highest sequence stored but not yet acknowledged.
    unacked: Option<u64>,
}

#[instrument(skip_all, fields(peer = %peer, minion = field::Empty, run = field::Empty))]
pub(super) async fn serve(
    ws: WebSocketStream<crate::tls::Stream>,
    peer: SocketAddr,
    url_token: Option<String>,
    shared: Arc<Shared>,
) {
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(OUTBOUND);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(Message::text(message.encode())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut stream = stream.peekable();
    let mut session = Session {
        shared,
        tx,
        url_token,
        runs: HashMap::new(),
        dispatch_token: None,
        completed: Vec::new(),
    };
    let mut since_flush = 0u32;
    loop {
        let frame = match tokio::time::timeout(SILENCE, stream.next()).await {
            Err(_) => {
                warn!("The agent went silent; closing its connection.");
                break;
            }
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(frame))) => frame,
        };
        let keep = match frame {
            Message::Text(text) => session.on_text(text.as_str()).await,
            Message::Binary(frame) => session.on_binary(&frame).await,
            Message::Close(_) => false,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => true,
        };
        if !keep {
            break;
        }
        // Acknowledge once no further frame is waiting (one commit covers a burst), and at least
        // every 64 frames.
        since_flush += 1;
        let more_ready = std::pin::Pin::new(&mut stream).peek().now_or_never().is_some();
        if !more_ready || since_flush >= 64 {
            session.flush_acks().await;
            since_flush = 0;
        }
    }
    session.flush_acks().await;
    session.close();
    drop(session);
    let _ = writer.await;
}

struct Session {
    shared: Arc<Shared>,
    tx: mpsc::Sender<ServerMessage>,
    url_token: Option<String>,
    /// Runs authenticated on this connection, by instance.
    runs: HashMap<String, RunState>,
    /// On a coalesced dispatch's connection: its token, which every run of it carries.
    dispatch_token: Option<String>,
    /// Results the engine recorded, acknowledged after the next commit: (instance, seq).
    completed: Vec<(String, Option<u64>)>,
}

fn ack(ack_type: AckType, seq: Option<u64>, instance: &str) -> ServerMessage {
    ServerMessage::Ack(Ack {
        ack_type,
        seq: seq.map(Seq),
        job_name: None,
        job_instance: Some(JobInstance::new(instance)),
        machine: None,
        protocol: None,
        timestamp: Some(Timestamp::now()),
    })
}

fn error(code: ServerErrorCode, message: &str, instance: Option<&str>) -> ServerMessage {
    ServerMessage::Error(ServerError {
        code: Some(code),
        message: Some(message.to_owned()),
        job_instance: instance.map(JobInstance::new),
        timestamp: Some(Timestamp::now()),
    })
}

impl Session {
    async fn send(&self, message: ServerMessage) {
        let _ = self.tx.send(message).await;
    }

    /// Handles one text frame; false closes the connection.
    async fn on_text(&mut self, text: &str) -> bool {
        let message = match AgentMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                self.shared.counters.bad(&e.to_string());
                return true;
            }
        };
        match message {
            AgentMessage::Connect(c) => return self.on_connect(c).await,
            AgentMessage::Start(s) => {
                if self.known(&s.run).await {
                    self.event(&s.run, AgentEventKind::Started { pid: s.pid }).await;
                    self.send(ack(AckType::Start, None, s.run.job_instance.as_str())).await;
                }
            }
            AgentMessage::Heartbeat(h) => {
                if self.known(&h.run).await {
                    self.event(&h.run, AgentEventKind::Alive).await;
                }
            }
            AgentMessage::Output(o) => match o.payload().to_bytes() {
                Some(bytes) => self.on_output(&o.run, o.seq.0, o.stream, bytes).await,
                None => self.shared.counters.bad("output that is not valid base64"),
            },
            AgentMessage::Complete(c) => {
                if !self.known(&c.run).await {
                    return true;
                }
                let seq = c.seq.map(|s| s.0);
                let fresh = match seq {
                    Some(seq) => self.in_order(&c.run, seq).await,
                    None => true,
                };
                if fresh {
                    let event = AgentEvent {
                        key: key_of(&c.run),
                        kind: AgentEventKind::Completed { retcode: c.retcode },
                    };
                    // Queued behind the run's output: the next commit covers both.
                    let known = self.shared.runs.agent_result(event).await;
                    if let Some(state) = self.runs.get_mut(c.run.job_instance.as_str())
                        && let Some(seq) = seq
                    {
                        state.expected = seq + 1;
                    }
                    if !known {
                        let message = "this run is not in flight on the server (it ended or the server lost it)";
                        self.send(error(
                            ServerErrorCode::JobNotFound,
                            message,
                            Some(c.run.job_instance.as_str()),
                        ))
                        .await;
                        return true;
                    }
                }
                // Acknowledged once committed, with the burst it came in (one commit for many
                // results); duplicates again: the agent may have missed the first ack.
                self.completed.push((c.run.job_instance.as_str().to_owned(), seq));
            }
            AgentMessage::Error(e) => {
                if self.known(&e.run).await {
                    self.event(&e.run, AgentEventKind::Error { message: e.error }).await;
                }
            }
            AgentMessage::SyncRequest(q) => {
                if let Some(state) = self.runs.get(q.run.job_instance.as_str()) {
                    let last_seq = LastSeq(state.expected.checked_sub(1).map(Seq));
                    let response = SyncResponse {
                        last_seq,
                        job_instance: Some(q.run.job_instance.clone()),
                        timestamp: Some(Timestamp::now()),
                    };
                    self.send(ServerMessage::SyncResponse(response)).await;
                }
            }
            AgentMessage::Killed(k) => {
                if self.known(&k.run).await {
                    self.event(&k.run, AgentEventKind::Alive).await;
                }
            }
            AgentMessage::Armed(a) => {
                if self.known(&a.run).await {
                    let kind = AgentEventKind::Armed { scheduled: a.scheduled.0 };
                    self.event(&a.run, kind).await;
                    self.send(ack(AckType::Armed, None, a.run.job_instance.as_str())).await;
                }
            }
        }
        true
    }

    /// A binary output frame (protocol 2): the same as a text `output`, with raw bytes.
    async fn on_binary(&mut self, frame: &[u8]) -> bool {
        match BinaryOutput::decode(frame) {
            Ok(BinaryOutput { header: h, data }) => {
                self.on_output(&h.run, h.seq.0, h.stream, data.to_vec()).await;
            }
            Err(e) => self.shared.counters.bad(&e.to_string()),
        }
        true
    }

    async fn on_output(&mut self, run: &RunKey, seq: u64, stream: OutStream, bytes: Vec<u8>) {
        if self.known(run).await && self.in_order(run, seq).await {
            self.store_output(run, seq, stream, bytes).await;
        }
    }

    async fn on_connect(&mut self, c: Connect) -> bool {
        let token = c
            .token
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .or(self.url_token.clone())
            .unwrap_or_default();
        self.shared.registry.note_skew(c.machine.as_str(), &c.timestamp);
        let (job_name, job_instance) = match &c.target {
            HelloTarget::Run { job_name, job_instance } => (job_name, job_instance),
            HelloTarget::Dispatch { dispatch } => {
                return self.on_dispatch_connect(&c, dispatch, token).await;
            }
        };
        let key = RunMinion::new(job_instance.as_str(), c.machine.as_str());
        if !self.shared.registry.token_ok(&key, &token) {
            self.shared.counters.rejected();
            warn!(
                run = key.instance,
                minion = key.minion,
                "An agent connected with a token that does not match its run; rejected."
            );
            self.send(error(
                ServerErrorCode::Unauthorized,
                "the token does not match this run and minion",
                Some(job_instance.as_str()),
            ))
            .await;
            return false;
        }
        Span::current().record("minion", key.minion.as_str()).record("run", key.instance.as_str());
        info!(
            protocol = c.protocol.unwrap_or(0),
            version = c.agent_version.as_deref().unwrap_or("original"),
            "Agent connected."
        );
        let mut connect_ack = ack(AckType::Connect, None, &key.instance);
        if let ServerMessage::Ack(a) = &mut connect_ack {
            a.protocol = Some(PROTOCOL_VERSION);
        }
        self.send(connect_ack).await;
        let run = RunKey {
            job_name: job_name.clone(),
            job_instance: job_instance.clone(),
            machine: MachineId::new(&key.minion),
        };
        self.attach_run(&run).await;
        self.event(&run, AgentEventKind::Alive).await;
        true
    }

    /// A coalesced dispatch's agent: its manifest, then every run of it is carried here.
    async fn on_dispatch_connect(
        &mut self,
        c: &Connect,
        dispatch: &DispatchId,
        token: String,
    ) -> bool {
        let minion = c.machine.as_str();
        let entries = match self.shared.registry.manifest(dispatch, minion, &token) {
            Ok(entries) => entries,
            // A dispatch this sidecar no longer knows (it restarted): no new runs, but each
            // run the agent carries is taken on at its first message if the token is its own.
            Err(ManifestRefused::Unknown) => Vec::new(),
            Err(ManifestRefused::Unauthorized) => {
                self.shared.counters.rejected();
                warn!(%dispatch, minion, "A dispatch agent connected with an unknown dispatch or a wrong token; rejected.");
                self.send(error(
                    ServerErrorCode::Unauthorized,
                    "the token does not match this dispatch (or the dispatch is over)",
                    None,
                ))
                .await;
                return false;
            }
        };
        Span::current().record("minion", minion).record("run", dispatch.as_str());
        info!(
            runs = entries.len(),
            version = c.agent_version.as_deref().unwrap_or("unknown"),
            "Dispatch agent connected."
        );
        self.dispatch_token = Some(token);
        let mut connect_ack = ack(AckType::Connect, None, "");
        if let ServerMessage::Ack(a) = &mut connect_ack {
            a.protocol = Some(PROTOCOL_VERSION);
            a.job_instance = None;
        }
        self.send(connect_ack).await;
        for entry in &entries {
            let run = RunKey {
                job_name: entry.job_name.clone(),
                job_instance: entry.job_instance.clone(),
                machine: c.machine.clone(),
            };
            self.attach_run(&run).await;
        }
        let manifest = Manifest {
            dispatch: dispatch.clone(),
            machine: c.machine.clone(),
            runs: entries,
            timestamp: Some(Timestamp::now()),
        };
        self.send(ServerMessage::Manifest(manifest)).await;
        true
    }

    /// Carries `run` on this connection from now on (its token was checked): resumes its
    /// sequence from the store, and delivers a kill asked for while it was not connected.
    async fn attach_run(&mut self, run: &RunKey) {
        let key = key_of(run);
        let progress = self
            .shared
            .store
            .progress(&key.instance, &key.minion)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let pending_kill = self.shared.registry.attach(key.clone(), self.tx.clone());
        self.runs.insert(
            key.instance.clone(),
            RunState {
                key,
                job_name: run.job_name.as_str().to_owned(),
                expected: progress.next_seq,
                offset: progress.output_bytes,
                unacked: None,
            },
        );
        if let Some(reason) = pending_kill {
            let kill = saltpeter_protocol::Kill {
                run: run.clone(),
                timestamp: Some(Timestamp::now()),
                reason: Some(reason),
            };
            self.send(ServerMessage::Kill(kill)).await;
        }
    }

    /// Whether `run` was authenticated on this connection (messages for others are dropped).
    /// On a dispatch's connection, a run of the same token is taken on at its first message
    /// (the agent resumes runs of a dispatch this sidecar served before a restart).
    async fn known(&mut self, run: &RunKey) -> bool {
        if let Some(state) = self.runs.get(run.job_instance.as_str()) {
            return state.key.minion == run.machine.as_str();
        }
        if let Some(token) = &self.dispatch_token
            && self.shared.registry.token_ok(&key_of(run), token)
        {
            self.attach_run(run).await;
            return true;
        }
        debug!(run = %run, "A message for a run this connection did not authenticate; ignored.");
        false
    }

    /// True when `seq` is the next expected; a duplicate is re-acknowledged, a gap is nacked.
    async fn in_order(&mut self, run: &RunKey, seq: u64) -> bool {
        let Some(state) = self.runs.get(run.job_instance.as_str()) else { return false };
        let (expected, instance) = (state.expected, state.key.instance.clone());
        if seq == expected {
            return true;
        }
        if seq < expected {
            self.send(ack(AckType::Output, Some(expected - 1), &instance)).await;
        } else {
            let nack = Nack {
                nack_type: NackType::OutOfOrder,
                expected_seq: Seq(expected),
                received_seq: Some(Seq(seq)),
                job_instance: Some(JobInstance::new(&instance)),
                timestamp: Some(Timestamp::now()),
            };
            self.send(ServerMessage::Nack(nack)).await;
        }
        false
    }

    async fn store_output(&mut self, run: &RunKey, seq: u64, stream: OutStream, bytes: Vec<u8>) {
        let cap = self.shared.output_cap;
        let Some(state) = self.runs.get_mut(run.job_instance.as_str()) else { return };
        let offset = state.offset;
        state.offset += bytes.len() as u64;
        state.expected = seq + 1;
        state.unacked = Some(seq);
        let stream_kind = match stream {
            OutStream::Stdout => Stream::Stdout,
            OutStream::Stderr => Stream::Stderr,
        };
        let write = Write::Output {
            instance: state.key.instance.clone(),
            minion: state.key.minion.clone(),
            seq: Some(seq),
            offset,
            stream: stream_kind,
            data: bytes.clone(),
            cap,
        };
        let _ = self.shared.store.write(write).await;
        self.event(run, AgentEventKind::Output { stream, data: bytes }).await;
    }

    /// Commits what was stored and acknowledges it.
    async fn flush_acks(&mut self) {
        let pending: Vec<(String, u64)> = self
            .runs
            .values_mut()
            .filter_map(|s| s.unacked.take().map(|q| (s.key.instance.clone(), q)))
            .collect();
        if pending.is_empty() && self.completed.is_empty() {
            return;
        }
        if let Err(e) = self.shared.store.write_durable(Write::Barrier).await {
            warn!(error = %e, "Output or results could not be committed; the agent will resend them.");
            return;
        }
        for (instance, seq) in pending {
            self.send(ack(AckType::Output, Some(seq), &instance)).await;
        }
        for (instance, seq) in std::mem::take(&mut self.completed) {
            self.send(ack(AckType::Complete, seq, &instance)).await;
        }
    }

    async fn event(&self, run: &RunKey, kind: AgentEventKind) {
        let _ = self.shared.runs.agent(AgentEvent { key: key_of(run), kind }).await;
    }

    fn close(&self) {
        for state in self.runs.values() {
            self.shared.registry.detach(&state.key, &self.tx);
            debug!(job = state.job_name, "Agent session closed.");
        }
    }
}

fn key_of(run: &RunKey) -> RunMinion {
    RunMinion::new(run.job_instance.as_str(), run.machine.as_str())
}

impl Counters {
    fn bad(&self, what: &str) {
        self.bad_messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(what, "A malformed message from an agent; skipped.");
    }

    fn rejected(&self) {
        self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
