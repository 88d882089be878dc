//! The run store: every run, every per-minion result and its output, maintenance and audit
//! records, in SQLite (`<state-dir>/saltpeter.db`, WAL).
//!
//! One writer task owns the only writing connection and applies queued writes in batches, one
//! transaction per batch, so a burst of output chunks costs one fsync rather than thousands. Writes
//! that must be durable before the caller goes on (a slot before its dispatch, a result before it is
//! announced) are awaited with [`StoreHandle::write_durable`]; output chunks are queued with
//! [`StoreHandle::write`], which still waits for room in the bounded queue (backpressure, never a
//! drop). Reads use their own connection on the blocking pool, so a slow query never holds up
//! writes. Nothing outside this module knows SQL.

mod export;
mod read;
mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

pub use export::ExportEvent;
pub use read::{
    AuditRow, Cursor, JobRecent, MaintenanceRow, OutputChunk, Progress, ResultRow, RunFilter,
    RunRow,
};
pub use write::{Retention, Write};

/// The database file inside the state directory.
pub const DB_FILE: &str = "saltpeter.db";

/// How many writes may wait for the writer before callers are made to wait.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open the run store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("create the state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("migrate the run store {path} to schema version {version}: {source}")]
    Migrate { path: PathBuf, version: u32, source: rusqlite::Error },
    #[error(
        "the run store {path} has schema version {found}, newer than this saltpeter knows \
         ({known}); run a newer saltpeter or restore an older database"
    )]
    TooNew { path: PathBuf, found: u32, known: u32 },
    #[error("the run store failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a write to the run store failed: {0}")]
    Write(String),
    #[error("the run store has shut down")]
    Closed,
}

/// The status of a run as a whole. Stored as its `as_str` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// The slot is recorded; nothing has been dispatched yet.
    Pending,
    Running,
    /// Every targeted minion finished with 0.
    Succeeded,
    /// At least one minion failed, did not respond or was lost.
    Failed,
    /// Not run at all, with the reason recorded (overlap, maintenance, no targets).
    Skipped,
    /// Stopped before it started (a kill or a removal during the lead window).
    Cancelled,
    /// Killed on request.
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::Cancelled,
        Self::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::Killed => "killed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a run in this status can still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// Why a run was created: the scheduler's own type, stored by its name.
pub use crate::scheduler::Trigger;

/// The stored name of a trigger, and back.
pub(crate) fn trigger_name(t: Trigger) -> &'static str {
    match t {
        Trigger::Schedule => "schedule",
        Trigger::Manual => "manual",
        Trigger::CatchUp => "catch-up",
    }
}

pub(crate) fn parse_trigger(s: &str) -> Option<Trigger> {
    [Trigger::Schedule, Trigger::Manual, Trigger::CatchUp]
        .into_iter()
        .find(|t| trigger_name(*t) == s)
}

/// Which stream an output chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Text Saltpeter itself wrote into the output (kill escalation, launch errors).
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Stdout, Self::Stderr, Self::System].into_iter().find(|t| t.as_str() == s)
    }
}

/// A cheap handle to the store. Clones share the writer task and the read connection.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Envelope>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// A queued write and, for durable writes, who waits for its commit.
struct Envelope {
    write: Write,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Opens (creating and migrating as needed) the store in `state_dir` and starts its writer on
/// `tasks`. The writer stops once every handle is dropped, after committing what was queued.
pub fn spawn(tasks: &TaskTracker, state_dir: &Path) -> Result<StoreHandle, StoreError> {
    fs_err::create_dir_all(state_dir)
        .map_err(|source| StoreError::CreateDir { path: state_dir.to_path_buf(), source })?;
    let path = state_dir.join(DB_FILE);
    let mut writer = schema::open(&path)?;
    schema::migrate(&mut writer, &path)?;
    let reader = schema::open(&path)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tasks.spawn_blocking(move || write::run(writer, rx));
    Ok(StoreHandle { tx, reader: Arc::new(Mutex::new(reader)), path })
}

impl StoreHandle {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write; returns once it is queued (waiting for room, never dropping it).
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.tx.send(Envelope { write, done: None }).await.map_err(|_| StoreError::Closed)
    }

    /// Queues a write and returns once it is committed to disk.
    pub async fn write_durable(&self, write: Write) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.tx.send(Envelope { write, done: Some(done) }).await.map_err(|_| StoreError::Closed)?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Write(message)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Runs a read on the blocking pool with the read connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave the connection inconsistent: every read
            // is a single statement or a read transaction that SQLite rolls back.
            let conn = reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
        .map_err(StoreError::from)
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRow>, StoreError> {
        self.read(move |c| read::runs(c, &filter)).await
    }

    /// One run by its instance id.
    pub async fn run(&self, instance: &str) -> Result<Option<RunRow>, StoreError> {
        let instance = instance.to_owned();
        self.read(move |c| read::run(c, &instance)).await
    }

    /// The per-minion results of a run, by minion id.
    pub async fn results(&self, instance: &str) -> Result<Vec<ResultRow>, StoreError> {
        let instance = instance.to_owned();
        self.read(move |c| read::results(c, &instance)).await
    }

    /// Output of one minion in a run, from byte `offset`, at most `limit` bytes of chunks.
    pub async fn output(
        &self,
        instance: &str,
        minion: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        let (instance, minion) = (instance.to_owned(), minion.to_owned());
        self.read(move |c| read::output(c, &instance, &minion, offset, limit)).await
    }

    /// Where a minion's output stands (for an agent session that resumes).
    pub async fn progress(
        &self,
        instance: &str,
        minion: &str,
    ) -> Result<Option<Progress>, StoreError> {
        let (instance, minion) = (instance.to_owned(), minion.to_owned());
        self.read(move |c| read::progress(c, &instance, &minion)).await
    }

    /// Runs that were pending or running when the store was last written: after a restart these
    /// are resumed or closed.
    pub async fn open_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        self.read(read::open_runs).await
    }

    /// The next export events `sink` has not delivered; `None` if the sink is not registered.
    pub async fn export_pending(
        &self,
        sink: &str,
        limit: u32,
    ) -> Result<Option<Vec<ExportEvent>>, StoreError> {
        let sink = sink.to_owned();
        self.read(move |c| export::pending(c, &sink, limit)).await
    }

    /// The latest scheduled slot recorded for `job` (by the schedule or catch-up), for catch-up.
    pub async fn last_slot(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let job = job.to_owned();
        self.read(move |c| read::last_slot(c, &job)).await
    }

    /// Runtime maintenance entries in effect at `now`.
    pub async fn active_maintenance(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<MaintenanceRow>, StoreError> {
        self.read(move |c| read::active_maintenance(c, now)).await
    }

    /// One maintenance entry by id.
    pub async fn maintenance_entry(&self, id: i64) -> Result<Option<MaintenanceRow>, StoreError> {
        self.read(move |c| read::maintenance_entry(c, id)).await
    }

    /// The entry `who` created at `created` (just written by the caller).
    pub async fn maintenance_created(
        &self,
        who: &str,
        created: DateTime<Utc>,
    ) -> Result<Option<MaintenanceRow>, StoreError> {
        let who = who.to_owned();
        self.read(move |c| read::maintenance_created(c, &who, created)).await
    }

    /// The audit log, newest first, before id `before`.
    pub async fn audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.read(move |c| read::audit(c, before, limit)).await
    }

    /// The newest `per_job` runs of each of `jobs`.
    pub async fn recent_runs(
        &self,
        jobs: Vec<String>,
        per_job: u32,
    ) -> Result<std::collections::HashMap<String, JobRecent>, StoreError> {
        self.read(move |c| read::recent_runs(c, &jobs, per_job)).await
    }

    /// Runs finished (or skipped) after `after`, for metrics.
    pub async fn finished_since(
        &self,
        after: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError> {
        self.read(move |c| read::finished_since(c, after, limit)).await
    }

    /// Each job's latest successful finish.
    pub async fn last_successes(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.read(read::last_successes).await
    }

    /// Per-minion results of the newest `runs` runs of `job`, newest run first.
    pub async fn job_results(
        &self,
        job: &str,
        runs: u32,
    ) -> Result<Vec<(String, ResultRow)>, StoreError> {
        let job = job.to_owned();
        self.read(move |c| read::job_results(c, &job, runs)).await
    }
}

#[cfg(test)]
mod tests;

/// A read-only view of a store, for the command line: it never writes, so it can run beside the
/// daemon (WAL lets readers and the writer work at once).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens `<state_dir>/saltpeter.db` read-only.
    pub fn open(state_dir: &Path) -> Result<Reader, StoreError> {
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Reader { conn })
    }

    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        Ok(read::runs(&self.conn, filter)?)
    }

    pub fn run(&self, instance: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(read::run(&self.conn, instance)?)
    }

    pub fn results(&self, instance: &str) -> Result<Vec<ResultRow>, StoreError> {
        Ok(read::results(&self.conn, instance)?)
    }

    pub fn output(&self, instance: &str, minion: &str) -> Result<Vec<OutputChunk>, StoreError> {
        Ok(read::output(&self.conn, instance, minion, 0, u64::MAX)?)
    }
}
