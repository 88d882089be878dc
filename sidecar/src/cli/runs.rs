//! `saltpeter runs [--job NAME] [--limit N]` and `saltpeter runs INSTANCE`: the recorded runs,
//! read straight from the run store (read-only, beside a running daemon).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;

use crate::store::{Reader, RunFilter, RunRow};

#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Show this run with every minion's result and output.
    pub instance: Option<String>,
    /// Only runs of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
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

pub fn run(state_dir: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(state_dir)
        .with_context(|| format!("open the run store in {}", state_dir.display()))?;
    let mut out = std::io::stdout().lock();
    let Some(instance) = &args.instance else {
        let filter = RunFilter { job: args.job.clone(), limit: args.limit, ..RunFilter::default() };
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
