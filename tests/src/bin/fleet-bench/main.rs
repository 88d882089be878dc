//! `fleet-bench`: the fleet-scale firing figures of `docs/performance.md`, measured against a
//! real lab (a master and 3 minions on this machine) with the real sidecar and agent:
//!
//! - `floor`: Salt's own floor, a warm `LocalClient` publishing `cmd.run` of `date +%s.%N` to
//!   the 3 minions, from the publish to the command's start.
//! - `firelag`: one job every 10 s on 3 minions, pre-armed (`lead_time: 2`) and not
//!   (`lead_time: 0`), side by side in one sidecar; the lag is the command's own start time
//!   minus the slot's instant.
//! - `burst`: 100 jobs due at the same second (`sec: 0`) on 3 minions, every minute for 3
//!   minutes: results recorded of 900, start lag, CPU and peak RSS of the sidecar and of each
//!   minion (its `salt-minion` tree with the agents and commands it starts).
//! - `scale`: the same with 1,000 jobs for 10 minutes (`BENCH_BURST_JOBS`/`_MINUTES` apply).
//!
//! `BENCH_TARGET=original` runs `firelag` (one path: the original has no pre-arming) and
//! `burst` against the original Saltpeter (PyPI 0.9.30) instead, measured the same way: the
//! command prints its own start time, results are read from the original's own records.
//!
//! Rerun: `CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo run
//! --release -p saltpeter-tests --bin fleet-bench` (`BENCH_ONLY=floor,firelag,burst,scale`: a list,
//! `BENCH_TARGET=ours|original`, `BENCH_FIRINGS` (50), `BENCH_BURST_JOBS` (100),
//! `BENCH_BURST_MINUTES` (3)).
#![allow(clippy::print_stdout)]

mod original;
mod procs;
mod store;

use std::time::{Duration, Instant};

use saltpeter_tests::{Lab, LabConfig, RunRecord, Sidecar, wait_until};

use crate::original::Original;
use crate::procs::{Member, Sampler};

fn main() -> anyhow::Result<()> {
    let only = std::env::var("BENCH_ONLY").ok();
    // A comma-separated list; `scale` runs only when named.
    let named = |name: &str| only.as_deref().is_some_and(|o| o.split(',').any(|w| w == name));
    let wanted = |name: &str| only.is_none() || named(name);
    let target = std::env::var("BENCH_TARGET").unwrap_or_else(|_| "ours".to_owned());
    let lab = Lab::start(LabConfig::default())?;
    let (sidecar, agent) =
        (saltpeter_tests::bin("saltpeter"), saltpeter_tests::bin("saltpeter-agent"));
    println!("lab {} (salt {}), load {}", lab.dir.display(), lab.salt_version, load());
    if target == "original" {
        println!("target: the original Saltpeter 0.9.30 of the lab venv {}", lab.venv.display());
        if wanted("floor") {
            floor(&lab)?;
        }
        if wanted("firelag") {
            original_fire_lag(&lab)?;
        }
        if wanted("burst") {
            let n = env_usize("BENCH_BURST_JOBS", 100);
            original_burst(&lab, n, env_usize("BENCH_BURST_MINUTES", 3))?;
        }
        return Ok(());
    }
    println!("target: ours, {} and {}", sidecar.display(), agent.display());
    if wanted("floor") {
        floor(&lab)?;
    }
    if wanted("firelag") {
        fire_lag(&lab);
    }
    if wanted("burst") {
        burst(&lab, env_usize("BENCH_BURST_JOBS", 100), env_usize("BENCH_BURST_MINUTES", 3))?;
    }
    if named("scale") {
        burst(&lab, env_usize("BENCH_BURST_JOBS", 1000), env_usize("BENCH_BURST_MINUTES", 10))?;
    }
    Ok(())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load() -> String {
    fs_err::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// `(p50, p99, max)` in milliseconds.
fn summary(samples: &mut [f64]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_by(f64::total_cmp);
    // Nearest rank: the sample below which a share `q` of them lie.
    let at = |q: f64| {
        let n = samples.len();
        let rank = (1..=n).find(|r| *r as f64 >= q * n as f64).unwrap_or(n);
        samples[rank.saturating_sub(1)] * 1000.0
    };
    format!(
        "n={} p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        at(0.0)
    )
}

/// Salt's floor: a warm LocalClient, `cmd.run` to every minion, publish → command start.
fn floor(lab: &Lab) -> anyhow::Result<()> {
    let script = r#"
import json, sys, time
import salt.client
client = salt.client.LocalClient(c_path=sys.argv[1])
client.cmd('*', 'test.ping', timeout=30)
lags = []
for i in range(int(sys.argv[2])):
    t0 = time.time()
    ret = client.cmd('*', 'cmd.run', ['date +%s.%N'], timeout=30)
    for minion, out in ret.items():
        try:
            lags.append(float(out) - t0)
        except ValueError:
            pass
    time.sleep(1)
print(json.dumps(lags))
"#;
    let n = env_usize("BENCH_FLOOR_PUBLISHES", 20).to_string();
    let out = std::process::Command::new(lab.venv.join("bin/python"))
        .args(["-c", script])
        .arg(&lab.master_config)
        .arg(&n)
        .env("SALTLAB_NODE", format!("{}::tool", lab.dir.display()))
        .output()?;
    let mut lags: Vec<f64> = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "the floor script printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    println!(
        "floor (warm LocalClient cmd.run to 3 minions, {n} publishes): {}",
        summary(&mut lags)
    );
    Ok(())
}

/// Per minion result: the command's start (it prints `date +%s.%N`) minus the slot's instant.
fn lags(runs: &[RunRecord]) -> (Vec<f64>, usize) {
    let mut lags = Vec::new();
    let mut bad = 0;
    for run in runs {
        let instant: f64 =
            run.instance.rsplit('_').next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        for r in &run.results {
            match (r.retcode, r.output.trim().parse::<f64>()) {
                (Some(0), Ok(started)) => lags.push(started - instant),
                _ => bad += 1,
            }
        }
    }
    (lags, bad)
}

fn job(name: &str, sec: &str, min: &str, body: &str) -> String {
    let mut yaml = format!(
        "{name}:\n  sec: '{sec}'\n  min: '{min}'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n"
    );
    for line in body.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn fire_lag(lab: &Lab) {
    let firings = env_usize("BENCH_FIRINGS", 50);
    let mut jobs =
        job("prearmed", "*/10", "*", "targets: '*'\nlead_time: 2\ncommand: 'date +%s.%N'");
    jobs.push_str(&job(
        "direct",
        "5,15,25,35,45,55",
        "*",
        "targets: '*'\nlead_time: 0\ncommand: 'date +%s.%N'",
    ));
    let sidecar = Sidecar::start(lab, &jobs);
    let limit = Duration::from_secs(12 * firings as u64 + 120);
    // The first firing of each may come while the sidecar warms up: skipped.
    let runs = |name: &str| {
        wait_until(&format!("{firings} runs of {name}"), limit, || {
            let done = sidecar.finished_runs(name);
            (done.len() > firings).then(|| done[1..=firings].to_vec())
        })
    };
    let (mut armed, bad_armed) = lags(&runs("prearmed"));
    let (mut direct, bad_direct) = lags(&runs("direct"));
    println!(
        "fire lag, pre-armed (lead 2 s), {firings} firings x 3 minions: {} (failed {bad_armed})",
        summary(&mut armed)
    );
    println!(
        "fire lag, not pre-armed (lead 0), {firings} firings x 3 minions: {} (failed {bad_direct})",
        summary(&mut direct)
    );
}

/// Polls `done` every second until it says so or `limit` passes; false on the deadline.
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    done()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// The next `count` whole minutes, leaving the scheduler at least 15 s to start: their
/// instants (seconds since the epoch) and the cron `min` field that names exactly them.
fn upcoming_minutes(count: usize) -> (Vec<i64>, String) {
    let now = now_secs();
    let first = (now / 60 + if now % 60 < 45 { 1 } else { 2 }) * 60;
    let instants: Vec<i64> = (0..count as i64).map(|i| first + 60 * i).collect();
    let field: Vec<String> = instants.iter().map(|t| ((t / 60) % 60).to_string()).collect();
    (instants, field.join(","))
}

/// The lab's minions as process groups, and `scheduler` besides.
fn groups(lab: &Lab, scheduler: Member) -> Vec<(String, Member)> {
    let mut groups = vec![("scheduler".to_owned(), scheduler)];
    for m in &lab.minions {
        let tag = format!("SALTLAB_NODE={}::{m}", lab.dir.display());
        groups.push((m.clone(), Member::Env(tag)));
    }
    groups
}

/// The highest 1-minute load average seen by `watch`.
#[derive(Default)]
struct PeakLoad(f64);

impl PeakLoad {
    fn watch(&mut self) {
        let now = load().split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(0.0);
        self.0 = self.0.max(now);
    }
}

/// `n` jobs due at second 0 of the same `minutes` minutes, against our sidecar; figures from
/// its run store.
fn burst(lab: &Lab, n: usize, minutes: usize) -> anyhow::Result<()> {
    let (instants, min_field) = upcoming_minutes(minutes);
    let mut jobs = String::new();
    for i in 0..n {
        let body = "targets: '*'\ncommand: 'date +%s.%N'";
        jobs.push_str(&job(&format!("burst-{i:04}"), "0", &min_field, body));
    }
    let sidecar = Sidecar::start(lab, &jobs);
    let sampler = Sampler::start(groups(lab, Member::Pid(sidecar.pid())));
    let db = sidecar.state_dir.join("saltpeter.db");
    let (first, last) = (instants[0], instants[minutes - 1]);
    let limit = Duration::from_secs(u64::try_from(last - now_secs()).unwrap_or(0) + 240);
    let mut peak = PeakLoad::default();
    let finished = |peak: &mut PeakLoad| -> usize {
        peak.watch();
        let per = store::runs_per_instant(&db, "burst-").unwrap_or_default();
        per.iter().filter(|(at, _, _)| (first..=last).contains(&(at / 1000))).map(|r| r.2).sum()
    };
    let complete = poll_until(limit, || finished(&mut peak) >= n * minutes);
    let (figures, over) = sampler.finish();
    let rows = store::results(&db, "burst-", first * 1000, last * 1000)?;
    let recorded = rows.iter().filter(|r| r.retcode.is_some()).count();
    let mut lag = Vec::new();
    let mut bad = 0;
    for r in &rows {
        match (r.retcode, r.output.trim().parse::<f64>()) {
            (Some(0), Ok(started)) => lag.push(started - r.instant),
            _ => bad += 1,
        }
    }
    let mut statuses = std::collections::BTreeMap::<&str, usize>::new();
    let mut paths = std::collections::BTreeMap::<&str, usize>::new();
    for r in &rows {
        *statuses.entry(r.status.as_str()).or_default() += 1;
        *paths.entry(r.path.as_deref().unwrap_or("none")).or_default() += 1;
    }
    println!(
        "burst (ours): {n} jobs x 3 minions x {minutes} minutes: {recorded} of {} results recorded \
         ({bad} not 0 or unparsable; {} runs finished of {}; complete: {complete}); \
         result rows by run status {statuses:?}",
        n * 3 * minutes,
        finished(&mut peak),
        n * minutes
    );
    println!("burst (ours) start lag: {}", summary(&mut lag));
    println!("burst (ours): result rows by dispatch path {paths:?}");
    procs::report("burst (ours)", &figures, over);
    println!("burst (ours): peak load average {:.1}, now {}", peak.0, load());
    Ok(())
}

/// The second part of an original instance name `<job>_<unix seconds>`: when it fired.
fn fired_at(instance: &str) -> Option<i64> {
    instance.rsplit('_').next()?.parse().ok()
}

/// The original: one job every 10 s on 3 minions; the lag is the command's own start time minus
/// the slot's instant (the original names its instance by the second it fired).
fn original_fire_lag(lab: &Lab) -> anyhow::Result<()> {
    let firings = env_usize("BENCH_FIRINGS", 50);
    let body = "targets: '*'\ntarget_type: glob\ncommand: 'date +%s.%N'";
    let orig = Original::start(lab, &job("firelag", "*/10", "*", body))?;
    let limit = Duration::from_secs(12 * firings as u64 + 120);
    let complete_instances = || {
        let mut per: std::collections::BTreeMap<i64, Vec<original::Logged>> = Default::default();
        for r in orig.results("firelag") {
            if let Some(at) = fired_at(&r.instance) {
                per.entry(at).or_default().push(r);
            }
        }
        per
    };
    let done = poll_until(limit, || complete_instances().len() > firings);
    let per = complete_instances();
    let (mut lags, mut bad) = (Vec::new(), 0);
    // The first firing may come while the original warms up: skipped, as for ours.
    for (at, results) in per.iter().skip(1).take(firings) {
        let instant = (at / 10 * 10) as f64;
        for r in results {
            match (r.retcode, r.output.trim().parse::<f64>()) {
                (0, Ok(started)) => lags.push(started - instant),
                _ => bad += 1,
            }
        }
        bad += 3usize.saturating_sub(results.len());
    }
    println!(
        "fire lag (original), {} firings x 3 minions: {} (failed or missing {bad}; complete: {done}); load {}",
        per.len().saturating_sub(1).min(firings),
        summary(&mut lags),
        load()
    );
    Ok(())
}

/// The original: `n` jobs due at second 0 of the same `minutes` minutes; results from its logs.
fn original_burst(lab: &Lab, n: usize, minutes: usize) -> anyhow::Result<()> {
    let (instants, min_field) = upcoming_minutes(minutes);
    let mut jobs = String::new();
    for i in 0..n {
        let body = "targets: '*'\ntarget_type: glob\ncommand: 'date +%s.%N'";
        jobs.push_str(&job(&format!("burst-{i:04}"), "0", &min_field, body));
    }
    let mut orig = Original::start(lab, &jobs)?;
    let sampler = Sampler::start(groups(lab, Member::Env(orig.marker.clone())));
    let last = instants[minutes - 1];
    // The original is known to fall far behind: give it `BENCH_ORIGINAL_GRACE` (300) seconds
    // after the last instant to record what it will.
    let grace = env_usize("BENCH_ORIGINAL_GRACE", 300) as u64;
    let limit = Duration::from_secs(u64::try_from(last - now_secs()).unwrap_or(0) + grace);
    let mut peak = PeakLoad::default();
    let expected = n * 3 * minutes;
    let complete = poll_until(limit, || {
        peak.watch();
        orig.results("burst-").len() >= expected
    });
    let alive = orig.is_running();
    let (figures, over) = sampler.finish();
    let mut seen = std::collections::BTreeSet::new();
    let (mut lag, mut codes) = (Vec::new(), std::collections::BTreeMap::<i32, usize>::new());
    for r in orig.results("burst-") {
        if !seen.insert((r.instance.clone(), r.minion.clone())) {
            continue;
        }
        *codes.entry(r.retcode).or_default() += 1;
        let instant =
            fired_at(&r.instance).and_then(|at| instants.iter().rev().find(|i| **i <= at).copied());
        if let (0, Ok(started), Some(instant)) =
            (r.retcode, r.output.trim().parse::<f64>(), instant)
        {
            lag.push(started - instant as f64);
        }
    }
    let correct = codes.get(&0).copied().unwrap_or(0);
    println!(
        "burst (original): {n} jobs x 3 minions x {minutes} minutes: {} of {expected} results \
         recorded, {correct} with exit 0 (by code {codes:?}; complete: {complete}; \
         scheduler alive: {alive})",
        seen.len()
    );
    println!("burst (original) start lag of the exit-0 results: {}", summary(&mut lag));
    procs::report("burst (original)", &figures, over);
    let console = orig.console();
    let errors = console.lines().filter(|l| l.contains("Error") || l.contains("Traceback")).count();
    println!(
        "burst (original): peak load average {:.1}, now {}; its console: {} lines, {errors} with \
         Error/Traceback ({})",
        peak.0,
        load(),
        console.lines().count(),
        orig.dir.join("original.log").display()
    );
    Ok(())
}
