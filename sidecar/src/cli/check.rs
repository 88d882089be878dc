//! `saltpeter check`: validates the config directory, prints each job's next fire instants (in
//! its zone and in UTC) and every warning and error; exits 1 when there is an error, 64 when the
//! directory cannot be read or an argument is wrong. `--json` prints exactly
//! `{"jobs":[{"name","group","timezone","next":[..],"dispatch","lead_time"}],"errors":[{"file","job","field","message"}],"warnings":[..]}`
//! (`dispatch`: `coalesced`, `single` or `legacy`; `lead_time`: seconds before the instant a
//! coalesced run is published and armed, 0 when it is not pre-armed).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::{self, Diagnostic, Loaded};
use crate::runs::{DispatchMode, EngineSettings, lead_of};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compute fire instants after this instant (RFC 3339) instead of now.
    #[arg(long)]
    pub from: Option<String>,
    /// How many fire instants to show per job.
    #[arg(long, default_value_t = 5)]
    pub next: usize,
    /// Show only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Output {
    jobs: Vec<JobOut>,
    errors: Vec<DiagOut>,
    warnings: Vec<DiagOut>,
}

#[derive(Serialize)]
struct JobOut {
    name: String,
    group: String,
    timezone: String,
    next: Vec<String>,
    dispatch: &'static str,
    lead_time: f64,
}

#[derive(Serialize)]
struct DiagOut {
    file: String,
    job: Option<String>,
    field: Option<String>,
    message: String,
}

impl From<&Diagnostic> for DiagOut {
    fn from(d: &Diagnostic) -> Self {
        let message = match d.origin.line {
            Some(line) => format!("{} (line {line})", d.message),
            None => d.message.clone(),
        };
        DiagOut {
            file: d.origin.file.display().to_string(),
            job: d.job.clone(),
            field: d.field.clone(),
            message,
        }
    }
}

pub fn run(dir: &Path, args: &Args) -> ExitCode {
    let from = match &args.from {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                eprintln!("saltpeter check: --from {text:?} is not an RFC 3339 instant: {e}");
                return ExitCode::from(64);
            }
        },
    };
    let loaded = match config::load_dir(dir, from) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("saltpeter check: cannot read the config directory {}: {e}", dir.display());
            return ExitCode::from(64);
        }
    };
    let output = build(&loaded, from, args);
    if args.json {
        match serde_json::to_string(&output) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("saltpeter check: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print_text(&loaded, &output, from, args);
    }
    if loaded.report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn build(loaded: &Loaded, from: DateTime<Utc>, args: &Args) -> Output {
    let engine = EngineSettings {
        default_wrapper_path: loaded.settings.default_wrapper_path.clone(),
        default_dispatch: loaded.settings.default_dispatch,
        default_lead_time: loaded.settings.default_lead_time,
        ..EngineSettings::default()
    };
    let jobs = loaded
        .jobs
        .values()
        .filter(|j| args.job.as_deref().is_none_or(|name| j.name.as_str() == name))
        .map(|j| JobOut {
            name: j.name.to_string(),
            group: j.group.clone(),
            timezone: j.schedule.zone().name().to_owned(),
            next: if j.enabled { j.schedule.upcoming(from, args.next) } else { Vec::new() }
                .iter()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .collect(),
            dispatch: match engine.mode(j) {
                DispatchMode::Coalesced => "coalesced",
                DispatchMode::Single => "single",
                DispatchMode::Legacy => "legacy",
            },
            lead_time: lead_of(j, &engine).as_secs_f64(),
        })
        .collect();
    let wanted = |d: &&Diagnostic| {
        args.job.as_deref().is_none_or(|name| d.job.as_deref().is_none_or(|j| j == name))
    };
    Output {
        jobs,
        errors: loaded.report.errors.iter().filter(wanted).map(DiagOut::from).collect(),
        warnings: loaded.report.warnings.iter().filter(wanted).map(DiagOut::from).collect(),
    }
}

fn print_text(loaded: &Loaded, output: &Output, from: DateTime<Utc>, args: &Args) {
    println!(
        "Jobs ({}), next {} fire instants after {}:",
        output.jobs.len(),
        args.next,
        from.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    for job in &output.jobs {
        let Some(j) = loaded.jobs.values().find(|j| j.name.as_str() == job.name) else { continue };
        let state = if j.enabled { "" } else { " [disabled]" };
        println!(
            "  {} (group {}, {}, `{}`){state}",
            job.name,
            job.group,
            job.timezone,
            j.schedule.cron().as_str()
        );
        let lead = if job.lead_time > 0.0 {
            format!(", pre-armed {}s before the instant", job.lead_time)
        } else {
            String::new()
        };
        println!("      dispatch: {}{lead}", job.dispatch);
        if job.next.is_empty() {
            println!("      never fires");
        }
        for at in j.schedule.upcoming(from, if j.enabled { args.next } else { 0 }) {
            let local = at.with_timezone(&j.schedule.zone());
            println!(
                "      {}  ({})",
                local.format("%Y-%m-%d %H:%M:%S %Z"),
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
    }
    let show = |title: &str, list: &[&Diagnostic]| {
        if !list.is_empty() {
            println!("{title} ({}):", list.len());
            for d in list {
                println!("  {d}");
            }
        }
    };
    show("Warnings", &pick(&loaded.report.warnings, args));
    show("Errors", &pick(&loaded.report.errors, args));
    if loaded.report.errors.is_empty() {
        println!("OK");
    }
}

fn pick<'a>(list: &'a [Diagnostic], args: &Args) -> Vec<&'a Diagnostic> {
    list.iter()
        .filter(|d| args.job.as_deref().is_none_or(|n| d.job.as_deref().is_none_or(|j| j == n)))
        .collect()
}

#[cfg(test)]
mod tests;
