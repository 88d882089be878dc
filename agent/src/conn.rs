//! The connection to the sidecar, shared by every run of this agent: connects (and reconnects
//! with backoff for as long as a run is undelivered, and for a bounded time after the last
//! one ended), says hello, sends what the outboxes allow, heartbeats every 5 s, and routes acks,
//! nacks and kills to their run by `job_instance`. One task writes the socket; a bad frame is
//! logged and skipped, never fatal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use saltpeter_protocol::{
    AckType, AgentMessage, BINARY_OUTPUT_VERSION, Connect, Heartbeat, HelloTarget, KillReason,
    Manifest, PROTOCOL_VERSION, ServerErrorCode, ServerMessage, Timestamp,
};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::endpoint::Socket;
use crate::env::Settings;
use crate::outbox::Outgoing;
use crate::run::{Control, RunLink, lock_outbox};

pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// No frame at all (pongs included) for this long: the connection is dead.
const SILENCE: Duration = Duration::from_secs(20);
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Output waits this long at most for `ack{connect}` (which says the sidecar's version, and so
/// whether it takes binary output frames); without it, output goes as JSON text.
const NEGOTIATE: Duration = Duration::from_secs(2);

/// How the session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The sidecar acknowledged every run's result (or disowned the run).
    Delivered,
    /// Every run ended more than the delivery window ago and some are still undelivered.
    GaveUp,
}

/// Builds runs from a manifest (coalesced dispatch); `None` in single-run mode.
pub type OnManifest = Box<dyn FnMut(Manifest) -> Vec<RunLink> + Send>;

pub struct Session {
    pub settings: Arc<Settings>,
    pub target: HelloTarget,
    pub runs: Vec<RunLink>,
    pub wake: Arc<Notify>,
    /// How long results are retried after the last run ended.
    pub delivery_window: Duration,
    pub on_manifest: Option<OnManifest>,
    /// Whether the manifest arrived (dispatch mode): until then there is nothing to settle.
    pub manifest_received: bool,
}

impl Session {
    fn settled(&self) -> bool {
        let waiting_for_manifest = self.on_manifest.is_some() && !self.manifest_received;
        !waiting_for_manifest && self.runs.iter().all(|r| lock_outbox(&r.outbox).is_settled())
    }

    fn all_ended(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| lock_outbox(&r.outbox).ending.is_some())
    }

    pub async fn run(mut self) -> SessionEnd {
        let mut backoff = Duration::from_millis(100);
        let mut ended_at: Option<Instant> = None;
        let mut failures = 0u32;
        let begun = Instant::now();
        loop {
            if self.settled() {
                return SessionEnd::Delivered;
            }
            if self.on_manifest.is_some()
                && !self.manifest_received
                && begun.elapsed() > self.delivery_window
            {
                return SessionEnd::GaveUp;
            }
            if self.all_ended() {
                let at = *ended_at.get_or_insert_with(Instant::now);
                if at.elapsed() > self.delivery_window {
                    return SessionEnd::GaveUp;
                }
            }
            match self.settings.endpoint.connect(CONNECT_LIMIT).await {
                Ok(ws) => {
                    info!(url = %self.settings.endpoint.url, "Connected to the sidecar.");
                    backoff = Duration::from_millis(100);
                    failures = 0;
                    let result = self.connection(ws).await;
                    for run in &self.runs {
                        lock_outbox(&run.outbox).set_connected(false);
                    }
                    match result {
                        Ok(()) => continue,
                        Err(e) => warn!(error = format!("{e:#}"), "Connection lost; reconnecting."),
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        warn!(
                            error = format!("{e:#}"),
                            failures, "Cannot reach the sidecar; retrying."
                        );
                    }
                }
            }
            // Wake early if a run ends meanwhile, so the give-up clock starts on time.
            tokio::select! {
                () = sleep(jitter(backoff)) => {},
                () = self.wake.notified() => {},
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connection(&mut self, mut ws: Socket) -> anyhow::Result<()> {
        let hello = Connect {
            target: self.target.clone(),
            machine: self.settings.machine.clone(),
            timestamp: Timestamp::now(),
            protocol: Some(PROTOCOL_VERSION),
            agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            token: self.settings.endpoint.token.clone(),
        };
        ws.send(Message::text(AgentMessage::Connect(hello).encode()))
            .await
            .context("send connect")?;
        for run in &self.runs {
            lock_outbox(&run.outbox).rewind();
        }
        let mut last_read = Instant::now();
        let mut next_heartbeat = Instant::now() + HEARTBEAT;
        let hello_sent = Instant::now();
        // The sidecar's protocol version, from its `ack{connect}`.
        let mut peer: Option<u32> = None;
        loop {
            if self.settled() {
                ws.close(None).await.ok();
                return Ok(());
            }
            let now = Instant::now();
            let mut deadline = next_heartbeat.min(last_read + SILENCE);
            // Binary output frames only to a sidecar that said it takes them.
            let binary = match peer {
                Some(version) => version >= BINARY_OUTPUT_VERSION,
                None if now >= hello_sent + NEGOTIATE => false,
                None => {
                    deadline = deadline.min(hello_sent + NEGOTIATE);
                    tokio::select! {
                        frame = ws.next() => {
                            last_read = Instant::now();
                            self.receive(frame, &mut peer)?;
                        }
                        () = sleep_until(deadline) => {}
                    }
                    continue;
                }
            };
            for run in &self.runs {
                lock_outbox(&run.outbox).set_connected(true);
                loop {
                    let message = lock_outbox(&run.outbox).next_message(now.into_std())?;
                    let Some(message) = message else { break };
                    ws.feed(frame(message, binary)).await.context("send")?;
                }
                // A deadline already past means the window is full: an ack, not a timer, wakes us.
                if let Some(due) = lock_outbox(&run.outbox).deadline().map(Instant::from_std)
                    && due > now
                {
                    deadline = deadline.min(due);
                }
            }
            ws.flush().await.context("send")?;
            tokio::select! {
                frame = ws.next() => {
                    last_read = Instant::now();
                    self.receive(frame, &mut peer)?;
                }
                () = self.wake.notified() => {}
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    if now >= last_read + SILENCE {
                        bail!("nothing from the sidecar for {SILENCE:?}");
                    }
                    if now >= next_heartbeat {
                        next_heartbeat = now + HEARTBEAT;
                        self.heartbeat(&mut ws).await?;
                    }
                }
            }
        }
    }

    /// One frame from the sidecar (or the end of the stream).
    fn receive(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        peer: &mut Option<u32>,
    ) -> anyhow::Result<()> {
        match frame {
            None => bail!("the sidecar closed the connection"),
            Some(Err(e)) => Err(e).context("receive"),
            Some(Ok(Message::Text(text))) => self.handle(text.as_str(), peer),
            Some(Ok(Message::Close(_))) => bail!("the sidecar closed the connection"),
            Some(Ok(_)) => Ok(()), // pings are answered by tungstenite, pongs only prove life
        }
    }

    async fn heartbeat(&self, ws: &mut Socket) -> anyhow::Result<()> {
        for run in &self.runs {
            let key = {
                let outbox = lock_outbox(&run.outbox);
                (!outbox.is_settled()).then(|| outbox.run.clone())
            };
            if let Some(run) = key {
                let beat = AgentMessage::Heartbeat(Heartbeat { run, timestamp: Timestamp::now() });
                ws.feed(Message::text(beat.encode())).await.context("send heartbeat")?;
            }
        }
        ws.feed(Message::Ping(Default::default())).await.context("send ping")?;
        ws.flush().await.context("send heartbeat")?;
        Ok(())
    }

    /// The run a server message is about: by instance, or the only one.
    fn find(&self, instance: Option<&saltpeter_protocol::JobInstance>) -> Option<&RunLink> {
        match instance {
            Some(i) => self.runs.iter().find(|r| lock_outbox(&r.outbox).run.job_instance == *i),
            None if self.runs.len() == 1 => self.runs.first(),
            None => None,
        }
    }

    fn handle(&mut self, text: &str, peer: &mut Option<u32>) -> anyhow::Result<()> {
        let message = match ServerMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                let head: String = text.chars().take(200).collect();
                warn!(error = %e, frame = %head, "Ignoring a bad frame from the sidecar.");
                return Ok(());
            }
        };
        match message {
            ServerMessage::Ack(ack) if ack.ack_type == AckType::Connect => {
                // The original server says no version: 0.
                *peer = Some(ack.protocol.unwrap_or(0));
                debug!(protocol = ack.protocol, "Connect acknowledged.");
            }
            ServerMessage::Ack(ack) => {
                let Some(run) = self.find(ack.job_instance.as_ref()) else {
                    if ack.ack_type != AckType::Connect {
                        warn!(?ack, "Ack for no run of this agent; ignored.");
                    }
                    return Ok(());
                };
                let mut outbox = lock_outbox(&run.outbox);
                match (ack.ack_type, ack.seq) {
                    (AckType::Start, _) => outbox.ack_start(),
                    (AckType::Output | AckType::Complete, Some(seq)) if seq < outbox.next_seq() => {
                        if outbox.ack(seq)? {
                            info!(run = %outbox.run, "The sidecar has the result.");
                        }
                    }
                    (AckType::Output | AckType::Complete, seq) => {
                        warn!(?seq, "Ack for a message never sent; ignored.");
                    }
                    (AckType::Armed, _) => outbox.ack_armed(),
                    (AckType::Connect | AckType::Unknown, _) => {}
                }
            }
            ServerMessage::Nack(nack) => {
                if let Some(run) = self.find(nack.job_instance.as_ref()) {
                    let mut outbox = lock_outbox(&run.outbox);
                    if nack.expected_seq <= outbox.next_seq() {
                        outbox.nack(nack.expected_seq)?;
                    } else {
                        warn!(?nack, "Nack beyond what was sent; ignored.");
                    }
                }
            }
            ServerMessage::Kill(kill) => match self.find(Some(&kill.run.job_instance)) {
                // A full queue already holds a kill: kills are idempotent.
                Some(run) => {
                    info!(run = %kill.run, "Kill received.");
                    run.control
                        .try_send(Control::Kill(kill.reason.unwrap_or(KillReason::User)))
                        .ok();
                }
                None => warn!(run = %kill.run, "Kill for a run this agent does not have; ignored."),
            },
            ServerMessage::Error(error) => {
                match (error.code, self.find(error.job_instance.as_ref())) {
                    (Some(ServerErrorCode::JobNotFound), Some(run)) => {
                        let mut outbox = lock_outbox(&run.outbox);
                        warn!(run = %outbox.run, message = ?error.message, "The sidecar does not know this run; its result stays in the local log.");
                        outbox.abandoned = true;
                    }
                    (Some(ServerErrorCode::Unauthorized), _) => {
                        bail!("the sidecar refused the token")
                    }
                    _ => warn!(?error, "Error from the sidecar."),
                }
            }
            ServerMessage::Manifest(manifest) => match self.on_manifest.as_mut() {
                Some(build) => {
                    let known: Vec<_> = self
                        .runs
                        .iter()
                        .map(|r| lock_outbox(&r.outbox).run.job_instance.clone())
                        .collect();
                    let mut fresh = manifest;
                    fresh.runs.retain(|e| !known.contains(&e.job_instance));
                    let new = build(fresh);
                    info!(runs = new.len(), "Manifest received.");
                    self.runs.extend(new);
                    self.manifest_received = true;
                }
                None => warn!("Manifest on a single-run connection; ignored."),
            },
            ServerMessage::SyncResponse(_) => {}
        }
        Ok(())
    }
}

/// The WebSocket frame for `message`: output as a binary frame when the sidecar takes them.
fn frame(message: Outgoing, binary: bool) -> Message {
    match message {
        Outgoing::Message(m) => {
            debug!(kind = kind(&m), "Send.");
            Message::text(m.encode())
        }
        Outgoing::Output { header, bytes } if binary => {
            Message::binary(header.encode_frame(&bytes))
        }
        Outgoing::Output { header, bytes } => {
            Message::text(AgentMessage::Output(header.to_text(&bytes)).encode())
        }
    }
}

fn kind(message: &AgentMessage) -> &'static str {
    match message {
        AgentMessage::Connect(_) => "connect",
        AgentMessage::Start(_) => "start",
        AgentMessage::Heartbeat(_) => "heartbeat",
        AgentMessage::Output(_) => "output",
        AgentMessage::Complete(_) => "complete",
        AgentMessage::Error(_) => "error",
        AgentMessage::Killed(_) => "killed",
        AgentMessage::SyncRequest(_) => "sync_request",
        AgentMessage::Armed(_) => "armed",
    }
}

/// Up to a quarter less, so a fleet that lost its sidecar does not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos =
        u64::from(std::process::id()) ^ u64::from(Timestamp::now().0.timestamp_subsec_nanos());
    d - d / 4 * u32::try_from(nanos % 100).unwrap_or(0) / 100
}
