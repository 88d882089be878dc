//! Where the master is: read from the master's own config file, the way Salt reads it.
//!
//! The main file, then `default_include` (`master.d/*.conf` beside it), then `include`, each
//! later file deep-merged over the earlier ones. Paths Salt puts under `root_dir` (`sock_dir`,
//! `cachedir`) get the same treatment here, so a lab or a chrooted master is found too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::target::Nodegroup;

/// The master's default main config file.
pub const DEFAULT_MASTER_CONFIG: &str = "/etc/salt/master";

/// How the master's local event sockets are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpcEndpoint {
    /// AF_UNIX stream socket (`ipc_mode: ipc`, the default on Linux).
    Unix(PathBuf),
    /// TCP on loopback (`ipc_mode: tcp`).
    Tcp(String),
}

impl std::fmt::Display for IpcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// What Saltpeter needs to know about the local master.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The main config file this was read from.
    pub path: PathBuf,
    pub sock_dir: PathBuf,
    /// Where the master reads events from, i.e. where we fire them (`master_event_pull`).
    pub event_pull: IpcEndpoint,
    /// Where the master publishes its events (`master_event_pub`).
    pub event_pub: IpcEndpoint,
    /// The request port, as a ZeroMQ endpoint (`tcp://127.0.0.1:4506`).
    pub request_endpoint: String,
    pub cachedir: PathBuf,
    /// The user the master runs as (`user:`), if the config says.
    pub user: Option<String>,
    /// The key file local clients authenticate with (`<cachedir>/.<user>_key`).
    pub key_file: PathBuf,
    pub nodegroups: BTreeMap<String, Nodegroup>,
    /// The master's own minion id (`id:`), if the config sets it; Salt's default is the host's
    /// name with `_master` appended.
    pub id: Option<String>,
}

/// Reading the master config failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the Salt master config {path} (run saltpeter on the master as the master's \
         user, or point --salt-master-config at the master's config file)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the Salt master config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("Salt master config {path}: `{field}`: {reason}")]
    Field { path: PathBuf, field: &'static str, reason: String },
}

impl MasterConfig {
    /// Reads the master config at `path` with its includes.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut opts = read_yaml(path)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let default_include = string(&opts, "default_include").unwrap_or("master.d/*.conf".into());
        for file in expand_include(dir, &default_include) {
            // A missing default include is normal; an unreadable one is not.
            merge(&mut opts, read_yaml(&file)?);
        }
        let includes: Vec<String> = match opts.get("include") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(items)) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            _ => Vec::new(),
        };
        for pattern in includes {
            for file in expand_include(dir, &pattern) {
                merge(&mut opts, read_yaml(&file)?);
            }
        }
        Self::from_opts(path, &opts)
    }

    fn from_opts(path: &Path, opts: &Mapping) -> Result<Self, ConfigError> {
        let field_err = |field: &'static str, reason: String| ConfigError::Field {
            path: path.to_owned(),
            field,
            reason,
        };
        let root_dir = PathBuf::from(string(opts, "root_dir").unwrap_or_else(|| "/".into()));
        let under_root = |key: &str, default: &str| {
            let p = string(opts, key).unwrap_or_else(|| default.to_owned());
            prepend_root(&root_dir, Path::new(&p))
        };
        let sock_dir = under_root("sock_dir", "/var/run/salt/master");
        let cachedir = under_root("cachedir", "/var/cache/salt/master");
        let port = |key: &'static str, default: u16| -> Result<u16, ConfigError> {
            match opts.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| field_err(key, format!("{n} is not a port"))),
                Some(Value::String(s)) => {
                    s.trim().parse().map_err(|_| field_err(key, format!("{s:?} is not a port")))
                }
                Some(_) => Err(field_err(key, "expected a port number".into())),
            }
        };
        let ret_port = port("ret_port", 4506)?;
        let interface = string(opts, "interface").unwrap_or_else(|| "0.0.0.0".into());
        let host = match interface.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_owned(),
            "::" => "[::1]".to_owned(),
            other if other.contains(':') && !other.starts_with('[') => format!("[{other}]"),
            other => other.to_owned(),
        };
        let ipc_mode = string(opts, "ipc_mode").unwrap_or_else(|| "ipc".into());
        let (event_pub, event_pull) = match ipc_mode.as_str() {
            "tcp" => (
                IpcEndpoint::Tcp(format!("127.0.0.1:{}", port("tcp_master_pub_port", 4512)?)),
                IpcEndpoint::Tcp(format!("127.0.0.1:{}", port("tcp_master_pull_port", 4513)?)),
            ),
            "ipc" => (
                IpcEndpoint::Unix(sock_dir.join("master_event_pub.ipc")),
                IpcEndpoint::Unix(sock_dir.join("master_event_pull.ipc")),
            ),
            other => {
                return Err(field_err("ipc_mode", format!("{other:?} is neither ipc nor tcp")));
            }
        };
        let user = string(opts, "user");
        let key_file = cachedir.join(format!(".{}_key", key_user(user.as_deref())));
        let nodegroups = match opts.get("nodegroups") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Mapping(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), Nodegroup::from_yaml(v)?)))
                .collect(),
            Some(_) => return Err(field_err("nodegroups", "expected a map".into())),
        };
        Ok(Self {
            path: path.to_owned(),
            sock_dir,
            event_pub,
            event_pull,
            request_endpoint: format!("tcp://{host}:{ret_port}"),
            cachedir,
            user,
            key_file,
            nodegroups,
            id: string(opts, "id").filter(|id| !id.is_empty()),
        })
    }

    /// A hint for permission errors: which user to run as.
    pub fn run_as_hint(&self) -> String {
        match &self.user {
            Some(u) => format!("run saltpeter as the master's user `{u}`"),
            None => "run saltpeter as the user the master runs as".to_owned(),
        }
    }
}

/// Whose key file a local client reads, as Salt's `LocalClient` decides: the current user's,
/// except that root uses the master user's key when the master runs as someone else.
fn key_user(master_user: Option<&str>) -> String {
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_owned(), |u| u.name);
    match master_user {
        Some(m) if me == "root" && m != "root" => m.to_owned(),
        _ => me,
    }
}

fn read_yaml(path: &Path) -> Result<Mapping, ConfigError> {
    let text = fs_err::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err(ConfigError::Field {
            path: path.to_owned(),
            field: "(top level)",
            reason: "expected a map of options".into(),
        }),
        Err(source) => Err(ConfigError::Parse { path: path.to_owned(), source }),
    }
}

fn string(opts: &Mapping, key: &str) -> Option<String> {
    match opts.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Salt's `salt.utils.dictupdate.update(..., recursive_update=True)` for two option maps.
fn merge(into: &mut Mapping, from: Mapping) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Mapping(dst)), Value::Mapping(src)) => merge(dst, src),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The files an include pattern names, relative to the main file's directory, sorted.
fn expand_include(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let full =
        if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { dir.join(pattern) };
    let (parent, name) = match (full.parent(), full.file_name().and_then(|n| n.to_str())) {
        (Some(p), Some(n)) => (p.to_owned(), n.to_owned()),
        _ => return Vec::new(),
    };
    if !name.contains(['*', '?', '[']) {
        return if full.exists() { vec![full] } else { Vec::new() };
    }
    let Ok(entries) = fs_err::read_dir(&parent) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(&name, n)))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Shell-style `*` and `?` matching (as `fnmatch` without classes): include patterns, tag globs.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Salt's `prepend_root_dir`: a path already under `root_dir` stays; any other path is taken as
/// relative to `root_dir` (with the default root `/`, nothing changes).
fn prepend_root(root_dir: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix(root_dir).unwrap_or(path);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    root_dir.join(rel)
}
