//! `saltpeter jobs` and `saltpeter maintenance`: the daemon's jobs and maintenance through its
//! API (with a token), as a table or, with `--json`, as JSON (the jobs: every page in one array).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{Value, json};

use super::control::Api;

#[derive(Debug, ClapArgs)]
pub struct JobsArgs {
    /// Only jobs whose name, group, description or target contains this.
    pub search: Option<String>,
    /// Print the jobs as one JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: Api,
}

#[derive(Debug, ClapArgs)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    pub command: Option<MaintenanceCommand>,
    /// Print the API's JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub api: Api,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// What is in maintenance (the default).
    List {
        #[command(flatten)]
        api: Api,
    },
    /// Put the fleet (`--global`), a minion (`--minion ID`) or a target (`--target EXPR`) in
    /// maintenance.
    Start {
        #[arg(long, conflicts_with_all = ["minion", "target"])]
        global: bool,
        #[arg(long, conflicts_with = "target")]
        minion: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Salt's target type for --target.
        #[arg(long, default_value = "glob")]
        target_type: String,
        /// Why (shown in the UI and the audit log).
        #[arg(long)]
        why: String,
        /// When it ends by itself (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        api: Api,
    },
    /// End an entry early.
    End {
        id: i64,
        #[command(flatten)]
        api: Api,
    },
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let text: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

pub fn jobs(args: &JobsArgs) -> anyhow::Result<ExitCode> {
    // The API answers a page at a time; read them all (the list is sorted by name).
    let mut jobs: Vec<Value> = Vec::new();
    loop {
        let mut path = format!("/api/v1/jobs?limit=1000&offset={}", jobs.len());
        if let Some(q) = &args.search {
            path.push_str(&format!("&q={}", urlencode(q)));
        }
        let body = args.api.call("GET", &path, None)?;
        let page: Value = serde_json::from_str(&body).context("read the API's answer")?;
        let got = page["jobs"].as_array().context("the API's answer has no `jobs`")?;
        let total = page["total"].as_u64().unwrap_or(0);
        jobs.extend(got.iter().cloned());
        if got.is_empty() || jobs.len() as u64 >= total {
            break;
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", Value::Array(jobs))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let last = &j["last_result"];
            let rate = j["success_rate"].as_f64().map(|r| format!("{:.0}%", r * 100.0));
            vec![
                s(&j["name"]),
                s(&j["group"]),
                s(&j["schedule"]),
                s(&j["targets"]),
                s(&j["next_runs"][0]),
                if j["running"] == true { "running".into() } else { s(&last["status"]) },
                rate.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["JOB", "GROUP", "SCHEDULE", "TARGETS", "NEXT RUN", "LAST", "SUCCESS"];
    write!(out, "{}", table(&header, &rows))?;
    Ok(ExitCode::SUCCESS)
}

pub fn maintenance(args: &MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let body = match &args.command {
        None => args.api.call("GET", "/api/v1/maintenance", None)?,
        Some(MaintenanceCommand::List { api }) => api.call("GET", "/api/v1/maintenance", None)?,
        Some(MaintenanceCommand::Start {
            global,
            minion,
            target,
            target_type,
            why,
            until,
            api,
        }) => {
            let request = match (global, minion, target) {
                (true, _, _) => json!({"scope": "global", "why": why, "until": until}),
                (_, Some(m), _) => {
                    json!({"scope": "minion", "target": m, "why": why, "until": until})
                }
                (_, _, Some(t)) => {
                    json!({"scope": "target", "target": t, "target_type": target_type, "why": why, "until": until})
                }
                _ => anyhow::bail!("say what: --global, --minion ID or --target EXPR"),
            };
            let body = api.call("POST", "/api/v1/maintenance", Some(&request))?;
            if !args.json {
                let e: Value = serde_json::from_str(&body).context("read the API's answer")?;
                writeln!(out, "maintenance #{} started", s(&e["id"]))?;
                return Ok(ExitCode::SUCCESS);
            }
            body
        }
        Some(MaintenanceCommand::End { id, api }) => {
            let body = api.call("DELETE", &format!("/api/v1/maintenance/{id}"), None)?;
            if !args.json {
                writeln!(out, "maintenance #{id} ended")?;
                return Ok(ExitCode::SUCCESS);
            }
            body
        }
    };
    if args.json {
        writeln!(out, "{body}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let m: Value = serde_json::from_str(&body).context("read the API's answer")?;
    let eff = &m["effective"];
    writeln!(
        out,
        "In effect: {}; machines: {}",
        if eff["global"] == true { "the WHOLE FLEET is in maintenance" } else { "not global" },
        eff["machines"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into())
    )?;
    let rows: Vec<Vec<String>> = m["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    vec![
                        s(&e["id"]),
                        s(&e["scope"]),
                        s(&e["target"]),
                        s(&e["who"]),
                        s(&e["why"]),
                        s(&e["until"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        writeln!(out, "No entries set through the API.")?;
    } else {
        write!(out, "{}", table(&["ID", "SCOPE", "TARGET", "WHO", "WHY", "UNTIL"], &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
