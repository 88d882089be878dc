//! The agent's figures for `docs/performance.md` ("Agent"), side by side with the original
//! Python wrapper run the same way in the same process:
//!
//! ```sh
//! ./scripts/build-agent            # the shipped static binary (opt-level s, crt-static)
//! SALTPETER_AGENT_BIN=dist/saltpeter-agent-0.1.0-x86_64-linux \
//! SALTPETER_PYTHON=/path/to/venv/bin/python \
//!   nice cargo bench -p saltpeter-agent --bench agent
//! ```
//!
//! `SALTPETER_PYTHON` is an interpreter with `saltpeter==0.9.30` (installed `--no-deps`) and
//! `websockets`; without it only this agent is measured. The WebSocket server is the tests'
//! (`tests/agent/server.rs`), on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)]

#[allow(dead_code)] // shared with the tests, which use all of it
#[path = "../tests/agent/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use server::{Mode, Server};

const SAMPLES: usize = 30;

struct Impl {
    name: &'static str,
    program: Vec<String>,
    /// Bytes of `yes` output for the throughput run.
    bulk: u64,
}

fn vars(
    url: &str,
    job: &str,
    instance: &str,
    command: &str,
    dir: &std::path::Path,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SP_WEBSOCKET_URL".into(), url.into()),
        ("SP_JOB_NAME".into(), job.into()),
        ("SP_JOB_INSTANCE".into(), instance.into()),
        ("SP_COMMAND".into(), command.into()),
        ("SP_MACHINE_ID".into(), "bench".into()),
        ("SP_STATE_DIR".into(), dir.join("state").display().to_string()),
        ("SP_WRAPPER_LOGDIR".into(), dir.join("log").display().to_string()),
        ("PATH".into(), "/usr/bin:/bin".into()),
    ])
}

fn launch(imp: &Impl, vars: &BTreeMap<String, String>) -> Duration {
    let t = Instant::now();
    let out = Command::new(&imp.program[0])
        .args(&imp.program[1..])
        .env_clear()
        .envs(vars)
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{}: {}", imp.name, String::from_utf8_lossy(&out.stderr));
    took
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a percentile of a few samples
fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// utime + stime of a /proc/<pid>/stat text, in seconds (USER_HZ = 100).
fn stat_cpu(stat: &str) -> f64 {
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_secs(path: &str) -> f64 {
    stat_cpu(&std::fs::read_to_string(path).unwrap_or_default())
}

async fn measure(imp: &Impl, server: &Server, dir: &std::path::Path) {
    let url = server.url();
    let job = format!("bench-{}", imp.name.replace(' ', "-"));
    // 1. Exec to the parent's exit (Salt's cmd.run returns then), and to the result's arrival.
    let (mut detach, mut e2e) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let instance = format!("true-{i}");
        let t = Instant::now();
        detach.push(launch(imp, &vars(&url, &job, &instance, "true", dir)));
        server.complete(&instance, Duration::from_secs(60)).await;
        e2e.push(t.elapsed());
    }
    detach.sort();
    e2e.sort();
    println!(
        "{:<16} detach (exec → parent exit)   p50 {:7.2} ms  p99 {:7.2} ms  (n={SAMPLES})",
        imp.name,
        pct(&detach, 0.5),
        pct(&detach, 0.99)
    );
    println!(
        "{:<16} `true`: exec → result at server  p50 {:7.2} ms  p99 {:7.2} ms",
        imp.name,
        pct(&e2e, 0.5),
        pct(&e2e, 0.99)
    );

    // 2. Steady RSS of the daemon (the job's parent) while the job sleeps.
    launch(imp, &vars(&url, &job, "rss", "echo $PPID; sleep 3", dir));
    let r = server
        .wait_for("rss", "the daemon's pid", Duration::from_secs(30), |r| r.stdout.ends_with(b"\n"))
        .await;
    let pid: u32 = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
    let mut max_rss = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.complete("rss", Duration::from_secs(30)).await;
    println!(
        "{:<16} steady RSS of the daemon        {:7.2} MiB",
        imp.name,
        max_rss as f64 / 1024.0
    );

    // 3. Throughput of `yes`-like output to the server, and the same command run directly.
    let yes = format!("yes | head -c {}", imp.bulk);
    // The job's parent is the agent's daemon: its CPU time, on stderr when the output is done.
    let cmd = format!("{yes}; cat /proc/$PPID/stat >&2");
    let t = Instant::now();
    Command::new("/bin/sh").args(["-c", &format!("{yes} > /dev/null")]).status().unwrap();
    let direct = t.elapsed();
    let t = Instant::now();
    let server_cpu = cpu_secs("/proc/self/stat");
    launch(imp, &vars(&url, &job, "bulk", &cmd, dir));
    let r = server.complete("bulk", Duration::from_secs(1800)).await;
    let through = t.elapsed();
    let server_cpu = cpu_secs("/proc/self/stat") - server_cpu;
    let agent_cpu = stat_cpu(&String::from_utf8_lossy(&r.stderr));
    println!(
        "{:<16} CPU during the transfer: agent {agent_cpu:.2} s, test server {server_cpu:.2} s",
        imp.name
    );
    let got = r.stdout.len() as u64;
    let intact = got == imp.bulk && r.stdout.chunks(2).all(|c| c == b"y\n" || c == b"y");
    println!(
        "{:<16} throughput {:5} MB           {:7.1} MB/s  ({:.2} s; direct to /dev/null {:.2} s; overhead x{:.1}); {}",
        imp.name,
        imp.bulk / 1_000_000,
        got as f64 / 1e6 / through.as_secs_f64(),
        through.as_secs_f64(),
        direct.as_secs_f64(),
        through.as_secs_f64() / direct.as_secs_f64(),
        if intact { "complete, in order".to_owned() } else { format!("LOST: got {got} bytes") },
    );
}

fn main() {
    let agent = std::env::var("SALTPETER_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_saltpeter-agent").to_owned());
    let mut impls =
        vec![Impl { name: "saltpeter-agent", program: vec![agent.clone()], bulk: 1_000_000_000 }];
    if let Ok(python) = std::env::var("SALTPETER_PYTHON") {
        impls.push(Impl {
            name: "python wrapper",
            program: vec![python, "-m".into(), "saltpeter.wrapper".into()],
            bulk: 10_000_000,
        });
    }
    println!(
        "agent binary: {agent} ({} bytes)",
        std::fs::metadata(&agent).map(|m| m.len()).unwrap_or(0)
    );
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for imp in &impls {
            let server = Server::start(Mode::Normal).await;
            let dir = tempfile::tempdir().unwrap();
            measure(imp, &server, dir.path()).await;
        }
    });
}
