//! Scheduler benchmarks; prints figures for `docs/performance.md` ("Scheduler").
//!
//! 1. 100,000 jobs in 100 files: load + validate time, time to build the job table, RSS.
//! 2. Idle CPU of the timer task and the directory watcher over `BENCH_IDLE_SECS` (default 60)
//!    with those 100,000 jobs loaded and none due.
//! 3. 10,000 jobs due in the same second, every second for `BENCH_BURST_SECS` (default 30):
//!    from the due instant to the last `Due` event of that second, p50/p99/max.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use saltpeter::config::{self, WatchOptions};
use saltpeter::scheduler::{self, JobTable, SystemClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (resident, peak resident) in MiB.
fn rss_mib() -> (f64, f64) {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = fs_err::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are at 11 and 12 after the `)`; clock ticks.
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let len = sorted.len() as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((len * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn write_jobs(dir: &std::path::Path, files: usize, per_file: usize, schedule: &str) {
    for f in 0..files {
        let mut text = String::with_capacity(per_file * 200);
        for j in 0..per_file {
            text.push_str(&format!(
                "job-{f}-{j}:\n{schedule}  command: /usr/local/bin/task --id {j}\n  targets: 'web*'\n  timeout: 600\n"
            ));
        }
        fs_err::write(dir.join(format!("group-{f}.yaml")), text).unwrap();
    }
}

async fn load_and_idle(idle_secs: u64) {
    // 1. Load 100,000 jobs: yearly, so that none is due during the idle measurement.
    let dir = tempfile::tempdir().unwrap();
    let yearly = "  sec: 0\n  min: 0\n  hour: 0\n  dom: 1\n  mon: 1\n  dow: '*'\n";
    write_jobs(dir.path(), 100, 1000, yearly);
    let (rss_before, _) = rss_mib();
    let (started, cpu_started) = (Instant::now(), cpu_time());
    let loaded = config::load_dir(dir.path(), Utc::now()).unwrap();
    let (load_time, load_cpu) = (started.elapsed(), cpu_time() - cpu_started);
    assert_eq!(loaded.jobs.len(), 100_000, "{:?}", loaded.report.errors.first());
    let started = Instant::now();
    let table = JobTable::new(loaded.jobs.values().cloned(), Utc::now());
    let table_time = started.elapsed();
    let (rss_loaded, peak_loaded) = rss_mib();
    println!(
        "load 100,000 jobs (100 files): parse + validate {load_time:.2?} wall, {load_cpu:.2?} CPU; job table {table_time:.2?}"
    );
    println!(
        "  RSS {rss_before:.1} MiB before, {rss_loaded:.1} MiB after (peak {peak_loaded:.1} MiB)"
    );

    // 2. Idle: the timer task and the watcher with 100,000 jobs, nothing due.
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let (due_tx, mut due_rx) = mpsc::channel(1024);
    let handle = scheduler::spawn(&tasks, table, Arc::new(SystemClock), due_tx, cancel.clone());
    let (reload_tx, _reload_rx) = mpsc::channel(4);
    tasks.spawn(config::watch(
        dir.path().to_path_buf(),
        loaded,
        WatchOptions::default(),
        reload_tx,
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    let fired = due_rx.try_recv().is_ok();
    println!(
        "idle {:.0?} with 100,000 jobs: CPU {:?} ({:.4}% of one core; /proc tick = 10 ms), due events: {}",
        wall,
        cpu,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        if fired { "some (unexpected)" } else { "none" }
    );
    cancel.cancel();
    drop(handle);
    tasks.close();
    tasks.wait().await;
    let (rss_idle, peak_idle) = rss_mib();
    println!("  RSS {rss_idle:.1} MiB (peak {peak_idle:.1} MiB)");
}

#[tokio::main]
async fn main() {
    let idle_secs = env_secs("BENCH_IDLE_SECS", 60);
    let burst_secs = env_secs("BENCH_BURST_SECS", 30);

    // BENCH_ONLY=burst skips parts 1 and 2.
    if std::env::var("BENCH_ONLY").as_deref() != Ok("burst") {
        load_and_idle(idle_secs).await;
    }

    // 3. Burst: 10,000 jobs due every second.
    let dir = tempfile::tempdir().unwrap();
    let every_second = "  sec: '*'\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n";
    write_jobs(dir.path(), 10, 1000, every_second);
    let loaded = config::load_dir(dir.path(), Utc::now()).unwrap();
    assert_eq!(loaded.jobs.len(), 10_000);
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let (due_tx, mut due_rx) = mpsc::channel(16_384);
    // The table alone: one burst's two phases, on fed instants.
    let t0 = Utc::now();
    let mut probe = JobTable::new(loaded.jobs.values().cloned(), t0);
    let at = probe.next_deadline().unwrap();
    let started = Instant::now();
    let first = probe.take_first(at);
    let take_time = started.elapsed();
    let started = Instant::now();
    let more = probe.advance(at);
    let advance_time = started.elapsed();
    println!(
        "table, 10,000 jobs due at once: take_first {take_time:.2?} ({} due), advance {advance_time:.2?} ({} more)",
        first.len(),
        more.len()
    );
    let table = JobTable::new(loaded.jobs.into_values(), Utc::now());
    let handle = scheduler::spawn(&tasks, table, Arc::new(SystemClock), due_tx, cancel.clone());
    // The consumer stands in for the run engine: it takes each event and notes when.
    let consumer = tokio::spawn(async move {
        let mut last_of: Vec<(DateTime<Utc>, DateTime<Utc>, usize)> = Vec::new();
        let mut every: Vec<Duration> = Vec::new();
        let end = Instant::now() + Duration::from_secs(burst_secs);
        // Takes what has arrived in one go (as a run engine would), stamping each event with
        // the time it was taken.
        let mut buf = Vec::with_capacity(16_384);
        while Instant::now() < end {
            buf.clear();
            let got =
                tokio::time::timeout(Duration::from_secs(2), due_rx.recv_many(&mut buf, 16_384))
                    .await;
            if !matches!(got, Ok(n) if n > 0) {
                break;
            }
            let now = Utc::now();
            for due in &buf {
                every.push((now - due.scheduled).to_std().unwrap_or_default());
                match last_of.last_mut() {
                    Some((slot, last, n)) if *slot == due.scheduled => {
                        *last = now;
                        *n += 1;
                    }
                    _ => last_of.push((due.scheduled, now, 1)),
                }
            }
        }
        (last_of, every)
    });
    let (seconds, mut every) = consumer.await.unwrap();
    cancel.cancel();
    drop(handle);
    tasks.close();
    tasks.wait().await;
    // Only complete seconds: the first and last may be cut by the measurement window.
    let complete: Vec<_> = seconds.iter().filter(|(_, _, n)| *n == 10_000).collect();
    let mut to_last: Vec<Duration> = complete
        .iter()
        .map(|(slot, last, _)| (*last - *slot).to_std().unwrap_or_default())
        .collect();
    to_last.sort();
    every.sort();
    println!(
        "burst: 10,000 jobs due in the same second, {} complete seconds: due instant → last Due event p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        to_last.len(),
        percentile(&to_last, 0.50),
        percentile(&to_last, 0.99),
        to_last.last().copied().unwrap_or_default()
    );
    println!(
        "  every event ({}): p50 {:.2?}, p99 {:.2?}",
        every.len(),
        percentile(&every, 0.50),
        percentile(&every, 0.99)
    );
}
