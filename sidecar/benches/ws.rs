//! `/ws` fan-out; prints figures for `docs/performance.md` ("HTTP API").
//!
//! One run in flight whose minion writes `BENCH_RATE` bytes a second of output (default 1 MB/s,
//! a chunk every 50 ms, through the store's writer as agent sessions do); `BENCH_CLIENTS` UI
//! clients (default 200) connect to `/ws` over real TCP with a viewer token and watch that run,
//! plus one client that reads one message a second. The clients run in a second process (this
//! binary again), so the sidecar's RSS is its own. For `BENCH_SECS` (default 20) after a warm-up
//! of 5 s, prints: the sidecar's CPU (the threads of its runtime, store reads included; the
//! clients share the same 2 cores), its RSS, how many bytes each reading client got a second
//! (min, p50, max), how far behind the producer the slowest one ended, and what became of the
//! slow client.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt as _, StreamExt as _};
use saltpeter::config::{ApiToken, Role, Settings};
use saltpeter::http::{Access, State, router};
use saltpeter::scheduler::{JobTable, SystemClock, Trigger};
use saltpeter::store::{RunStatus, Stream, Write};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SERVER_THREADS: &str = "sp-server";
const SECRET: &str = "sp_bench_ws";
const INSTANCE: &str = "firehose_1";

fn env_n(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) of this process's threads named `name`.
fn thread_cpu(name: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
        total += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    total as f64 / tick
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Starts the sidecar's store, a running run and the HTTP server on `rt`; answers the address,
/// the store and what to cancel.
fn server(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (std::net::SocketAddr, saltpeter::store::StoreHandle, CancellationToken) {
    rt.block_on(async {
        let conf = dir.join("conf");
        fs_err::create_dir_all(&conf).unwrap();
        fs_err::write(
            conf.join("jobs.yaml"),
            "firehose:\n  sec: 0\n  min: 0\n  hour: 3\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  targets: m1\n  command: yes\n",
        )
        .unwrap();
        let loaded = saltpeter::config::load_dir(&conf, Utc::now()).unwrap();
        let tasks = TaskTracker::new();
        let store = saltpeter::store::spawn(&tasks, &dir.join("state")).unwrap();
        let now = Utc::now();
        for w in [
            Write::CreateRun {
                instance: INSTANCE.into(),
                job: "firehose".into(),
                group: "jobs".into(),
                scheduled: now,
                trigger: Trigger::Manual,
                status: RunStatus::Running,
                reason: String::new(),
                created: now,
            },
            Write::MinionResult {
                instance: INSTANCE.into(),
                minion: "m1".into(),
                phase: "running".into(),
                retcode: None,
                reason: String::new(),
                started: Some(now),
                finished: None,
            },
        ] {
            store.write_durable(w).await.unwrap();
        }
        let cancel = CancellationToken::new();
        let (due_tx, due) = mpsc::channel(16);
        std::mem::forget(due);
        let table = JobTable::resume(loaded.jobs.values().cloned(), &HashMap::new(), now);
        let scheduler = saltpeter::scheduler::spawn(
            &tasks,
            table,
            Arc::new(SystemClock),
            due_tx,
            cancel.child_token(),
        );
        let maintenance = saltpeter::maintenance::spawn(
            &tasks,
            store.clone(),
            None,
            loaded.maintenance.clone(),
            cancel.child_token(),
        )
        .await
        .unwrap();
        let settings = Settings {
            api_tokens: vec![ApiToken {
                name: "bench".into(),
                sha256: sha2::Sha256::digest(SECRET.as_bytes()).into(),
                role: Role::Viewer,
            }],
            ..Settings::default()
        };
        let app = router(State {
            runs: saltpeter::runs::RunsHandle::stopped(),
            scheduler,
            store: store.clone(),
            jobs: tokio::sync::watch::channel(Arc::new(loaded.jobs.clone())).1,
            maintenance,
            salt: None,
            access: Access::new(&settings),
            reload: None,
            metrics: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        (addr, store, cancel)
    })
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// Output bytes received (the `data` of `output` messages, as text).
    bytes: AtomicU64,
    /// The offset after the last output received.
    offset: AtomicU64,
    closed: AtomicBool,
}

#[derive(serde::Deserialize)]
struct Output {
    offset: u64,
    data: String,
}

async fn client(addr: std::net::SocketAddr, seen: Arc<Seen>, reads: bool) {
    let url = format!("ws://{addr}/ws?token={SECRET}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(r#"{"type":"hello"}"#)).await.unwrap();
    ws.send(Message::text(format!(r#"{{"type":"watch_run","instance":"{INSTANCE}"}}"#)))
        .await
        .unwrap();
    while let Some(Ok(message)) = ws.next().await {
        if !reads {
            // A client on a bad link: one message a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let Message::Text(text) = message else { continue };
        if !text.starts_with(r#"{"type":"output""#) {
            continue;
        }
        let out: Output = serde_json::from_str(&text).unwrap();
        let (data, offset) = (out.data.len() as u64, out.offset);
        seen.bytes.fetch_add(data, Ordering::Relaxed);
        seen.offset.store(offset + data, Ordering::Relaxed);
    }
    seen.closed.store(true, Ordering::Relaxed);
}

/// The clients' side, in a process of their own (so the sidecar's RSS is its own): connects,
/// waits out the warm-up, measures, and prints per reading client `bytes offset` lines, then the
/// slow client's `bytes closed`.
fn clients_process(addr: std::net::SocketAddr, clients: usize, secs: u64) {
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    let seen: Vec<Arc<Seen>> = (0..=clients).map(|_| Arc::new(Seen::default())).collect();
    for (i, s) in seen.iter().enumerate() {
        client_rt.spawn(client(addr, Arc::clone(s), i < clients));
    }
    std::thread::sleep(Duration::from_secs(5));
    let start: Vec<u64> = seen.iter().map(|s| s.bytes.load(Ordering::Relaxed)).collect();
    println!("start");
    std::thread::sleep(Duration::from_secs(secs));
    for (s, b0) in seen[..clients].iter().zip(&start) {
        println!("{} {}", s.bytes.load(Ordering::Relaxed) - b0, s.offset.load(Ordering::Relaxed));
    }
    let slow = &seen[clients];
    println!(
        "{} {}",
        slow.bytes.load(Ordering::Relaxed),
        u8::from(slow.closed.load(Ordering::Relaxed))
    );
    client_rt.shutdown_background();
}

fn main() {
    let clients = env_n("BENCH_CLIENTS", 200) as usize;
    let rate = env_n("BENCH_RATE", 1_000_000);
    let secs = env_n("BENCH_SECS", 20);
    if let Ok(addr) = std::env::var("WS_BENCH_CLIENTS_OF") {
        clients_process(addr.parse().unwrap(), clients, secs);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let (addr, store, cancel) = server(&server_rt, dir.path());

    // The producer: a chunk every 50 ms through the store's writer, as agent sessions write.
    let produced = Arc::new(AtomicU64::new(0));
    let chunk = (rate / 20) as usize;
    {
        let (produced, store, cancel) = (Arc::clone(&produced), store.clone(), cancel.clone());
        server_rt.spawn(async move {
            let line: Vec<u8> =
                b"0123456789 the quick brown fox jumps over the lazy dog 0123456789\n"
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk)
                    .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut seq = 0;
            while !cancel.is_cancelled() {
                tick.tick().await;
                let offset = produced.load(Ordering::Relaxed);
                store
                    .write(Write::Output {
                        instance: INSTANCE.into(),
                        minion: "m1".into(),
                        seq: Some(seq),
                        offset,
                        stream: Stream::Stdout,
                        data: line.clone(),
                        cap: u64::MAX / 2,
                    })
                    .await
                    .unwrap();
                seq += 1;
                produced.store(offset + chunk as u64, Ordering::Relaxed);
            }
        });
    }

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("WS_BENCH_CLIENTS_OF", addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    println!(
        "{clients} reading clients + 1 reading a message a second (in a second process), watching one run producing {:.2} MB/s; {secs} s measured after 5 s",
        rate as f64 / 1e6
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "start");
    let (cpu0, t0, produced0) =
        (thread_cpu(SERVER_THREADS), Instant::now(), produced.load(Ordering::Relaxed));
    let mut rss_max = rss_mib();
    let rss_start = rss_max;
    let mut rss_after_5s = rss_max;
    for second in 0..secs {
        std::thread::sleep(Duration::from_millis(995));
        rss_max = rss_max.max(rss_mib());
        if second == 4 {
            rss_after_5s = rss_mib();
        }
        if (second + 1) % 60 == 0 {
            println!("  RSS after {:>4} s          {:.0} MiB", second + 1, rss_mib());
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu(SERVER_THREADS) - cpu0;
    let rss_end = rss_mib();
    let made = produced.load(Ordering::Relaxed);
    let figures: Vec<(u64, u64)> = lines
        .by_ref()
        .take(clients + 1)
        .map(|l| {
            let l = l.unwrap();
            let mut f = l.split(' ');
            (f.next().unwrap().parse().unwrap(), f.next().map_or(0, |v| v.parse().unwrap_or(1)))
        })
        .collect();
    child.wait().unwrap();
    let mut rates: Vec<f64> =
        figures[..clients].iter().map(|(b, _)| *b as f64 / wall / 1e6).collect();
    rates.sort_by(f64::total_cmp);
    let behind = figures[..clients].iter().map(|(_, o)| made.saturating_sub(*o)).max().unwrap_or(0);
    let (slow_bytes, slow_closed) = figures[clients];
    println!("  produced                 {:.2} MB/s", (made - produced0) as f64 / wall / 1e6);
    println!(
        "  sidecar CPU              {:.0}% of one core (its runtime's threads)",
        cpu / wall * 100.0
    );
    println!(
        "  sidecar RSS              {rss_start:.0} MiB when measuring began, {rss_after_5s:.0} MiB 5 s later, {rss_end:.0} MiB at the end, {rss_max:.0} MiB at most"
    );
    println!(
        "  per reading client       min {:.2}  p50 {:.2}  max {:.2} MB/s",
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    println!(
        "  slowest client behind    {:.1} MB ({:.1} s of output) at the end",
        behind as f64 / 1e6,
        behind as f64 / rate as f64
    );
    println!(
        "  the slow client          {} after {:.2} MB",
        if slow_closed == 1 { "disconnected" } else { "still connected" },
        slow_bytes as f64 / 1e6
    );
    cancel.cancel();
    server_rt.shutdown_background();
}
