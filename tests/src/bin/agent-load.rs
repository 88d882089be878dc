//! `agent-load`: many agents streaming output to the sidecar's agent WebSocket server, on
//! loopback. Issue 6's load figures: connections held, messages per second, memory per
//! connection, and zero loss.
//!
//! The server is the sidecar's own (`saltpeter::agents::serve`, the code the daemon runs) with
//! its real run store (SQLite, WAL, one writer) and token registry, driven in this process:
//! each simulated agent's run and minion result is created in the store and its token issued
//! with `Registry::expect`, as the run engine does at dispatch, so every agent authenticates
//! exactly as a real one. Only the run engine is absent (`RunsHandle::stopped()`): the agents'
//! heartbeats and start events have no engine to go to, which the session ignores; output goes
//! to the store and is acknowledged once committed, as in the daemon.
//!
//! The agents run in a child process (this binary with `clients`), so that the server's RSS is
//! its own. Phases: every agent connects and authenticates and holds its connection (the RSS
//! with every connection open, minus the RSS before, is the memory per connection); then every
//! agent sends its messages and waits for the acknowledgement of the last (messages per
//! second); then the store is checked: every byte of every agent stored once.
//!
//! Run: `ulimit -n 20000; CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
//! nice cargo run --release -p saltpeter-tests --bin agent-load` (`BENCH_AGENTS` (10000),
//! `BENCH_MESSAGES` per agent (10), `BENCH_BYTES` per message (200)).
#![allow(clippy::print_stdout)]

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use saltpeter::agents::{Counters, Registry, RunMinion, Shared};
use saltpeter::runs::RunsHandle;
use saltpeter::store::{RunStatus, Trigger, Write};
use saltpeter_protocol::{
    AckType, AgentMessage, Connect, HelloTarget, JobInstance, JobName, MachineId, Output,
    PROTOCOL_VERSION, RunKey, Seq, ServerMessage, Stream, Timestamp, Token,
};
use tokio_tungstenite::tungstenite::Message;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.get(1).map(String::as_str) == Some("clients") {
        return runtime.block_on(clients(&args[2..]));
    }
    runtime.block_on(server())
}

fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

fn status_kib(field: &str) -> f64 {
    fs_err::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the `)`: utime is field 11, stime 12 (clock ticks of 10 ms).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn instance(i: usize) -> String {
    format!("load_{i}")
}

fn minion(i: usize) -> String {
    format!("m{i:05}")
}

fn token(seed: &str, i: usize) -> String {
    format!("{seed}{i:x}")
}

async fn server() -> anyhow::Result<()> {
    let (n, messages, bytes) = (
        env_usize("BENCH_AGENTS", 10_000),
        env_usize("BENCH_MESSAGES", 10),
        env_usize("BENCH_BYTES", 200),
    );
    let dir = tempfile::Builder::new().prefix("agent-load-").tempdir()?;
    let tasks = tokio_util::task::TaskTracker::new();
    let store = saltpeter::store::spawn(&tasks, dir.path())?;
    let registry = Registry::default();
    let seed: String = {
        let raw = fs_err::read("/proc/sys/kernel/random/uuid")?;
        String::from_utf8_lossy(&raw).trim().replace('-', "")
    };
    let now = chrono::Utc::now();
    for i in 0..n {
        let create = Write::CreateRun {
            instance: instance(i),
            job: "load".to_owned(),
            group: "load".to_owned(),
            scheduled: now,
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            reason: String::new(),
            created: now,
        };
        store.write(create).await?;
        let result = Write::MinionResult {
            instance: instance(i),
            minion: minion(i),
            phase: "running".to_owned(),
            retcode: None,
            reason: String::new(),
            started: Some(now),
            finished: None,
        };
        store.write(result).await?;
        registry.expect(RunMinion::new(instance(i), minion(i)), Token::new(token(&seed, i)));
    }
    store.write_durable(Write::Barrier).await?;
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        registry: registry.clone(),
        store: store.clone(),
        runs: RunsHandle::stopped(),
        counters: Arc::clone(&counters),
        output_cap: 1 << 20,
    });
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(8192)?;
    let port = listener.local_addr()?.port();
    let cancel = tokio_util::sync::CancellationToken::new();
    tasks.spawn(saltpeter::agents::serve(listener, shared, tasks.clone(), cancel.clone()));
    let rss_before = rss_mib();
    println!(
        "agent-load: {n} agents x {messages} messages of {bytes} bytes; server RSS before {rss_before:.1} MiB; load {}",
        load()
    );

    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["clients", &port.to_string(), &n.to_string(), &messages.to_string()])
        .args([&bytes.to_string(), &seed])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the clients process")?;
    let stdout = child.stdout.take().context("the clients' stdout")?;
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    println!("clients: {}", lines.recv().await.unwrap_or_default());
    let (me, them) = (std::process::id(), child.id());
    let cpu_connected = (cpu_secs(me), cpu_secs(them));
    let rss_connected = rss_mib();
    let sessions = registry.sessions();
    println!(
        "server with {sessions} sessions open: RSS {rss_connected:.1} MiB, {:.1} KiB per connection",
        (rss_connected - rss_before) * 1024.0 / n.max(1) as f64
    );
    println!("clients: {}", lines.recv().await.unwrap_or_default());
    println!(
        "CPU while streaming: server {:.1} s, clients {:.1} s",
        cpu_secs(me) - cpu_connected.0,
        cpu_secs(them) - cpu_connected.1
    );
    let rss_streamed = rss_mib();
    // Let the clients go, and wait until the store holds everything acknowledged.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    let _ = child.wait();
    let (bad, rejected) = counters.snapshot();
    let db = rusqlite::Connection::open_with_flags(
        store.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let (chunks, stored): (i64, i64) =
        db.query_row("SELECT count(*), coalesce(sum(length(data)), 0) FROM output", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let short: i64 = db.query_row(
        "SELECT count(*) FROM results WHERE output_bytes != ?1",
        [i64::try_from(messages * bytes)?],
        |r| r.get(0),
    )?;
    let expected = n * messages * bytes;
    println!(
        "store: {chunks} chunks, {stored} bytes of {expected} sent ({} lost); {short} agents with \
         other than {} bytes; bad messages {bad}, rejected connections {rejected}",
        i64::try_from(expected)? - stored,
        messages * bytes
    );
    println!(
        "server RSS after streaming {rss_streamed:.1} MiB, peak {:.1} MiB; load {}",
        status_kib("VmHWM:") / 1024.0,
        load()
    );
    cancel.cancel();
    Ok(())
}

fn load() -> String {
    fs_err::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// The agents: `clients <port> <n> <messages> <bytes> <seed>`. Prints one line once all are
/// connected and one once all are acknowledged; exits when its stdin says so.
async fn clients(args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (port, n, messages, bytes, seed) =
        (arg(0), arg(1).parse::<usize>()?, arg(2).parse::<usize>()?, arg(3).parse()?, arg(4));
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (go_tx, go) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    // Connections are opened a few hundred at a time, as agents of a fleet would trickle in.
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    for i in 0..n {
        let (connected, failed, opening) = (connected.clone(), failed.clone(), opening.clone());
        let (mut go, done_tx) = (go.clone(), done_tx.clone());
        let url = format!("ws://127.0.0.1:{port}/");
        let tok = token(&seed, i);
        tokio::spawn(async move {
            let outcome = async {
                let permit = opening.acquire().await.map_err(|e| e.to_string())?;
                let mut ws = agent_connect(&url, i, &tok).await?;
                drop(permit);
                connected.fetch_add(1, Ordering::Relaxed);
                go.wait_for(|g| *g).await.map_err(|e| e.to_string())?;
                agent_stream(&mut ws, i, messages, bytes).await?;
                Ok::<_, String>(ws)
            }
            .await;
            match outcome {
                Ok(ws) => {
                    let _ = done_tx.send(Ok(())).await;
                    // Hold the connection until the process ends.
                    std::future::pending::<()>().await;
                    drop(ws);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let _ = done_tx.send(Err(e)).await;
                }
            }
        });
    }
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!(
        "{} connected and authenticated in {:.1} s ({} failed)",
        connected.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    let streaming = Instant::now();
    let _ = go_tx.send(true);
    let (mut ok, mut errors) = (0usize, Vec::new());
    while ok + errors.len() < n {
        match done_rx.recv().await {
            Some(Ok(())) => ok += 1,
            Some(Err(e)) => errors.push(e),
            None => break,
        }
    }
    let secs = streaming.elapsed().as_secs_f64();
    println!(
        "{ok} agents sent {} messages, all acknowledged, in {secs:.2} s: {:.0} messages/s, {:.1} MB/s ({} failed{})",
        ok * messages,
        (ok * messages) as f64 / secs,
        (ok * messages * bytes) as f64 / secs / 1e6,
        errors.len(),
        errors.first().map(|e| format!(", first: {e}")).unwrap_or_default()
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn run_key(i: usize) -> RunKey {
    RunKey {
        job_name: JobName::new("load"),
        job_instance: JobInstance::new(instance(i)),
        machine: MachineId::new(minion(i)),
    }
}

/// Connects agent `i`, says hello with its token, and waits for `ack{connect}`.
async fn agent_connect(url: &str, i: usize, token: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    let hello = AgentMessage::Connect(Connect {
        target: HelloTarget::Run {
            job_name: JobName::new("load"),
            job_instance: JobInstance::new(instance(i)),
        },
        machine: MachineId::new(minion(i)),
        timestamp: Timestamp::now(),
        protocol: Some(PROTOCOL_VERSION),
        agent_version: Some("agent-load".to_owned()),
        token: Some(Token::new(token)),
    });
    ws.send(Message::text(hello.encode())).await.map_err(|e| e.to_string())?;
    loop {
        match next_message(&mut ws).await? {
            ServerMessage::Ack(a) if a.ack_type == AckType::Connect => return Ok(ws),
            ServerMessage::Error(e) => return Err(format!("refused: {:?}", e.message)),
            _ => {}
        }
    }
}

/// Sends `messages` output messages (all at once: the server acknowledges a burst with one
/// commit) and waits until the last is acknowledged.
async fn agent_stream(ws: &mut Ws, i: usize, messages: usize, bytes: usize) -> Result<(), String> {
    let data = vec![b'x'; bytes];
    for seq in 0..messages {
        let out = Output::new(run_key(i), Stream::Stdout, Seq(seq as u64), &data);
        ws.send(Message::text(AgentMessage::Output(out).encode()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let last = Seq(messages.saturating_sub(1) as u64);
    loop {
        match next_message(ws).await? {
            ServerMessage::Ack(a) if a.ack_type == AckType::Output && a.seq == Some(last) => {
                return Ok(());
            }
            ServerMessage::Nack(n) => return Err(format!("nack: {n:?}")),
            _ => {}
        }
    }
}

async fn next_message(ws: &mut Ws) -> Result<ServerMessage, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return ServerMessage::decode(text.as_str()).map_err(|e| e.to_string());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the server closed the connection".to_owned()),
        }
    }
}
