//! `saltpeter run JOB --now` and `saltpeter kill INSTANCE [--minion ID]`: ask the running daemon,
//! through its HTTP API (`--api`, default http://127.0.0.1:8888; the daemon serves it with `-a`).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args as ClapArgs;

/// Where the daemon's API is.
#[derive(Debug, Clone, ClapArgs)]
pub struct Api {
    /// The daemon's HTTP API.
    #[arg(long, env = "SALTPETER_API_URL", default_value = "http://127.0.0.1:8888")]
    pub api: String,
    /// An API token's secret (see `saltpeter token new`); not needed on the master's loopback
    /// when no api_tokens are configured.
    #[arg(long, env = "SALTPETER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// The job to run.
    pub job: String,
    /// Run it now, outside its schedule (the only mode there is; kept for the original's habit).
    #[arg(long)]
    pub now: bool,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: Api,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct KillArgs {
    /// The run's instance id (see `saltpeter runs`).
    pub instance: String,
    /// Kill only this minion's part of the run.
    #[arg(long)]
    pub minion: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: Api,
}

impl Api {
    /// Calls the API at `path` (under the base URL) and answers the body, or the API's error.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.api.trim_end_matches('/'));
        send(method, &url, self.token.as_deref(), body)
    }
}

fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let tls = crate::tls::api_client_tls()?;
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build().into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            match body {
                Some(b) => r.send_json(b),
                None => r.send_empty(),
            }
        }
    };
    let mut response = result.with_context(|| format!("reach the daemon at {url}"))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("{status}: {message}");
    }
    Ok(body)
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/jobs/{}/run", super::jobs::urlencode(&args.job));
    let body = args.api.call("POST", &path, None)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{body}")?;
    } else {
        let answer: serde_json::Value =
            serde_json::from_str(&body).context("read the API's answer")?;
        let slot = answer["scheduled"].as_str().unwrap_or("now");
        writeln!(
            out,
            "{} started (slot {slot}); follow it with `saltpeter runs --job {}`",
            args.job, args.job
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(args: &KillArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/runs/{}/kill", super::jobs::urlencode(&args.instance));
    if let Some(minion) = &args.minion {
        path.push_str(&format!("?minion={}", super::jobs::urlencode(minion)));
    }
    let body = args.api.call("POST", &path, None)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{body}")?;
    } else {
        let what = args.minion.as_ref().map_or_else(String::new, |m| format!(" on {m}"));
        writeln!(
            out,
            "kill of {}{what} asked; it reports killed (143) once the processes ended",
            args.instance
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
