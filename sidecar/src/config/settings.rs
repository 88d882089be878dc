//! `Settings` (the reserved key `saltpeter_config`: the daemon's own settings, every key of the
//! original with its default) and `Maintenance` (`saltpeter_maintenance`), kept apart from jobs.

use std::path::PathBuf;

use chrono_tz::Tz;
use serde_yaml::Value;

use super::job::{Validator, WrapperLogLevel, show};
use super::raw::{RawMaintenance, RawSettings, did_you_mean};

/// The daemon's settings. Ports and addresses are read at start; the rest apply on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Per-job log files `<logdir>/<job>.log`.
    pub logdir: PathBuf,
    pub debug: bool,
    /// Serve the HTTP API and UI.
    pub api_ws: bool,
    pub api_ws_port: u16,
    pub api_ws_bind_addr: String,
    /// Where agents connect.
    pub machines_ws_port: u16,
    pub machines_ws_bind_addr: String,
    /// The host agents dial back to; default: this machine's host name.
    pub default_saltpeter_server_host: String,
    pub default_wrapper_path: String,
    pub default_wrapper_loglevel: WrapperLogLevel,
    pub default_wrapper_logdir: String,
    /// Elasticsearch / OpenSearch URLs; empty = off.
    pub elasticsearch: String,
    pub opensearch: String,
    pub elasticsearch_index: String,
    pub opensearch_index: String,
    /// The zone of jobs that set neither `timezone` nor `utc`.
    pub timezone: Tz,
    /// Read jobs and maintenance from pillar `saltpeter:jobs` / `saltpeter:maintenance`.
    pub pillar: bool,
    /// The minion id whose pillar holds the jobs; `None` = the master's own id.
    pub pillar_minion: Option<String>,
    /// How often the pillar is read again without an event.
    pub pillar_refresh: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            logdir: "/var/log/saltpeter".into(),
            debug: false,
            api_ws: false,
            api_ws_port: 8888,
            api_ws_bind_addr: "127.0.0.1".into(),
            machines_ws_port: 8889,
            machines_ws_bind_addr: "0.0.0.0".into(),
            default_saltpeter_server_host: host_name(),
            default_wrapper_path: "/usr/local/bin/sp_wrapper.py".into(),
            default_wrapper_loglevel: WrapperLogLevel::Normal,
            default_wrapper_logdir: "/var/log/sp_wrapper".into(),
            elasticsearch: String::new(),
            opensearch: String::new(),
            elasticsearch_index: "saltpeter".into(),
            opensearch_index: "saltpeter".into(),
            timezone: Tz::UTC,
            pillar: true,
            pillar_minion: None,
            pillar_refresh: std::time::Duration::from_secs(60),
        }
    }
}

fn host_name() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Machines excluded from runs, or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// No new run starts anywhere.
    pub global: bool,
    /// Minion ids excluded from every run.
    pub machines: Vec<String>,
}

/// Applies one `saltpeter_config` block over `settings`, key by key.
pub(super) fn apply_settings(settings: &mut Settings, raw: RawSettings, v: &mut Validator) {
    for key in raw.unknown.keys() {
        let hint = did_you_mean(key, RawSettings::KEYS)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        v.warn(key, format!("unknown setting, ignored{hint}"));
    }
    let s = settings;
    let string = |v: &mut Validator, value: &Option<Value>, key: &str, into: &mut String| {
        if let Some(x) = v.string_opt(value, key) {
            *into = x;
        }
    };
    let mut logdir = s.logdir.display().to_string();
    string(v, &raw.logdir, "logdir", &mut logdir);
    s.logdir = logdir.into();
    string(v, &raw.api_ws_bind_addr, "api_ws_bind_addr", &mut s.api_ws_bind_addr);
    string(v, &raw.machines_ws_bind_addr, "machines_ws_bind_addr", &mut s.machines_ws_bind_addr);
    string(
        v,
        &raw.default_saltpeter_server_host,
        "default_saltpeter_server_host",
        &mut s.default_saltpeter_server_host,
    );
    string(v, &raw.default_wrapper_path, "default_wrapper_path", &mut s.default_wrapper_path);
    string(v, &raw.default_wrapper_logdir, "default_wrapper_logdir", &mut s.default_wrapper_logdir);
    string(v, &raw.elasticsearch, "elasticsearch", &mut s.elasticsearch);
    string(v, &raw.opensearch, "opensearch", &mut s.opensearch);
    string(v, &raw.elasticsearch_index, "elasticsearch_index", &mut s.elasticsearch_index);
    string(v, &raw.opensearch_index, "opensearch_index", &mut s.opensearch_index);
    if let Some(b) = v.boolean(&raw.debug, "debug") {
        s.debug = b;
    }
    if let Some(b) = v.boolean(&raw.api_ws, "api_ws") {
        s.api_ws = b;
    }
    for (value, key, into) in [
        (&raw.api_ws_port, "api_ws_port", &mut s.api_ws_port),
        (&raw.machines_ws_port, "machines_ws_port", &mut s.machines_ws_port),
    ] {
        if let Some(n) = v.count(value, key) {
            match u16::try_from(n) {
                Ok(port) if port > 0 => *into = port,
                _ => v.err(key, format!("{n} is not a TCP port (1-65535)")),
            }
        }
    }
    if let Some(level) = v.choice(
        &raw.default_wrapper_loglevel,
        "default_wrapper_loglevel",
        &[
            ("normal", WrapperLogLevel::Normal),
            ("debug", WrapperLogLevel::Debug),
            ("off", WrapperLogLevel::Off),
        ],
    ) {
        s.default_wrapper_loglevel = level;
    }
    if let Some(b) = v.boolean(&raw.pillar, "pillar") {
        s.pillar = b;
    }
    if let Some(id) = v.string_opt(&raw.pillar_minion, "pillar_minion") {
        s.pillar_minion = Some(id).filter(|id| !id.is_empty());
    }
    if let Some(value) = raw.pillar_refresh.as_ref().filter(|x| !x.is_null())
        && let Some(every) = v.seconds(value, "pillar_refresh")
    {
        if every < std::time::Duration::from_secs(1) {
            v.err("pillar_refresh", "must be at least 1 second");
        } else {
            s.pillar_refresh = every;
        }
    }
    match &raw.timezone {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => match name.parse::<Tz>() {
            Ok(tz) => s.timezone = tz,
            Err(_) => v.err(
                "timezone",
                format!("{name:?} is not an IANA time zone name (like Europe/Berlin or UTC)"),
            ),
        },
        Some(other) => v.err("timezone", format!("{} is not a time zone name", show(other))),
    }
}

pub(super) fn maintenance(raw: RawMaintenance, v: &mut Validator) -> Maintenance {
    for key in raw.unknown.keys() {
        v.warn(
            key,
            format!(
                "unknown maintenance key, ignored (known: {})",
                RawMaintenance::KEYS.join(", ")
            ),
        );
    }
    let machines = match &raw.machines {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => {
                    v.err("machines", format!("{} is not a minion id", show(other)));
                    None
                }
            })
            .collect(),
        Some(other) => {
            v.err("machines", format!("{} is not a list of minion ids", show(other)));
            Vec::new()
        }
    };
    Maintenance { global: v.boolean(&raw.global, "global").unwrap_or(false), machines }
}
