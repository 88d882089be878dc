//! `fleet-bench`: the fleet-scale firing figures of `docs/performance.md`, measured against a
//! real lab (a master and 3 minions on this machine) with the real sidecar and agent:
//!
//! - `floor`: Salt's own floor, a warm `LocalClient` publishing `cmd.run` of `date +%s.%N` to
//!   the 3 minions, from the publish to the command's start.
//! - `firelag`: one job every 10 s on 3 minions, pre-armed (`lead_time: 2`) and not
//!   (`lead_time: 0`), side by side in one sidecar; the lag is the command's own start time
//!   minus the slot's instant.
//! - `burst`: 100 jobs due at the same second (`sec: 0`) on 3 minions, every minute for 3
//!   minutes: results recorded of 900, start lag, and the sidecar's CPU and peak RSS.
//!
//! Rerun: `CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo run
//! --release -p saltpeter-tests --bin fleet-bench` (`BENCH_ONLY=floor|firelag|burst`,
//! `BENCH_FIRINGS` (50), `BENCH_BURST_JOBS` (100), `BENCH_BURST_MINUTES` (3)).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use saltpeter_tests::{Lab, LabConfig, RunRecord, Sidecar, wait_until};

fn main() -> anyhow::Result<()> {
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let lab = Lab::start(LabConfig::default())?;
    saltpeter_tests::bin("saltpeter");
    saltpeter_tests::bin("saltpeter-agent");
    println!("lab {} (salt {}), load {}", lab.dir.display(), lab.salt_version, load());
    if wanted("floor") {
        floor(&lab)?;
    }
    if wanted("firelag") {
        fire_lag(&lab);
    }
    if wanted("burst") {
        burst(&lab);
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

/// `(utime + stime in seconds, VmHWM in MiB)` of a process.
fn cpu_and_peak(pid: u32) -> (f64, f64) {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // After the `)`: state is field 0, utime 11, stime 12 (clock ticks of 10 ms).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = fs_err::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm / 1024.0)
}

fn burst(lab: &Lab) {
    let n = env_usize("BENCH_BURST_JOBS", 100);
    let minutes = env_usize("BENCH_BURST_MINUTES", 3);
    let mut jobs = String::new();
    for i in 0..n {
        jobs.push_str(&job(
            &format!("burst-{i:03}"),
            "0",
            "*",
            "targets: '*'\ncommand: 'date +%s.%N'",
        ));
    }
    let sidecar = Sidecar::start(lab, &jobs);
    let started = Instant::now();
    let (cpu0, _) = cpu_and_peak(sidecar.pid());
    let limit = Duration::from_secs(60 * (minutes as u64 + 2));
    let runs: Vec<RunRecord> = wait_until(&format!("{minutes} firings of {n} jobs"), limit, || {
        let mut all = Vec::new();
        for i in 0..n {
            let done = sidecar.finished_runs(&format!("burst-{i:03}"));
            if done.len() < minutes {
                return None;
            }
            all.extend(done.into_iter().take(minutes));
        }
        Some(all)
    });
    let (cpu1, peak) = cpu_and_peak(sidecar.pid());
    let recorded: usize =
        runs.iter().map(|r| r.results.iter().filter(|m| m.retcode.is_some()).count()).sum();
    let (mut lag, bad) = lags(&runs);
    println!(
        "burst: {n} jobs x 3 minions x {minutes} minutes: {recorded} of {} results recorded ({bad} not 0 or unparsable)",
        n * 3 * minutes
    );
    println!("burst start lag: {}", summary(&mut lag));
    println!(
        "burst sidecar: {:.1} s CPU over {:.0} s, peak RSS {peak:.0} MiB; load {}",
        cpu1 - cpu0,
        started.elapsed().as_secs_f64(),
        load()
    );
}
