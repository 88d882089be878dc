//! The Salt client: publishing jobs, calling runners and wheels through the request port with the
//! master's key, and following what comes back on the event bus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rmpv::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::bus::{BusItem, EventBus, Link, Subscription};
use super::config::MasterConfig;
use super::event::{EventKind, Jid, MinionId, RunReturn};
use super::fire::{EventFirer, FireError};
use super::frame::Framing;
use super::ipc::IpcError;
use super::job::JobRun;
use super::request::{RequestError, clear_request, field, text, text_list};
use super::target::{NodegroupError, Target, TargetType, expand_compound, expand_nodegroup};

/// How long one request to the master may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Something the master or the way to it refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the master's key {path} ({hint})")]
    KeyUnreadable {
        path: PathBuf,
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the master rejected the key in {path} (is it this master's key file?)")]
    KeyRejected { path: PathBuf },
    #[error("the master refused: {0}")]
    Denied(String),
    #[error("no minion matches the target: {0}")]
    NoMinions(String),
    #[error("the master answered with an error: {0}")]
    Master(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Bus(#[from] IpcError),
    #[error(transparent)]
    Fire(#[from] FireError),
    #[error(transparent)]
    Nodegroup(#[from] NodegroupError),
    #[error("no `{tag}` event within {waited:?}")]
    NoResult { tag: String, waited: Duration },
    #[error("the event bus closed")]
    BusClosed,
}

/// A job to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    pub target: Target,
    pub fun: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments; sent as Salt's trailing `{"__kwarg__": true, ...}` map.
    pub kwargs: Vec<(String, Value)>,
    /// Our own jid, for idempotent retries; one is generated when `None`.
    pub jid: Option<Jid>,
    /// The `user` label the job carries in events and the job cache.
    pub user: String,
}

impl Publish {
    pub fn new(target: Target, fun: impl Into<String>) -> Self {
        Self {
            target,
            fun: fun.into(),
            args: Vec::new(),
            kwargs: Vec::new(),
            jid: None,
            user: "saltpeter".to_owned(),
        }
    }
    pub fn arg(mut self, v: impl Into<Value>) -> Self {
        self.args.push(v.into());
        self
    }
    pub fn kwarg(mut self, name: impl Into<String>, v: impl Into<Value>) -> Self {
        self.kwargs.push((name.into(), v.into()));
        self
    }
}

/// The master accepted a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub jid: Jid,
    /// The master's prediction of who will answer.
    pub minions: Vec<MinionId>,
    /// `list` targets without an accepted key.
    pub missing: Vec<MinionId>,
}

/// A minion's return as the master's job cache keeps it.
#[derive(Debug, Clone)]
pub struct CachedReturn {
    pub id: MinionId,
    pub ret: Value,
    pub retcode: Option<i64>,
    pub success: Option<bool>,
}

/// A wheel call's result.
#[derive(Debug, Clone)]
pub struct WheelReturn {
    pub jid: Option<Jid>,
    pub ret: Value,
    pub success: bool,
}

/// The client. Cheap to share behind an `Arc`; every request uses a fresh socket.
pub struct SaltClient {
    endpoint: String,
    key_file: PathBuf,
    hint: String,
    key: Mutex<Option<String>>,
    nodegroups: std::collections::BTreeMap<String, super::target::Nodegroup>,
    bus: EventBus,
    firer: EventFirer,
    timeout: Duration,
}

impl SaltClient {
    /// Connects to the master described by `config`: reads its key and subscribes to its bus,
    /// so that a wrong user or a stopped master is reported here, once, clearly.
    pub async fn connect(config: &MasterConfig) -> Result<Self, ClientError> {
        let bus = EventBus::connect(config.event_pub.clone()).await?;
        let client = Self {
            endpoint: config.request_endpoint.clone(),
            key_file: config.key_file.clone(),
            hint: config.run_as_hint(),
            key: Mutex::new(None),
            nodegroups: config.nodegroups.clone(),
            firer: EventFirer::new(config.event_pull.clone(), bus.clone()),
            bus,
            timeout: REQUEST_TIMEOUT,
        };
        client.read_key().await?;
        Ok(client)
    }

    /// Uses another key file (tests, or a publisher_acl user's key).
    pub async fn with_key_file(mut self, path: &Path) -> Result<Self, ClientError> {
        self.key_file = path.to_owned();
        *self.key.get_mut() = None;
        self.read_key().await?;
        Ok(self)
    }

    /// The event bus this client follows.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// A subscription to every event.
    pub fn subscribe(&self) -> Subscription {
        self.bus.subscribe()
    }

    /// Fires an event with our own tag and data (a map) onto the master bus.
    pub async fn fire_event(&self, tag: &str, data: Value) -> Result<Framing, ClientError> {
        Ok(self.firer.fire(tag, data).await?)
    }

    async fn read_key(&self) -> Result<String, ClientError> {
        let text = tokio::fs::read_to_string(&self.key_file).await.map_err(|source| {
            ClientError::KeyUnreadable {
                path: self.key_file.clone(),
                hint: self.hint.clone(),
                source,
            }
        })?;
        let key = text.trim().to_owned();
        *self.key.lock().await = Some(key.clone());
        Ok(key)
    }

    async fn key(&self) -> Result<String, ClientError> {
        if let Some(k) = self.key.lock().await.clone() {
            return Ok(k);
        }
        self.read_key().await
    }

    /// Sends a load with the key; on an authentication error re-reads the key file once (3006
    /// masters write a new key at every start) and retries; on no answer retries once on a
    /// fresh socket (publishes carry our jid, so the minions drop a duplicate).
    async fn authed(&self, load: Vec<(Value, Value)>) -> Result<Value, ClientError> {
        let mut key = self.key().await?;
        let mut reread = false;
        let mut retried = false;
        loop {
            let mut with_key = load.clone();
            with_key.push(("key".into(), key.as_str().into()));
            let reply =
                match clear_request(&self.endpoint, Value::Map(with_key), self.timeout).await {
                    Ok(r) => r,
                    Err(e @ (RequestError::Timeout { .. } | RequestError::Transport { .. }))
                        if !retried =>
                    {
                        warn!(error = %e, "Salt request failed; retrying once on a fresh socket.");
                        retried = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
            let auth_failed = field(&reply, "error")
                .and_then(|e| field(e, "name"))
                .and_then(text)
                .is_some_and(|n| n == "AuthenticationError" || n == "UserAuthenticationError");
            // Salt's LocalClient also treats an empty reply as "key changed".
            let empty = matches!(&reply, Value::Map(m) if m.is_empty());
            if !(auth_failed || empty) {
                return Ok(reply);
            }
            if reread {
                return Err(ClientError::KeyRejected { path: self.key_file.clone() });
            }
            reread = true;
            let fresh = self.read_key().await?;
            if fresh == key && auth_failed {
                return Err(ClientError::KeyRejected { path: self.key_file.clone() });
            }
            debug!(path = %self.key_file.display(), "Re-read the master key after a rejection.");
            key = fresh;
        }
    }

    /// Publishes a job; returns its jid and the minions expected to answer.
    pub async fn publish(&self, job: &Publish) -> Result<Published, ClientError> {
        let (tgt, tgt_type) = match job.target.kind {
            TargetType::Nodegroup => {
                (expand_nodegroup(&job.target.expr, &self.nodegroups)?, TargetType::Compound)
            }
            TargetType::Compound => {
                (expand_compound(&job.target.expr, &self.nodegroups)?, TargetType::Compound)
            }
            kind => (job.target.expr.clone(), kind),
        };
        let tgt = if tgt_type == TargetType::List {
            Value::Array(tgt.split(',').map(|s| Value::from(s.trim())).collect())
        } else {
            Value::from(tgt)
        };
        let mut arg = job.args.clone();
        if !job.kwargs.is_empty() {
            let mut kw = vec![("__kwarg__".into(), Value::Boolean(true))];
            kw.extend(job.kwargs.iter().map(|(k, v)| (Value::from(k.as_str()), v.clone())));
            arg.push(Value::Map(kw));
        }
        let jid = job.jid.clone().unwrap_or_else(next_jid);
        let load = vec![
            ("cmd".into(), "publish".into()),
            ("tgt".into(), tgt),
            ("tgt_type".into(), tgt_type.as_str().into()),
            ("fun".into(), job.fun.as_str().into()),
            ("arg".into(), Value::Array(arg)),
            ("ret".into(), "".into()),
            ("jid".into(), jid.as_str().into()),
            ("user".into(), job.user.as_str().into()),
            ("kwargs".into(), Value::Map(Vec::new())),
        ];
        let reply = self.authed(load).await?;
        let Some(load) = field(&reply, "load") else {
            return Err(master_error(&reply));
        };
        match field(load, "jid").and_then(text) {
            Some(jid) if !jid.is_empty() => Ok(Published {
                jid: Jid::new(jid),
                minions: text_list(field(load, "minions")).into_iter().map(MinionId::new).collect(),
                missing: text_list(field(load, "missing")).into_iter().map(MinionId::new).collect(),
            }),
            _ => {
                let msg =
                    field(load, "error").and_then(text).unwrap_or_else(|| job.target.expr.clone());
                Err(ClientError::NoMinions(msg))
            }
        }
    }

    /// Publishes a job and follows it: subscribes first (no return is missed), then yields each
    /// minion's return as it arrives, then the expected minions that did not return by `timeout`.
    pub async fn run_job(&self, job: &Publish, timeout: Duration) -> Result<JobRun, ClientError> {
        let sub = self.subscribe();
        self.ensure_live().await;
        let published = self.publish(job).await?;
        Ok(JobRun::new(sub, published, Instant::now() + timeout))
    }

    /// Makes sure the bus reader is registered with the master before we act: on a quiet master
    /// a new connection receives nothing until the publisher has accepted it, so we fire an event
    /// and wait to see bytes.
    async fn ensure_live(&self) {
        let mut link = self.bus.link();
        if matches!(*link.borrow(), Link::Up { live: true, .. }) {
            return;
        }
        if let Err(e) = self.firer.fire("saltpeter/sync", Value::Map(Vec::new())).await {
            debug!(error = %e, "Could not fire a sync event; going on.");
        }
        let live = link.wait_for(|l| matches!(l, Link::Up { live: true, .. }));
        let _ = tokio::time::timeout(Duration::from_secs(2), live).await;
    }

    /// Calls a runner (`manage.up`, `pillar.show_pillar`, `jobs.lookup_jid`) and waits up to
    /// `timeout` for its `salt/run/<jid>/ret` event.
    pub async fn runner(
        &self,
        fun: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        timeout: Duration,
    ) -> Result<RunReturn, ClientError> {
        let mut sub = self.subscribe();
        self.ensure_live().await;
        let low = Value::Map(vec![
            ("arg".into(), Value::Array(args)),
            ("kwarg".into(), kwargs_map(kwargs)),
        ]);
        let load = vec![
            ("cmd".into(), "runner".into()),
            ("fun".into(), fun.into()),
            ("user".into(), "saltpeter".into()),
            ("kwarg".into(), low),
        ];
        let reply = self.authed(load).await?;
        let Some(jid) = field(&reply, "jid").and_then(text) else {
            return Err(master_error(&reply));
        };
        let tag = format!("salt/run/{jid}/ret");
        let wait = async {
            while let Some(item) = sub.recv().await {
                if let BusItem::Event(e) = item
                    && let EventKind::RunReturn(r) = &e.kind
                    && r.jid.as_str() == jid
                {
                    return Ok(r.clone());
                }
            }
            Err(ClientError::BusClosed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::NoResult { tag, waited: timeout })?
    }

    /// The returns the master's job cache holds for `jid` (runner `jobs.lookup_jid`), by minion:
    /// how to fill a gap after [`JobUpdate::BusGap`](super::JobUpdate::BusGap). The cache keeps
    /// return values only, not retcodes.
    pub async fn lookup_jid(
        &self,
        jid: &Jid,
        timeout: Duration,
    ) -> Result<Vec<(MinionId, Value)>, ClientError> {
        let kwargs = vec![("jid".to_owned(), Value::from(jid.as_str()))];
        let ret = self.runner("jobs.lookup_jid", Vec::new(), kwargs, timeout).await?;
        let value = ret.ret.decode().map_err(|e| ClientError::Master(e.to_string()))?;
        Ok(match value {
            Value::Map(entries) => entries
                .into_iter()
                .filter_map(|(k, v)| Some((MinionId::new(text(&k)?), v)))
                .collect(),
            _ => Vec::new(),
        })
    }

    /// Follows the returns of a job published before (by an earlier process of ours): `minions`
    /// are the ones still awaited. Returns that came before this call are not replayed; read
    /// them with [`cached_returns`](Self::cached_returns) after it.
    pub async fn follow_job(&self, jid: Jid, minions: Vec<MinionId>, timeout: Duration) -> JobRun {
        let sub = self.subscribe();
        self.ensure_live().await;
        let published = Published { jid, minions, missing: Vec::new() };
        JobRun::new(sub, published, Instant::now() + timeout)
    }

    /// The returns the master's job cache holds for `jid` with their codes (runner
    /// `jobs.list_job`, whose `Result` is the cache's `return`, `retcode` and `success` per
    /// minion).
    pub async fn cached_returns(
        &self,
        jid: &Jid,
        timeout: Duration,
    ) -> Result<Vec<CachedReturn>, ClientError> {
        let kwargs = vec![("jid".to_owned(), Value::from(jid.as_str()))];
        let ret = self.runner("jobs.list_job", Vec::new(), kwargs, timeout).await?;
        let value = ret.ret.decode().map_err(|e| ClientError::Master(e.to_string()))?;
        let Some(Value::Map(results)) = field(&value, "Result") else { return Ok(Vec::new()) };
        Ok(results
            .iter()
            .filter_map(|(minion, load)| {
                let retcode = field(load, "retcode").and_then(Value::as_i64);
                let success = field(load, "success").and_then(Value::as_bool);
                Some(CachedReturn {
                    id: MinionId::new(text(minion)?),
                    ret: field(load, "return").cloned().unwrap_or(Value::Nil),
                    retcode,
                    success,
                })
            })
            .collect())
    }

    /// Calls a wheel function (`key.list_all`); the reply carries the result.
    pub async fn wheel(
        &self,
        fun: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<WheelReturn, ClientError> {
        // No `user` key: the wheel matches every other top-level key against the function.
        let load = vec![
            ("cmd".into(), "wheel".into()),
            ("fun".into(), fun.into()),
            ("arg".into(), Value::Array(args)),
            ("kwarg".into(), kwargs_map(kwargs)),
        ];
        let reply = self.authed(load).await?;
        let Some(data) = field(&reply, "data") else {
            return Err(master_error(&reply));
        };
        Ok(WheelReturn {
            jid: field(data, "jid").and_then(text).map(Jid::new),
            ret: field(data, "return").cloned().unwrap_or(Value::Nil),
            success: matches!(field(data, "success"), Some(Value::Boolean(true))),
        })
    }
}

fn kwargs_map(kwargs: Vec<(String, Value)>) -> Value {
    Value::Map(kwargs.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

/// The error in a reply that is not what we asked for.
fn master_error(reply: &Value) -> ClientError {
    if let Some(err) = field(reply, "error") {
        let name = field(err, "name").and_then(text).unwrap_or_default();
        let message = field(err, "message").and_then(text).unwrap_or_else(|| format!("{err}"));
        return if name == "AuthorizationError" {
            ClientError::Denied(message)
        } else {
            ClientError::Master(format!("{name}: {message}"))
        };
    }
    ClientError::Master(text(reply).unwrap_or_else(|| format!("{reply}")))
}

/// A jid of ours: Salt's format, strictly increasing within this process so that concurrent
/// publishes never share one.
fn next_jid() -> Jid {
    static LAST: std::sync::Mutex<Option<chrono::NaiveDateTime>> = std::sync::Mutex::new(None);
    let now = chrono::Utc::now().naive_utc();
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = match *last {
        Some(prev) if prev >= now => prev + chrono::TimeDelta::microseconds(1),
        _ => now,
    };
    *last = Some(t);
    Jid::new(t.format("%Y%m%d%H%M%S%6f").to_string())
}
