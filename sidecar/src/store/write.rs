//! The writer: the one connection that writes, fed by a bounded queue. Each batch of queued writes
//! is one transaction; each write inside it is a savepoint, so one bad write is reported and rolled
//! back alone while the rest of the batch commits.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;
use tracing::error;

use super::{Envelope, RunStatus, Stream, Trigger};

/// Most writes committed in one transaction.
const BATCH: usize = 512;

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A slot about to be dispatched (or skipped). Idempotent: a second create of the same
    /// instance changes nothing.
    CreateRun {
        instance: String,
        job: String,
        group: String,
        scheduled: DateTime<Utc>,
        trigger: Trigger,
        status: RunStatus,
        reason: String,
        created: DateTime<Utc>,
    },
    /// A new status for a run. `started` and `finished` are set once: later values are ignored.
    UpdateRun {
        instance: String,
        status: RunStatus,
        reason: String,
        started: Option<DateTime<Utc>>,
        finished: Option<DateTime<Utc>>,
    },
    /// A minion's result: created on first mention, then updated. `started` and `finished` are
    /// set once; `retcode` once set is final.
    MinionResult {
        instance: String,
        minion: String,
        phase: String,
        retcode: Option<i32>,
        reason: String,
        started: Option<DateTime<Utc>>,
        finished: Option<DateTime<Utc>>,
    },
    /// A chunk of a minion's output at byte `offset` of its combined stream. A chunk already
    /// stored at that offset (a resend after a reconnect) is ignored. Past `cap` bytes per
    /// minion the first half of the cap is kept and the newest output fills the second half, so
    /// both how it started and how it ended survive; what falls out is counted.
    Output {
        instance: String,
        minion: String,
        /// The agent's sequence number of the message, when it has one: the next one expected
        /// is kept so a session can resume after a restart.
        seq: Option<u64>,
        offset: u64,
        stream: Stream,
        data: Vec<u8>,
        cap: u64,
    },
    /// The token issued to a minion's agent for a run, so it can reconnect after a restart.
    Token {
        instance: String,
        minion: String,
        token: String,
    },
    /// How a minion's part was dispatched (`single`, `legacy`, `coalesced`, `pre-armed`,
    /// `armed`, `fallback`), and its clock skew when known.
    MinionPath {
        instance: String,
        minion: String,
        path: String,
        skew_ms: Option<i64>,
    },
    /// The jid of a `use_wrapper: false` minion's publish.
    MinionJid {
        instance: String,
        minion: String,
        jid: String,
    },
    StartMaintenance {
        scope: String,
        target: String,
        who: String,
        why: String,
        at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
    EndMaintenance {
        id: i64,
        at: DateTime<Utc>,
    },
    Audit {
        at: DateTime<Utc>,
        actor: String,
        action: String,
        detail: String,
    },
    /// Changes nothing: a durable barrier commits every write queued before it.
    Barrier,
    /// The search-engine sinks configured now. A new sink starts with what is queued from now
    /// on; a sink no longer named is forgotten. With none, nothing is queued.
    ExportSinks(Vec<String>),
    /// `sink` has delivered every queued event up to `last_id`; rows every sink has delivered
    /// are deleted.
    ExportDelivered {
        sink: String,
        last_id: i64,
    },
    /// Retention: deletes finished runs (with their results and output) that a job's rule no
    /// longer keeps; `default` covers every job not named in `jobs` (also jobs since removed).
    /// Open runs are never deleted.
    Prune {
        default: Retention,
        jobs: Vec<(String, Retention)>,
    },
}

/// What retention keeps of a job's finished runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs scheduled before this go.
    pub before: DateTime<Utc>,
    /// At most this many of the newest runs stay.
    pub keep: Option<u32>,
}

/// The writer loop: runs on the blocking pool until every handle is dropped and the queue is
/// drained.
pub(super) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Envelope>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch);
    }
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<Envelope>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = conn.transaction()?;
        for envelope in batch.iter() {
            let mut sp = tx.savepoint()?;
            match apply(&sp, &envelope.write) {
                Ok(()) => {
                    sp.commit()?;
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    error!(error = %e, write = ?Summary(&envelope.write), "A write to the run store failed.");
                    sp.rollback()?;
                    outcomes.push(Err(e.to_string()));
                }
            }
        }
        tx.commit()
    })();
    if let Err(e) = &committed {
        error!(error = %e, writes = batch.len(), "A batch of writes to the run store failed.");
    }
    let mut outcomes = outcomes.into_iter();
    for envelope in batch.drain(..) {
        let result = match &committed {
            Ok(()) => {
                outcomes.next().unwrap_or_else(|| Err("the write was not applied".to_owned()))
            }
            Err(e) => Err(e.to_string()),
        };
        if let Some(done) = envelope.done {
            // The waiter may have gone away; the write is committed (or reported) either way.
            let _ = done.send(result);
        }
    }
}

/// Debug form of a write without its data, for logs.
struct Summary<'a>(&'a Write);

impl std::fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Write::Output { instance, minion, offset, data, .. } => {
                write!(f, "Output({instance}, {minion}, @{offset}, {} bytes)", data.len())
            }
            other => write!(f, "{other:?}"),
        }
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Why one write was not applied.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("there is no run {0}")]
    NoRun(String),
}

fn apply(c: &Connection, write: &Write) -> Result<(), WriteError> {
    match write {
        Write::CreateRun { instance, job, group, scheduled, trigger, status, reason, created } => {
            c.execute(
                "INSERT INTO runs (instance, job, job_group, scheduled_at, trigger, status, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (instance) DO NOTHING",
                params![
                    instance,
                    job,
                    group,
                    ms(*scheduled),
                    super::trigger_name(*trigger),
                    status.as_str(),
                    reason,
                    ms(*created)
                ],
            )?;
        }
        Write::UpdateRun { instance, status, reason, started, finished } => {
            let n = c.execute(
                "UPDATE runs SET status = ?2, reason = ?3,
                     started_at = COALESCE(started_at, ?4), finished_at = COALESCE(finished_at, ?5)
                 WHERE instance = ?1",
                params![instance, status.as_str(), reason, started.map(ms), finished.map(ms)],
            )?;
            if n == 0 {
                return Err(WriteError::NoRun(instance.clone()));
            }
        }
        Write::MinionResult { instance, minion, phase, retcode, reason, started, finished } => {
            c.execute(
                "INSERT INTO results (instance, minion, phase, retcode, reason, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (instance, minion) DO UPDATE SET
                     phase = excluded.phase,
                     retcode = COALESCE(results.retcode, excluded.retcode),
                     reason = CASE WHEN results.retcode IS NULL THEN excluded.reason ELSE results.reason END,
                     started_at = COALESCE(results.started_at, excluded.started_at),
                     finished_at = COALESCE(results.finished_at, excluded.finished_at)",
                params![
                    instance,
                    minion,
                    phase,
                    retcode,
                    reason,
                    started.map(ms),
                    finished.map(ms)
                ],
            )?;
        }
        Write::Output { instance, minion, seq, offset, stream, data, cap } => {
            append_output(c, instance, minion, *offset, *stream, data, *cap)?;
            if let Some(seq) = seq {
                let next = i64::try_from(seq.saturating_add(1)).unwrap_or(i64::MAX);
                c.execute(
                    "UPDATE results SET next_seq = MAX(next_seq, ?3) WHERE instance = ?1 AND minion = ?2",
                    params![instance, minion, next],
                )?;
            }
        }
        Write::Token { instance, minion, token } => {
            c.execute(
                "INSERT INTO results (instance, minion, phase, token) VALUES (?1, ?2, 'launching', ?3)
                 ON CONFLICT (instance, minion) DO UPDATE SET token = excluded.token",
                params![instance, minion, token],
            )?;
        }
        Write::MinionPath { instance, minion, path, skew_ms } => {
            c.execute(
                "INSERT INTO results (instance, minion, phase, path, skew_ms) VALUES (?1, ?2, 'launching', ?3, ?4)
                 ON CONFLICT (instance, minion) DO UPDATE SET path = excluded.path,
                     skew_ms = COALESCE(excluded.skew_ms, results.skew_ms)",
                params![instance, minion, path, skew_ms],
            )?;
        }
        Write::MinionJid { instance, minion, jid } => {
            c.execute(
                "UPDATE results SET jid = ?3 WHERE instance = ?1 AND minion = ?2",
                params![instance, minion, jid],
            )?;
        }
        Write::StartMaintenance { scope, target, who, why, at, until } => {
            c.execute(
                "INSERT INTO maintenance (scope, target, who, why, created_at, until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![scope, target, who, why, ms(*at), until.map(ms)],
            )?;
        }
        Write::EndMaintenance { id, at } => {
            c.execute(
                "UPDATE maintenance SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
                params![id, ms(*at)],
            )?;
        }
        Write::Audit { at, actor, action, detail } => {
            c.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![ms(*at), actor, action, detail],
            )?;
        }
        Write::Barrier => {}
        Write::Prune { default, jobs } => prune(c, default, jobs)?,
        Write::ExportSinks(names) => {
            let named = serde_json::Value::from(names.clone()).to_string();
            c.execute(
                "DELETE FROM export_sinks WHERE name NOT IN (SELECT value FROM json_each(?1))",
                params![named],
            )?;
            c.execute(
                "INSERT INTO export_sinks (name, last_id)
                 SELECT value, (SELECT COALESCE(MAX(id), 0) FROM export_queue) FROM json_each(?1)
                 WHERE true ON CONFLICT (name) DO NOTHING",
                params![named],
            )?;
            drop_delivered(c)?;
        }
        Write::ExportDelivered { sink, last_id } => {
            c.execute(
                "UPDATE export_sinks SET last_id = MAX(last_id, ?2) WHERE name = ?1",
                params![sink, last_id],
            )?;
            drop_delivered(c)?;
        }
    }
    Ok(())
}

/// One statement per rule: `?1` the cutoff, `?2` the number kept, `?3` the job or the JSON list
/// of jobs the default rule leaves alone.
fn prune(
    c: &Connection,
    default: &Retention,
    jobs: &[(String, Retention)],
) -> rusqlite::Result<()> {
    const FINISHED: &str = "status NOT IN ('pending', 'running')";
    let by_age = format!("DELETE FROM runs WHERE scheduled_at < ?1 AND {FINISHED} AND job = ?2");
    let by_count = format!(
        "DELETE FROM runs WHERE instance IN (
             SELECT instance FROM (
                 SELECT instance, ROW_NUMBER() OVER
                     (ORDER BY scheduled_at DESC, created_at DESC) AS n
                 FROM runs WHERE job = ?2 AND {FINISHED})
             WHERE n > ?1)"
    );
    let mut age = c.prepare_cached(&by_age)?;
    let mut count = c.prepare_cached(&by_count)?;
    for (job, rule) in jobs {
        age.execute(params![ms(rule.before), job])?;
        if let Some(keep) = rule.keep {
            count.execute(params![keep, job])?;
        }
    }
    let named =
        serde_json::Value::from(jobs.iter().map(|(job, _)| job.as_str()).collect::<Vec<_>>())
            .to_string();
    c.execute(
        &format!(
            "DELETE FROM runs WHERE scheduled_at < ?1 AND {FINISHED}
             AND job NOT IN (SELECT value FROM json_each(?2))"
        ),
        params![ms(default.before), named],
    )?;
    if let Some(keep) = default.keep {
        c.execute(
            &format!(
                "DELETE FROM runs WHERE instance IN (
                     SELECT instance FROM (
                         SELECT instance, ROW_NUMBER() OVER
                             (PARTITION BY job ORDER BY scheduled_at DESC, created_at DESC) AS n
                         FROM runs WHERE {FINISHED}
                         AND job NOT IN (SELECT value FROM json_each(?2)))
                     WHERE n > ?1)"
            ),
            params![keep, named],
        )?;
    }
    Ok(())
}

/// Deletes the export rows every sink has delivered (all of them when there is no sink).
fn drop_delivered(c: &Connection) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM export_queue WHERE id <= COALESCE((SELECT MIN(last_id) FROM export_sinks), id)",
        [],
    )?;
    Ok(())
}

fn append_output(
    c: &Connection,
    instance: &str,
    minion: &str,
    offset: u64,
    stream: Stream,
    data: &[u8],
    cap: u64,
) -> rusqlite::Result<()> {
    let offset_i = i64::try_from(offset).unwrap_or(i64::MAX);
    let exists = c
        .query_row(
            "SELECT 1 FROM output WHERE instance = ?1 AND minion = ?2 AND offset = ?3",
            params![instance, minion, offset_i],
            |_| Ok(()),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO results (instance, minion, phase) VALUES (?1, ?2, 'running')
         ON CONFLICT (instance, minion) DO NOTHING",
        params![instance, minion],
    )?;
    let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
    c.execute(
        "INSERT INTO output (instance, minion, offset, stream, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![instance, minion, offset_i, stream.as_str(), data],
    )?;
    c.execute(
        "UPDATE results SET output_bytes = output_bytes + ?3 WHERE instance = ?1 AND minion = ?2",
        params![instance, minion, len],
    )?;
    // Keep the head (offsets below cap/2) and as much of the newest output as fits in the rest:
    // while more than `cap` bytes are stored, drop the oldest chunk past the head.
    let head = i64::try_from(cap / 2).unwrap_or(i64::MAX);
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    loop {
        let stored: i64 = c.query_row(
            "SELECT output_bytes - output_dropped FROM results WHERE instance = ?1 AND minion = ?2",
            params![instance, minion],
            |row| row.get(0),
        )?;
        if stored <= cap {
            return Ok(());
        }
        let oldest: Option<(i64, i64)> = c
            .query_row(
                "SELECT offset, LENGTH(data) FROM output
                 WHERE instance = ?1 AND minion = ?2 AND offset >= ?3 ORDER BY offset LIMIT 1",
                params![instance, minion, head],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((oldest, dropped)) = oldest else { return Ok(()) };
        c.execute(
            "DELETE FROM output WHERE instance = ?1 AND minion = ?2 AND offset = ?3",
            params![instance, minion, oldest],
        )?;
        c.execute(
            "UPDATE results SET output_dropped = output_dropped + ?3
             WHERE instance = ?1 AND minion = ?2",
            params![instance, minion, dropped],
        )?;
    }
}
