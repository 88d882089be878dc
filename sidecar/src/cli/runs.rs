//! `saltpeter runs [--job NAME] [--status S] [--minion ID] [--since T] [--limit N]` and
//! `saltpeter runs INSTANCE`: the recorded runs, asked of the running daemon's API (with a token),
//! as a table or, with `--json`, as the API answered. `--store` reads the run store in
//! `--state-dir` instead (read-only, beside a running daemon or without one).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;
use serde_json::Value;

use super::control::Api;
use super::jobs::{s, table, urlencode};
use crate::store::{Reader, RunFilter, RunRow, RunStatus};

#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Show this run with every minion's result and output.
    pub instance: Option<String>,
    /// Only runs of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only runs in this status (pending, running, succeeded, failed, skipped, cancelled, killed).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs that targeted this minion.
    #[arg(long)]
    pub minion: Option<String>,
    /// Only runs scheduled at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// How many runs, newest first (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the API's JSON.
    #[arg(long, conflicts_with = "store")]
    pub json: bool,
    /// Read the run store in --state-dir instead of asking the daemon.
    #[arg(long)]
    pub store: bool,
    #[command(flatten)]
    pub api: Api,
}

pub fn run(state_dir: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    if args.store { from_store(state_dir, args) } else { from_api(args) }
}

/// `2026-11-23 14:05:09` (UTC) from an RFC 3339 value; `-` when absent.
fn at(v: &Value) -> String {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(|| "-".to_owned(), |t| t.to_utc().format("%Y-%m-%d %H:%M:%S").to_string())
}

fn took(run: &Value) -> String {
    let t = |k: &str| run[k].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    match (t("started"), t("finished")) {
        (Some(a), Some(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
        (Some(_), None) => "running".to_owned(),
        _ => "-".to_owned(),
    }
}

fn from_api(args: &Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if let Some(instance) = &args.instance {
        let path = format!("/api/v1/runs/{}", urlencode(instance));
        let body = args.api.call("GET", &path, None)?;
        if args.json {
            writeln!(out, "{body}")?;
            return Ok(ExitCode::SUCCESS);
        }
        let run: Value = serde_json::from_str(&body).context("read the API's answer")?;
        writeln!(
            out,
            "{} ({}): {}, {} at {} UTC, took {}{}",
            s(&run["instance"]),
            s(&run["job"]),
            s(&run["status"]),
            s(&run["trigger"]),
            at(&run["scheduled"]),
            took(&run),
            run["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )?;
        let results = run["results"].as_array().cloned().unwrap_or_default();
        for r in &results {
            let minion = s(&r["minion"]);
            writeln!(
                out,
                "\n== {minion} ({}, exit {}, {}) {}",
                s(&r["phase"]),
                s(&r["retcode"]),
                took(r),
                r["reason"].as_str().unwrap_or_default()
            )?;
            let path =
                format!("/api/v1/runs/{}/output/{}", urlencode(instance), urlencode(&minion));
            out.write_all(args.api.call("GET", &path, None)?.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut path = format!("/api/v1/runs?limit={}", args.limit);
    for (key, value) in [
        ("job", args.job.clone()),
        ("status", args.status.clone()),
        ("minion", args.minion.clone()),
        ("since", args.since.map(|t| t.to_rfc3339())),
    ] {
        if let Some(v) = value {
            path.push_str(&format!("&{key}={}", urlencode(&v)));
        }
    }
    let body = args.api.call("GET", &path, None)?;
    if args.json {
        writeln!(out, "{body}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let page: Value = serde_json::from_str(&body).context("read the API's answer")?;
    let rows: Vec<Vec<String>> = page["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    vec![
                        s(&r["instance"]),
                        s(&r["job"]),
                        s(&r["status"]),
                        s(&r["trigger"]),
                        at(&r["scheduled"]),
                        took(r),
                        r["reason"].as_str().unwrap_or_default().to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        writeln!(out, "No runs match.")?;
    } else {
        let header = ["INSTANCE", "JOB", "STATUS", "TRIGGER", "SCHEDULED (UTC)", "TOOK", "REASON"];
        write!(out, "{}", table(&header, &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn line(run: &RunRow) -> String {
    format!(
        "{:<36} {:<10} {:<9} {}  {}",
        run.instance,
        run.status.as_str(),
        crate::store::trigger_name(run.trigger),
        when(Some(run.scheduled)),
        run.reason
    )
}

fn from_store(state_dir: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(state_dir)
        .with_context(|| format!("open the run store in {}", state_dir.display()))?;
    let mut out = std::io::stdout().lock();
    let Some(instance) = &args.instance else {
        let status = match args.status.as_deref() {
            None => None,
            Some(st) => {
                Some(RunStatus::parse(st).with_context(|| format!("--status: no status {st:?}"))?)
            }
        };
        let filter = RunFilter {
            job: args.job.clone(),
            status,
            minion: args.minion.clone(),
            since: args.since,
            limit: args.limit,
            ..RunFilter::default()
        };
        writeln!(
            out,
            "{:<36} {:<10} {:<9} {:<19}  reason",
            "instance", "status", "trigger", "scheduled (UTC)"
        )?;
        for run in reader.runs(&filter)? {
            writeln!(out, "{}", line(&run))?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(run) = reader.run(instance)? else {
        anyhow::bail!("no run {instance} in {}", state_dir.display());
    };
    writeln!(out, "{}", line(&run))?;
    for r in reader.results(instance)? {
        let code = r.retcode.map_or_else(|| "-".to_owned(), |c| c.to_string());
        writeln!(out, "\n== {} ({}, exit {code}) {}", r.minion, r.phase, r.reason)?;
        for chunk in reader.output(instance, &r.minion)? {
            out.write_all(&chunk.data)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
