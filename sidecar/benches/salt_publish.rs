//! Publish round trip against a real lab: `test.ping` to every minion, from the publish request
//! to the last return, for our client, Salt's Python `LocalClient` and the `salt` CLI, in one run.
//!
//! ```text
//! cargo bench -p saltpeter --bench salt_publish -- --master-config DIR/master/conf/master \
//!     --salt-bin VENV/bin [--minions minion-1,minion-2,minion-3] [--runs 200] [--cli-runs 200]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use saltpeter::salt::{JobUpdate, MasterConfig, Publish, SaltClient, Target};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentiles(mut times: Vec<Duration>) -> String {
    if times.is_empty() {
        return "(not run)".to_owned();
    }
    times.sort();
    let at = |p: f64| {
        let idx = ((times.len() as f64 - 1.0) * p).round();
        // `idx` is within 0..len by construction.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        times[idx as usize]
    };
    format!(
        "n={:<4} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

async fn ours(config: &MasterConfig, minions: &[String], runs: usize) -> Vec<Duration> {
    let client = SaltClient::connect(config).await.unwrap();
    let job = Publish::new(Target::list(minions), "test.ping");
    let mut times = Vec::new();
    for i in 0..runs + 5 {
        let started = Instant::now();
        let mut run = client.run_job(&job, Duration::from_secs(30)).await.unwrap();
        let mut returned = 0;
        while let Some(update) = run.next().await {
            match update {
                JobUpdate::Return(_) => returned += 1,
                JobUpdate::NotReturned(ids) => eprintln!("run {i}: no return from {ids:?}"),
                JobUpdate::BusGap | JobUpdate::Lagged(_) => {}
            }
        }
        if returned != minions.len() {
            eprintln!("run {i}: {returned} returns");
        }
        if i >= 5 {
            times.push(started.elapsed()); // the first five are warm-up
        }
    }
    times
}

fn local_client(
    python: &PathBuf,
    config: &std::path::Path,
    minions: &str,
    runs: usize,
) -> Vec<Duration> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/salt_publish.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(config)
        .arg(minions)
        .arg(runs.to_string())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("LocalClient side failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let secs: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    secs.into_iter().map(Duration::from_secs_f64).collect()
}

fn salt_cli(
    salt: &PathBuf,
    conf_dir: &std::path::Path,
    minions: &str,
    runs: usize,
) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let out = std::process::Command::new(salt)
            .arg("-c")
            .arg(conf_dir)
            .args(["-L", minions, "test.ping", "--out=quiet", "-t", "30"])
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("salt CLI failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        times.push(started.elapsed());
    }
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let master_config = PathBuf::from(arg(&args, "--master-config").expect("--master-config PATH"));
    let bin = PathBuf::from(arg(&args, "--salt-bin").expect("--salt-bin VENV/bin"));
    let minions = arg(&args, "--minions").unwrap_or_else(|| "minion-1,minion-2,minion-3".into());
    let runs: usize = arg(&args, "--runs").map_or(200, |r| r.parse().unwrap());
    let cli_runs: usize = arg(&args, "--cli-runs").map_or(runs, |r| r.parse().unwrap());
    let ids: Vec<String> = minions.split(',').map(str::to_owned).collect();
    let config = MasterConfig::load(&master_config).unwrap();
    let conf_dir = master_config.parent().unwrap().to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rust = runtime.block_on(ours(&config, &ids, runs));
    let python = local_client(&bin.join("python"), &master_config, &minions, runs);
    let cli = salt_cli(&bin.join("salt"), &conf_dir, &minions, cli_runs);

    println!("test.ping to {} minions, publish to last return", ids.len());
    println!("saltpeter SaltClient::run_job  {}", percentiles(rust));
    println!("Salt LocalClient.cmd (Python)  {}", percentiles(python));
    println!("salt CLI (process per call)    {}", percentiles(cli));
}
