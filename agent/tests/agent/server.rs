//! A small sidecar for the tests, built on the protocol crate: accepts agents, keeps what a
//! real sidecar keeps per run (bytes per stream in `seq` order, start, heartbeats, result),
//! acknowledges cumulatively, dedups by `seq`, nacks gaps, and can be stopped and started
//! again on the same port with its state intact, or made to misbehave.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use saltpeter_protocol::*;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// How much of both streams `RunRecord::all` keeps.
pub const ALL_CAP: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct RunRecord {
    pub expected: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Both streams in arrival order, for reading escalation notes in context (the first
    /// [`ALL_CAP`] bytes: benchmarks send a gigabyte).
    pub all: Vec<u8>,
    pub start: Option<Start>,
    pub armed: Option<Armed>,
    pub complete: Option<Complete>,
    pub heartbeats: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    /// Output messages that came as binary frames (protocol 2) and as JSON text.
    pub binary_frames: usize,
    pub text_frames: usize,
}

#[derive(Default)]
pub struct State {
    pub runs: HashMap<String, RunRecord>,
    pub connects: Vec<Connect>,
    pub senders: HashMap<String, mpsc::UnboundedSender<Message>>,
    /// Dispatch id → the manifest answered to its `connect`.
    pub manifests: HashMap<String, Manifest>,
}

/// Misbehaviour on every connection, for robustness tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Normal,
    /// Answer every connect with garbage, oversized, unknown and out-of-range frames first.
    Garbage,
    /// Drop every second output ack.
    LoseAcks,
    /// A sidecar of protocol version 1: acks `connect` with 1, takes no binary frames.
    Version1,
    /// Store output on the first connection but acknowledge none of it (as if every ack was
    /// lost with the connection): the agent must send it all again after reconnecting.
    MuteFirst,
}

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub changed: Arc<Notify>,
    pub mode: Mode,
    tasks: Option<JoinSet<()>>,
    /// While down, the port stays bound (not listening), so nothing else takes it meanwhile.
    reservation: Option<tokio::net::TcpSocket>,
}

impl Server {
    pub async fn start(mode: Mode) -> Server {
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            state: Arc::default(),
            changed: Arc::default(),
            mode,
            tasks: None,
            reservation: None,
        };
        server.listen().await;
        server
    }

    /// A server that is not listening yet, on a port reserved for it.
    pub async fn down(mode: Mode) -> Server {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Server {
            addr: socket.local_addr().unwrap(),
            state: Arc::default(),
            changed: Arc::default(),
            mode,
            tasks: None,
            reservation: Some(socket),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/agents", self.addr)
    }

    async fn listen(&mut self) {
        drop(self.reservation.take());
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener: TcpListener = socket.listen(1024).unwrap();
        self.addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let (state, changed, mode) = (self.state.clone(), self.changed.clone(), self.mode);
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(connection(tcp, state.clone(), changed.clone(), mode));
            }
        });
        self.tasks = Some(tasks);
    }

    /// Drops the listener and every connection; the state stays.
    pub fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
        }
        self.state.lock().unwrap().senders.clear();
    }

    pub async fn restart(&mut self) {
        // Wait until the listener is really dropped, so its port can be bound again at once.
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
        self.stop();
        self.listen().await;
    }

    pub fn run(&self, instance: &str) -> RunRecord {
        self.state.lock().unwrap().runs.get(instance).cloned().unwrap_or_default()
    }

    /// Sends `kill` for a run to its current connection.
    pub fn kill(&self, run: &RunKey, reason: Option<KillReason>) {
        let msg = ServerMessage::Kill(Kill {
            run: run.clone(),
            timestamp: Some(Timestamp::now()),
            reason,
        });
        let state = self.state.lock().unwrap();
        let tx = state.senders.get(run.job_instance.as_str()).expect("a connection for the run");
        tx.send(Message::text(msg.encode())).unwrap();
    }

    /// Waits (up to `limit`) until `probe` holds for the run's record.
    pub async fn wait_for(
        &self,
        instance: &str,
        what: &str,
        limit: Duration,
        probe: impl Fn(&RunRecord) -> bool,
    ) -> RunRecord {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            {
                // Probe under the lock: cloning a large record on every message is quadratic.
                let state = self.state.lock().unwrap();
                let empty = RunRecord::default();
                let record = state.runs.get(instance).unwrap_or(&empty);
                if probe(record) {
                    return record.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut record = self.run(instance);
                record.stdout.truncate(1000);
                record.all.truncate(1000);
                panic!("timed out after {limit:?} waiting for {what}; the run has: {record:?}");
            }
        }
    }

    pub async fn complete(&self, instance: &str, limit: Duration) -> RunRecord {
        self.wait_for(instance, "the run's complete", limit, |r| r.complete.is_some()).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    mode: Mode,
) {
    tcp.set_nodelay(true).ok();
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let reply = |m: ServerMessage| tx.send(Message::text(m.encode())).ok();
    let mut acks = 0u64;
    // This connection acknowledges no output (`Mode::MuteFirst`).
    let mut mute = false;
    while let Some(Ok(frame)) = stream.next().await {
        let msg = match frame {
            Message::Text(text) => {
                AgentMessage::decode(text.as_str()).expect("the agent sends valid messages")
            }
            Message::Binary(bytes) => {
                assert!(mode != Mode::Version1, "a binary frame to a version 1 sidecar");
                let b = BinaryOutput::decode(&bytes).expect("the agent sends valid binary frames");
                let mut st = state.lock().unwrap();
                st.runs.entry(b.header.run.job_instance.to_string()).or_default().binary_frames +=
                    1;
                let h = b.header;
                if let Some(m) = output(&mut st, &h.run, h.seq, h.stream, b.data, mode, &mut acks)
                    && !mute
                {
                    reply(m);
                }
                drop(st);
                changed.notify_waiters();
                continue;
            }
            _ => continue,
        };
        let mut st = state.lock().unwrap();
        match msg {
            AgentMessage::Connect(c) => {
                match &c.target {
                    HelloTarget::Run { job_instance, .. } => {
                        st.senders.insert(job_instance.to_string(), tx.clone());
                    }
                    HelloTarget::Dispatch { dispatch } => {
                        if let Some(m) = st.manifests.get(dispatch.as_str()).cloned() {
                            for e in &m.runs {
                                st.senders.insert(e.job_instance.to_string(), tx.clone());
                            }
                            reply(ServerMessage::Manifest(m));
                        }
                    }
                }
                st.connects.push(c);
                mute = mode == Mode::MuteFirst && st.connects.len() == 1;
                let mut hello = ack(AckType::Connect, None, None);
                if let (ServerMessage::Ack(a), Mode::Version1) = (&mut hello, mode) {
                    a.protocol = Some(1);
                }
                reply(hello);
                if mode == Mode::Garbage {
                    for g in garbage() {
                        tx.send(g).ok();
                    }
                }
            }
            AgentMessage::Start(s) => {
                let instance = s.run.job_instance.clone();
                st.runs.entry(instance.to_string()).or_default().start = Some(s);
                reply(ack(AckType::Start, None, Some(instance)));
            }
            AgentMessage::Heartbeat(h) => {
                st.runs.entry(h.run.job_instance.to_string()).or_default().heartbeats += 1
            }
            AgentMessage::Output(o) => {
                st.runs.entry(o.run.job_instance.to_string()).or_default().text_frames += 1;
                let bytes = o.payload().to_bytes().expect("valid base64");
                if let Some(m) = output(&mut st, &o.run, o.seq, o.stream, &bytes, mode, &mut acks)
                    && !mute
                {
                    reply(m);
                }
            }
            AgentMessage::Complete(c) => {
                let r = st.runs.entry(c.run.job_instance.to_string()).or_default();
                let seq = c.seq.unwrap_or(Seq(r.expected));
                if seq.0 > r.expected {
                    r.out_of_order += 1;
                    let nack = Nack {
                        nack_type: NackType::OutOfOrder,
                        expected_seq: Seq(r.expected),
                        received_seq: Some(seq),
                        job_instance: Some(c.run.job_instance.clone()),
                        timestamp: None,
                    };
                    reply(ServerMessage::Nack(nack));
                    continue;
                }
                if seq.0 == r.expected {
                    r.expected += 1;
                    r.complete = Some(c.clone());
                } else {
                    r.duplicates += 1;
                }
                reply(ack(AckType::Complete, Some(seq), Some(c.run.job_instance)));
            }
            AgentMessage::SyncRequest(q) => {
                let r = st.runs.entry(q.run.job_instance.to_string()).or_default();
                let last_seq = LastSeq(r.expected.checked_sub(1).map(Seq));
                reply(ServerMessage::SyncResponse(SyncResponse {
                    last_seq,
                    job_instance: Some(q.run.job_instance),
                    timestamp: None,
                }));
            }
            AgentMessage::Armed(a) => {
                let instance = a.run.job_instance.clone();
                st.runs.entry(instance.to_string()).or_default().armed = Some(a);
                reply(ack(AckType::Armed, None, Some(instance)));
            }
            AgentMessage::Error(_) | AgentMessage::Killed(_) => {}
        }
        drop(st);
        changed.notify_waiters();
    }
    writer.abort();
}

/// One `output` (text or binary): stored if next, counted if a duplicate, nacked if a gap.
/// Returns the answer.
fn output(
    st: &mut State,
    run: &RunKey,
    seq: Seq,
    stream: Stream,
    bytes: &[u8],
    mode: Mode,
    acks: &mut u64,
) -> Option<ServerMessage> {
    let r = st.runs.entry(run.job_instance.to_string()).or_default();
    if seq.0 < r.expected {
        r.duplicates += 1;
    } else if seq.0 > r.expected {
        r.out_of_order += 1;
        return Some(ServerMessage::Nack(Nack {
            nack_type: NackType::OutOfOrder,
            expected_seq: Seq(r.expected),
            received_seq: Some(seq),
            job_instance: Some(run.job_instance.clone()),
            timestamp: None,
        }));
    } else {
        match stream {
            Stream::Stdout => r.stdout.extend_from_slice(bytes),
            Stream::Stderr => r.stderr.extend_from_slice(bytes),
        }
        let room = ALL_CAP.saturating_sub(r.all.len()).min(bytes.len());
        r.all.extend_from_slice(&bytes[..room]);
        r.expected += 1;
    }
    let upto = Seq(r.expected - 1);
    *acks += 1;
    if mode == Mode::LoseAcks && acks.is_multiple_of(2) {
        return None;
    }
    Some(ack(AckType::Output, Some(upto), Some(run.job_instance.clone())))
}

fn ack(ack_type: AckType, seq: Option<Seq>, job_instance: Option<JobInstance>) -> ServerMessage {
    ServerMessage::Ack(Ack {
        ack_type,
        seq,
        job_name: None,
        job_instance,
        machine: None,
        protocol: Some(PROTOCOL_VERSION),
        timestamp: Some(Timestamp::now()),
    })
}

fn garbage() -> Vec<Message> {
    let nobody = RunKey {
        job_name: "other".into(),
        job_instance: "not-this-one".into(),
        machine: "m".into(),
    };
    vec![
        Message::text("not json at all"),
        Message::text("{}"),
        Message::text("[1,2,3]"),
        Message::text(r#"{"type":"launch_missiles"}"#),
        Message::text(r#"{"type":"ack"}"#),
        Message::text(format!(
            r#"{{"type":"ack","ack_type":"output","pad":"{}"}}"#,
            "x".repeat(2 << 20)
        )),
        Message::Binary(vec![0xff; 1000].into()),
        Message::text(r#"{"type":"ack","ack_type":"output","seq":999999}"#),
        Message::text(r#"{"type":"ack","ack_type":"complete","seq":18446744073709551615}"#),
        Message::text(r#"{"type":"nack","nack_type":"out_of_order","expected_seq":999999}"#),
        Message::text(r#"{"type":"sync_response","last_seq":-7}"#),
        Message::text(
            ServerMessage::Kill(Kill { run: nobody, timestamp: None, reason: None }).encode(),
        ),
        Message::text(r#"{"type":"error","code":"SOMETHING_NEW","message":"?"}"#),
        Message::text(r#"{"type":"manifest","dispatch":"d","machine":"m","runs":[]}"#),
    ]
}
