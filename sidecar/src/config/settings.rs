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
    /// Retention of finished runs for jobs that set neither `history_days` nor `max_runs`.
    pub history_days: u32,
    pub max_runs: Option<u32>,
    /// How jobs without `dispatch:` reach their minions; `None`: coalesced when the agent is
    /// `saltpeter-agent`, one publish per run (`SP_*`) for any other wrapper.
    pub default_dispatch: Option<super::job::Dispatch>,
    /// How long before its instant a coalesced run is published and armed (0: at the instant).
    pub default_lead_time: std::time::Duration,
    /// `minion_dispatch`: how runs reach the minions whose ids match a glob, whatever their
    /// job's mode (the first matching entry wins): `single` for minions still on the original
    /// wrapper or the Go agent, `legacy` for minions without an agent. `use_wrapper: false`
    /// jobs stay legacy everywhere.
    pub minion_dispatch: Vec<MinionDispatch>,
    /// Who may use the HTTP API and UI (`api_tokens`); empty = loopback only, as admin.
    pub api_tokens: Vec<ApiToken>,
    /// Origins allowed to call the API from a browser (`api_cors_origins`); empty = CORS off.
    pub api_cors_origins: Vec<String>,
    /// Read jobs and maintenance from pillar `saltpeter:jobs` / `saltpeter:maintenance`.
    pub pillar: bool,
    /// The minion id whose pillar holds the jobs; `None` = the master's own id.
    pub pillar_minion: Option<String>,
    /// How often the pillar is read again without an event.
    pub pillar_refresh: std::time::Duration,
    /// PEM certificate chain and private key: both set = the API and the agent WebSocket serve
    /// TLS, and agents dial `wss://` (crate::tls).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CA file agents verify the sidecar with (`SP_CA_FILE`, a path on the minions);
    /// `None` = the minions' system roots.
    pub tls_ca_file: Option<String>,
}

/// One `minion_dispatch` entry: minions whose id matches `glob` take `mode`, with the agent at
/// `wrapper_path` if set (else the job's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinionDispatch {
    /// Salt's glob syntax (`*`, `?`, `[...]`).
    pub glob: glob::Pattern,
    pub mode: MinionMode,
    pub wrapper_path: Option<String>,
}

/// The dispatch modes a minion can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinionMode {
    Coalesced,
    Single,
    Legacy,
}

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read everything (job definitions with `env` values redacted).
    Viewer,
    /// Also run now, kill, and put machines in maintenance.
    Operator,
    /// Also reload the configuration.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// One API token: its name (written to the audit log), the SHA-256 of its secret, its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub role: Role,
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
            history_days: 30,
            max_runs: None,
            default_dispatch: None,
            default_lead_time: std::time::Duration::from_secs(2),
            minion_dispatch: Vec::new(),
            api_tokens: Vec::new(),
            api_cors_origins: Vec::new(),
            pillar: true,
            pillar_minion: None,
            pillar_refresh: std::time::Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            tls_ca_file: None,
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
    if let Some(days) = v.count(&raw.history_days, "history_days") {
        s.history_days = days;
    }
    if let Some(n) = v.count(&raw.max_runs, "max_runs") {
        s.max_runs = Some(n);
    }
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
    if let Some(d) = v.choice(
        &raw.default_dispatch,
        "default_dispatch",
        &[("coalesced", super::job::Dispatch::Coalesced), ("single", super::job::Dispatch::Single)],
    ) {
        s.default_dispatch = Some(d);
    }
    if let Some(lead) =
        raw.default_lead_time.as_ref().and_then(|l| v.seconds(l, "default_lead_time"))
    {
        s.default_lead_time = lead;
    }
    if let Some(map) = raw.minion_dispatch.as_ref().filter(|t| !t.is_null()) {
        s.minion_dispatch = minion_dispatch(map, v);
    }
    if let Some(tokens) = raw.api_tokens.as_ref().filter(|t| !t.is_null()) {
        s.api_tokens = api_tokens(tokens, v);
    }
    if let Some(origins) = raw.api_cors_origins.as_ref().filter(|t| !t.is_null()) {
        s.api_cors_origins = match origins {
            Value::Sequence(items) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(o) if o.starts_with("http://") || o.starts_with("https://") => {
                        Some(o.trim_end_matches('/').to_owned())
                    }
                    other => {
                        v.err(
                            "api_cors_origins",
                            format!(
                                "{} is not an origin like https://ops.example.com",
                                show(other)
                            ),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                v.err("api_cors_origins", format!("{} is not a list of origins", show(other)));
                Vec::new()
            }
        };
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
    for (value, key, into) in
        [(&raw.tls_cert, "tls_cert", &mut s.tls_cert), (&raw.tls_key, "tls_key", &mut s.tls_key)]
    {
        if let Some(path) = v.string_opt(value, key) {
            *into = Some(PathBuf::from(path)).filter(|p| !p.as_os_str().is_empty());
        }
    }
    if let Some(path) = v.string_opt(&raw.tls_ca_file, "tls_ca_file") {
        s.tls_ca_file = Some(path).filter(|p| !p.is_empty());
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

/// `api_tokens: [{name, sha256, role}]`: every entry checked, every problem reported.
fn api_tokens(value: &Value, v: &mut Validator) -> Vec<ApiToken> {
    let key = "api_tokens";
    let Value::Sequence(items) = value else {
        v.err(key, format!("{} is not a list of {{name, sha256, role}}", show(value)));
        return Vec::new();
    };
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |f: &str| item.get(f).and_then(Value::as_str).map(str::trim);
        let at = format!("{key}[{i}]");
        let Some(map) = item.as_mapping() else {
            v.err(&at, format!("{} is not a map of name, sha256 and role", show(item)));
            continue;
        };
        for k in map.keys() {
            if !matches!(k.as_str(), Some("name" | "sha256" | "role")) {
                v.warn(
                    &at,
                    format!("unknown key {}, ignored (known: name, sha256, role)", show(k)),
                );
            }
        }
        let name = match field("name") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                v.err(&format!("{at}.name"), "is required (it names the token in the audit log)");
                continue;
            }
        };
        let mut sha256 = [0u8; 32];
        match field("sha256").map(|h| hex::decode_to_slice(h, &mut sha256)) {
            Some(Ok(())) => {}
            _ => {
                v.err(
                    &format!("{at}.sha256"),
                    format!("token {name:?} needs the 64 hex digits of its secret's SHA-256 (`saltpeter token new` prints them)"),
                );
                continue;
            }
        }
        let Some(role) = field("role").and_then(Role::parse) else {
            v.err(
                &format!("{at}.role"),
                format!("token {name:?} needs a role: viewer, operator or admin"),
            );
            continue;
        };
        if tokens.iter().any(|t| t.name == name) {
            v.err(&format!("{at}.name"), format!("two tokens are named {name:?}"));
            continue;
        }
        tokens.push(ApiToken { name, sha256, role });
    }
    tokens
}

/// `minion_dispatch`: a map of minion id glob to `coalesced|single|legacy`, or to a map with
/// `dispatch` and `wrapper_path`.
fn minion_dispatch(value: &Value, v: &mut Validator) -> Vec<MinionDispatch> {
    const KEY: &str = "minion_dispatch";
    let Value::Mapping(map) = value else {
        v.err(KEY, format!("{} is not a map of minion id globs to dispatch modes", show(value)));
        return Vec::new();
    };
    let mode_of = |s: &str| match s {
        "coalesced" => Some(MinionMode::Coalesced),
        "single" => Some(MinionMode::Single),
        "legacy" => Some(MinionMode::Legacy),
        _ => None,
    };
    let mut entries = Vec::new();
    for (glob, spec) in map {
        let Value::String(glob) = glob else {
            v.err(KEY, format!("{} is not a minion id glob", show(glob)));
            continue;
        };
        let (mode, wrapper_path) = match spec {
            Value::String(m) => (m.as_str(), None),
            Value::Mapping(m) => {
                let field = |k: &str| m.get(Value::from(k)).and_then(Value::as_str);
                if let Some(unknown) =
                    m.keys().find(|k| !matches!(k.as_str(), Some("dispatch" | "wrapper_path")))
                {
                    v.err(
                        KEY,
                        format!("{glob}: unknown key {} (dispatch, wrapper_path)", show(unknown)),
                    );
                }
                (field("dispatch").unwrap_or(""), field("wrapper_path").map(str::to_owned))
            }
            other => {
                v.err(KEY, format!("{glob}: {} is not a dispatch mode", show(other)));
                continue;
            }
        };
        let pattern = match glob::Pattern::new(glob) {
            Ok(p) => p,
            Err(e) => {
                v.err(KEY, format!("{glob}: not a minion id glob: {e}"));
                continue;
            }
        };
        match mode_of(mode) {
            Some(mode) => entries.push(MinionDispatch { glob: pattern, mode, wrapper_path }),
            None => v.err(
                KEY,
                format!("{glob}: `{mode}` is not a dispatch mode (coalesced, single, legacy)"),
            ),
        }
    }
    entries
}
