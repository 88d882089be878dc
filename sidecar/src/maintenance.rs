//! Runtime maintenance: entries set through the API (the whole fleet, one minion, or a Salt target
//! expression), each with who set it, why and until when, kept in the store so they survive a
//! restart, and merged with the files' `saltpeter_maintenance` into the one `config::Maintenance`
//! the run engine matches minion ids against. An entry of the files' (or pillar's) `machines`
//! that is a Salt target expression rather than an id (`is_expression`) is resolved the same way.
//!
//! One task owns the entries. A target expression is resolved to minion ids through Salt when the
//! entry is set and again every [`REFRESH`], so minions that join a matching group are covered;
//! expired entries fall out at their `until`. Every change publishes a new [`Snapshot`] on a
//! `watch` channel; the daemon hands its `effective` value to the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::Maintenance;
use crate::runs::RunsHandle;
use crate::salt::{Publish, SaltClient, Target, TargetType};
use crate::store::{MaintenanceRow, StoreError, StoreHandle, Write};

/// How often target expressions are resolved again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// What an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No new run starts anywhere.
    Global,
    /// One minion id.
    Minion(String),
    /// Every minion a Salt target expression matches.
    Target(Target),
}

impl Scope {
    /// The stored `(scope, target)` columns.
    fn columns(&self) -> (&'static str, String) {
        match self {
            Scope::Global => ("global", String::new()),
            Scope::Minion(id) => ("minion", id.clone()),
            Scope::Target(t) => ("target", format!("{}:{}", t.kind.as_str(), t.expr)),
        }
    }

    fn from_columns(scope: &str, target: &str) -> Option<Scope> {
        match scope {
            "global" => Some(Scope::Global),
            "minion" => Some(Scope::Minion(target.to_owned())),
            "target" => {
                // The type never contains ':', the expression may (grains).
                let (kind, expr) = target.split_once(':')?;
                Some(Scope::Target(Target::new(expr, kind.parse::<TargetType>().ok()?)))
            }
            _ => None,
        }
    }
}

/// A new entry.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub scope: Scope,
    pub who: String,
    pub why: String,
    pub until: Option<DateTime<Utc>>,
}

/// An entry in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub scope: Scope,
    pub who: String,
    pub why: String,
    pub created: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    /// The minions it covers now (a target's last resolution; `None` before the first).
    pub minions: Option<Vec<String>>,
}

/// Everything about maintenance now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// From the config files (and pillar).
    pub file: Maintenance,
    /// Set through the API, oldest first.
    pub entries: Vec<Entry>,
    /// What the engine applies: the union of both.
    pub effective: Maintenance,
}

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no maintenance entry {0} is in effect")]
    NotFound(i64),
    #[error("{0} is in the past")]
    Past(DateTime<Utc>),
    #[error("maintenance has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Command {
    Start {
        entry: NewEntry,
        reply: oneshot::Sender<Result<Entry, MaintenanceError>>,
    },
    End {
        id: i64,
        who: String,
        reply: oneshot::Sender<Result<Entry, MaintenanceError>>,
    },
    File(Maintenance),
    Resolved {
        id: i64,
        minions: Vec<String>,
    },
    /// A target expression of the files' `machines` resolved to these minions.
    FileResolved {
        expr: String,
        minions: Vec<String>,
    },
}

/// Talks to the maintenance task; cheap to clone.
#[derive(Clone)]
pub struct MaintenanceHandle {
    tx: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<Snapshot>>,
}

impl MaintenanceHandle {
    /// Sets an entry (written to the store and the audit log first).
    pub async fn start(&self, entry: NewEntry) -> Result<Entry, MaintenanceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Start { entry, reply })
            .await
            .map_err(|_| MaintenanceError::Stopped)?;
        rx.await.map_err(|_| MaintenanceError::Stopped)?
    }

    /// Ends an entry early.
    pub async fn end(&self, id: i64, who: &str) -> Result<Entry, MaintenanceError> {
        let (reply, rx) = oneshot::channel();
        let who = who.to_owned();
        self.tx
            .send(Command::End { id, who, reply })
            .await
            .map_err(|_| MaintenanceError::Stopped)?;
        rx.await.map_err(|_| MaintenanceError::Stopped)?
    }

    /// The files' maintenance changed (a reload).
    pub async fn set_file(&self, file: Maintenance) {
        let _ = self.tx.send(Command::File(file)).await;
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.borrow().clone()
    }

    /// Follows every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.view.clone()
    }
}

/// Loads the entries in effect from the store and starts the task. `salt` resolves target
/// expressions (without it, a target entry covers no minion and a warning says so).
pub async fn spawn(
    tasks: &TaskTracker,
    store: StoreHandle,
    salt: Option<Arc<SaltClient>>,
    file: Maintenance,
    cancel: CancellationToken,
) -> Result<MaintenanceHandle, StoreError> {
    let now = Utc::now();
    let mut entries = Vec::new();
    for row in store.active_maintenance(now).await? {
        match entry_of(&row) {
            Some(e) => entries.push(e),
            None => {
                warn!(id = row.id, scope = %row.scope, target = %row.target, "Ignoring a maintenance entry this version cannot read.")
            }
        }
    }
    let snapshot = Snapshot { effective: merge(&file, &entries), file, entries };
    let (view_tx, view) = watch::channel(Arc::new(snapshot.clone()));
    let (tx, rx) = mpsc::channel(64);
    let task = Task {
        store,
        salt,
        snapshot,
        view: view_tx,
        inbox: tx.clone(),
        tasks: tasks.clone(),
        file_targets: BTreeMap::new(),
    };
    tasks.spawn(task.run(rx, cancel));
    Ok(MaintenanceHandle { tx, view })
}

/// Hands the effective maintenance to the engine now and after every change.
pub async fn forward(tasks: &TaskTracker, maintenance: &MaintenanceHandle, runs: RunsHandle) {
    let mut view = maintenance.subscribe();
    let first = view.borrow_and_update().effective.clone();
    runs.set_maintenance(first).await;
    tasks.spawn(async move {
        while view.changed().await.is_ok() {
            let effective = view.borrow_and_update().effective.clone();
            runs.set_maintenance(effective).await;
        }
    });
}

fn entry_of(row: &MaintenanceRow) -> Option<Entry> {
    let scope = Scope::from_columns(&row.scope, &row.target)?;
    let minions = match &scope {
        Scope::Target(_) => None,
        _ => Some(Vec::new()),
    };
    Some(Entry {
        id: row.id,
        scope,
        who: row.who.clone(),
        why: row.why.clone(),
        created: row.created,
        until: row.until,
        minions,
    })
}

/// The files' maintenance plus every entry: global if any says so; machines sorted, once each.
pub fn merge(file: &Maintenance, entries: &[Entry]) -> Maintenance {
    let mut machines: BTreeSet<String> = file.machines.iter().cloned().collect();
    let mut global = file.global;
    for e in entries {
        match &e.scope {
            Scope::Global => global = true,
            Scope::Minion(id) => {
                machines.insert(id.clone());
            }
            Scope::Target(_) => machines.extend(e.minions.iter().flatten().cloned()),
        }
    }
    Maintenance { global, machines: machines.into_iter().collect() }
}

struct Task {
    store: StoreHandle,
    salt: Option<Arc<SaltClient>>,
    snapshot: Snapshot,
    view: watch::Sender<Arc<Snapshot>>,
    inbox: mpsc::Sender<Command>,
    tasks: TaskTracker,
    /// The target expressions among the files' `machines`, with the minions each matched at
    /// its last resolution.
    file_targets: BTreeMap<String, Vec<String>>,
}

/// Whether an entry of the files' `machines` is a Salt target expression rather than a minion
/// id: a glob (`web-*`, `db-[12]`), a compound expression (`G@os:Debian and web*`), or a list.
pub fn is_expression(machine: &str) -> bool {
    machine.contains(['*', '?', '[', '@', ',', ' '])
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, cancel: CancellationToken) {
        self.resolve_all();
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let expiry = self.next_expiry();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => return,
                },
                () = sleep_until(expiry) => {}
                _ = refresh.tick() => self.resolve_all(),
                () = cancel.cancelled() => return,
            }
            self.expire(Utc::now());
            self.publish();
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            // The view is published before the answer, so whoever asked reads the change.
            Command::Start { entry, reply } => {
                let result = self.start(entry).await;
                self.publish();
                let _ = reply.send(result);
            }
            Command::End { id, who, reply } => {
                let result = self.end(id, &who).await;
                self.publish();
                let _ = reply.send(result);
            }
            Command::File(file) => {
                self.snapshot.file = file;
                let file = &self.snapshot.file;
                self.file_targets.retain(|expr, _| file.machines.contains(expr));
                self.resolve_file();
            }
            Command::FileResolved { expr, minions } => {
                if self.snapshot.file.machines.contains(&expr) {
                    self.file_targets.insert(expr, minions);
                }
            }
            Command::Resolved { id, minions } => {
                if let Some(e) = self.snapshot.entries.iter_mut().find(|e| e.id == id) {
                    e.minions = Some(minions);
                }
            }
        }
    }

    async fn start(&mut self, new: NewEntry) -> Result<Entry, MaintenanceError> {
        let now = Utc::now();
        if let Some(until) = new.until.filter(|u| *u <= now) {
            return Err(MaintenanceError::Past(until));
        }
        let (scope, target) = new.scope.columns();
        let write = Write::StartMaintenance {
            scope: scope.to_owned(),
            target: target.clone(),
            who: new.who.clone(),
            why: new.why.clone(),
            at: now,
            until: new.until,
        };
        self.store.write_durable(write).await?;
        let row =
            self.store.maintenance_created(&new.who, now).await?.ok_or_else(|| {
                StoreError::Write("the new maintenance entry was not found".into())
            })?;
        let until = new.until.map(|u| format!(" until {}", u.to_rfc3339())).unwrap_or_default();
        let detail = format!("#{} {scope} {target}{until}: {}", row.id, new.why);
        self.audit(&new.who, "maintenance.start", detail).await;
        let minions = match &new.scope {
            Scope::Target(_) => None,
            _ => Some(Vec::new()),
        };
        let entry = Entry {
            id: row.id,
            scope: new.scope,
            who: new.who,
            why: new.why,
            created: row.created,
            until: new.until,
            minions,
        };
        self.resolve(&entry);
        self.snapshot.entries.push(entry.clone());
        Ok(entry)
    }

    async fn end(&mut self, id: i64, who: &str) -> Result<Entry, MaintenanceError> {
        let Some(at) = self.snapshot.entries.iter().position(|e| e.id == id) else {
            return Err(MaintenanceError::NotFound(id));
        };
        self.store.write_durable(Write::EndMaintenance { id, at: Utc::now() }).await?;
        let entry = self.snapshot.entries.remove(at);
        let (scope, target) = entry.scope.columns();
        self.audit(who, "maintenance.end", format!("#{id} {scope} {target}")).await;
        Ok(entry)
    }

    async fn audit(&self, actor: &str, action: &str, detail: String) {
        let write = Write::Audit {
            at: Utc::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail,
        };
        if let Err(e) = self.store.write_durable(write).await {
            warn!(error = %e, action, "Cannot write the audit record.");
        }
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        self.snapshot.entries.retain(|e| e.until.is_none_or(|u| u > now));
    }

    fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.snapshot.entries.iter().filter_map(|e| e.until).min()
    }

    fn publish(&mut self) {
        // The files' expressions count as the minions they matched.
        let mut file = self.snapshot.file.clone();
        file.machines.retain(|m| !is_expression(m));
        file.machines.extend(self.file_targets.values().flatten().cloned());
        self.snapshot.effective = merge(&file, &self.snapshot.entries);
        let changed = **self.view.borrow() != self.snapshot;
        if changed {
            self.view.send_replace(Arc::new(self.snapshot.clone()));
        }
    }

    fn resolve_all(&self) {
        for e in &self.snapshot.entries {
            self.resolve(e);
        }
        self.resolve_file();
    }

    /// Resolves the target expressions of the files' `machines` (as a compound target, which
    /// takes globs, lists and `G@`-style matchers) in tasks of their own.
    fn resolve_file(&self) {
        let Some(salt) = self.salt.clone() else { return };
        for expr in self.snapshot.file.machines.iter().filter(|m| is_expression(m)) {
            let (salt, expr, inbox) = (salt.clone(), expr.clone(), self.inbox.clone());
            self.tasks.spawn(async move {
                let target = Target::new(expr.clone(), TargetType::Compound);
                match salt.publish(&Publish::new(target, "test.ping")).await {
                    Ok(published) => {
                        let minions =
                            published.minions.iter().map(|m| m.as_str().to_owned()).collect();
                        let _ = inbox.send(Command::FileResolved { expr, minions }).await;
                    }
                    Err(crate::salt::ClientError::NoMinions(_)) => {
                        let _ = inbox.send(Command::FileResolved { expr, minions: Vec::new() }).await;
                    }
                    Err(e) => {
                        warn!(target = %expr, error = %e, "Cannot resolve a maintenance target of the config files; keeping its last resolution.");
                    }
                }
            });
        }
    }

    /// Resolves a target entry in a task of its own; the answer comes back through the inbox.
    fn resolve(&self, entry: &Entry) {
        let Scope::Target(target) = &entry.scope else { return };
        let Some(salt) = self.salt.clone() else {
            warn!(id = entry.id, target = %target.expr, "No Salt client: a maintenance target covers no minion.");
            return;
        };
        let (id, target, inbox) = (entry.id, target.clone(), self.inbox.clone());
        self.tasks.spawn(async move {
            match salt.publish(&Publish::new(target.clone(), "test.ping")).await {
                Ok(published) => {
                    let minions = published.minions.iter().map(|m| m.as_str().to_owned()).collect();
                    let _ = inbox.send(Command::Resolved { id, minions }).await;
                }
                Err(crate::salt::ClientError::NoMinions(_)) => {
                    let _ = inbox.send(Command::Resolved { id, minions: Vec::new() }).await;
                }
                Err(e) => {
                    warn!(id, target = %target.expr, error = %e, "Cannot resolve a maintenance target; keeping its last resolution.");
                }
            }
        });
    }
}

async fn sleep_until(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, scope: Scope, minions: Option<Vec<&str>>) -> Entry {
        Entry {
            id,
            scope,
            who: "alice".into(),
            why: "disk swap".into(),
            created: Utc::now(),
            until: None,
            minions: minions.map(|m| m.into_iter().map(str::to_owned).collect()),
        }
    }

    #[test]
    fn merge_is_the_union_of_files_and_entries() {
        let file = Maintenance { global: false, machines: vec!["db1".into(), "web2".into()] };
        let entries = [
            entry(1, Scope::Minion("web1".into()), Some(vec![])),
            entry(2, Scope::Target(Target::glob("web*")), Some(vec!["web2", "web3"])),
            entry(3, Scope::Target(Target::glob("none*")), None),
        ];
        let merged = merge(&file, &entries);
        assert!(!merged.global);
        assert_eq!(merged.machines, ["db1", "web1", "web2", "web3"]);
        let global = merge(&file, &[entry(4, Scope::Global, Some(vec![]))]);
        assert!(global.global);
        assert!(merge(&Maintenance { global: true, machines: vec![] }, &[]).global);
    }

    #[test]
    fn machines_that_are_target_expressions_are_told_from_ids() {
        for expr in ["web-*", "db-[12]", "G@os:Debian and web*", "L@a,b", "minion-?"] {
            assert!(is_expression(expr), "{expr}");
        }
        for id in ["minion-1", "db7.example.com", "web_2"] {
            assert!(!is_expression(id), "{id}");
        }
    }

    #[test]
    fn scopes_round_trip_through_their_columns() {
        for scope in [
            Scope::Global,
            Scope::Minion("web1".into()),
            Scope::Target(Target::new("os:Debian", TargetType::Grain)),
        ] {
            let (s, t) = scope.columns();
            assert_eq!(Scope::from_columns(s, &t), Some(scope));
        }
        assert_eq!(Scope::from_columns("target", "nonsense"), None);
    }
}
