//! Queries. Each is a function of a connection and plain values, run on the blocking pool by
//! `StoreHandle`.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{RunStatus, Stream, Trigger};

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub instance: String,
    pub job: String,
    pub group: String,
    pub scheduled: DateTime<Utc>,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub reason: String,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
}

/// One minion's result in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub minion: String,
    pub phase: String,
    pub retcode: Option<i32>,
    pub reason: String,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    /// Bytes of output received, kept or not.
    pub output_bytes: u64,
    /// Bytes of output dropped by the per-minion cap.
    pub output_dropped: u64,
    /// The token issued to the minion's agent for this run.
    pub token: Option<String>,
    /// How the minion's part was dispatched (`single`, `legacy`, `coalesced`, ...).
    pub path: String,
    /// The jid of a `use_wrapper: false` minion's publish, once Salt took it.
    pub jid: Option<String>,
}

/// A stored piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub offset: u64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Which runs to list. Empty fields match everything; pages go backwards from `before`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub status: Option<RunStatus>,
    pub minion: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only runs scheduled before this instant (the last row of the previous page).
    pub before: Option<DateTime<Utc>>,
    /// Only runs after this one in the listing's order (keyset pagination: the last row of the
    /// previous page).
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// A position in the runs listing (newest first): a run's scheduled and created instants and
/// instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub scheduled: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub instance: String,
}

impl Cursor {
    pub fn of(run: &RunRow) -> Cursor {
        Cursor { scheduled: run.scheduled, created: run.created, instance: run.instance.clone() }
    }

    /// `SCHEDULED_MS.CREATED_MS.INSTANCE`, opaque to clients.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.scheduled.timestamp_millis(),
            self.created.timestamp_millis(),
            self.instance
        )
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(3, '.');
        let scheduled = time(parts.next()?.parse().ok()?).ok()?;
        let created = time(parts.next()?.parse().ok()?).ok()?;
        Some(Cursor { scheduled, created, instance: parts.next()?.to_owned() })
    }
}

const RUN_COLUMNS: &str = "instance, job, job_group, scheduled_at, trigger, status, reason, \
                           created_at, started_at, finished_at";

pub(super) fn time(ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single().ok_or(rusqlite::Error::IntegralValueOutOfRange(0, ms))
}

fn opt_time(ms: Option<i64>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    ms.map(time).transpose()
}

fn bad_text(column: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unknown value {value:?}").into(),
    )
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let trigger: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(RunRow {
        instance: row.get(0)?,
        job: row.get(1)?,
        group: row.get(2)?,
        scheduled: time(row.get(3)?)?,
        trigger: super::parse_trigger(&trigger).ok_or_else(|| bad_text(4, &trigger))?,
        status: RunStatus::parse(&status).ok_or_else(|| bad_text(5, &status))?,
        reason: row.get(6)?,
        created: time(row.get(7)?)?,
        started: opt_time(row.get(8)?)?,
        finished: opt_time(row.get(9)?)?,
    })
}

pub(super) fn runs(c: &Connection, f: &RunFilter) -> rusqlite::Result<Vec<RunRow>> {
    // With a minion, walk that minion's runs in listing order (`minion_runs`) rather than every
    // run; the run's columns carry the same times, so the other clauses read the same.
    let (mut sql, t) = match f.minion {
        Some(_) => (
            format!(
                "SELECT {} FROM minion_runs m JOIN runs u ON u.instance = m.instance \
                 WHERE m.minion = ?1",
                RUN_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
            ),
            "m.",
        ),
        None => (format!("SELECT {RUN_COLUMNS} FROM runs u WHERE 1 = 1"), "u."),
    };
    let mut args: Vec<Value> = Vec::new();
    if let Some(minion) = &f.minion {
        args.push(Value::Text(minion.clone()));
    }
    let mut arg = |sql: &mut String, clause: &str, value: Value| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())).replace("t.", t));
    };
    if let Some(job) = &f.job {
        arg(&mut sql, " AND u.job = ?", Value::Text(job.clone()));
    }
    if let Some(status) = f.status {
        arg(&mut sql, " AND u.status = ?", Value::Text(status.as_str().to_owned()));
    }
    if let Some(since) = f.since {
        arg(&mut sql, " AND t.scheduled_at >= ?", Value::Integer(since.timestamp_millis()));
    }
    if let Some(until) = f.until {
        arg(&mut sql, " AND t.scheduled_at < ?", Value::Integer(until.timestamp_millis()));
    }
    if let Some(before) = f.before {
        arg(&mut sql, " AND t.scheduled_at < ?", Value::Integer(before.timestamp_millis()));
    }
    if let Some(after) = &f.after {
        let (s, c) = (after.scheduled.timestamp_millis(), after.created.timestamp_millis());
        arg(&mut sql, " AND (t.scheduled_at < ?", Value::Integer(s));
        arg(&mut sql, " OR (t.scheduled_at = ?", Value::Integer(s));
        arg(&mut sql, " AND (t.created_at < ?", Value::Integer(c));
        arg(&mut sql, " OR (t.created_at = ?", Value::Integer(c));
        arg(&mut sql, " AND t.instance < ?))))", Value::Text(after.instance.clone()));
    }
    arg(
        &mut sql,
        " ORDER BY t.scheduled_at DESC, t.created_at DESC, t.instance DESC LIMIT ?",
        Value::Integer(f.limit.into()),
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), run_row)?;
    rows.collect()
}

pub(super) fn run(c: &Connection, instance: &str) -> rusqlite::Result<Option<RunRow>> {
    c.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE instance = ?1"),
        params![instance],
        run_row,
    )
    .optional()
}

pub(super) fn results(c: &Connection, instance: &str) -> rusqlite::Result<Vec<ResultRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT minion, phase, retcode, reason, started_at, finished_at, output_bytes, output_dropped,
                token, path, jid
         FROM results WHERE instance = ?1 ORDER BY minion",
    )?;
    let rows = stmt.query_map(params![instance], |row| {
        Ok(ResultRow {
            minion: row.get(0)?,
            phase: row.get(1)?,
            retcode: row.get(2)?,
            reason: row.get(3)?,
            started: opt_time(row.get(4)?)?,
            finished: opt_time(row.get(5)?)?,
            output_bytes: row.get::<_, i64>(6)?.try_into().unwrap_or(0),
            output_dropped: row.get::<_, i64>(7)?.try_into().unwrap_or(0),
            token: row.get(8)?,
            path: row.get(9)?,
            jid: row.get(10)?,
        })
    })?;
    rows.collect()
}

pub(super) fn output(
    c: &Connection,
    instance: &str,
    minion: &str,
    offset: u64,
    limit: u64,
) -> rusqlite::Result<Vec<OutputChunk>> {
    // The chunk containing `offset` too, so a reader resuming mid-chunk gets the rest of it.
    let mut stmt = c.prepare_cached(
        "SELECT offset, stream, data FROM output
         WHERE instance = ?1 AND minion = ?2 AND offset + LENGTH(data) > ?3 ORDER BY offset",
    )?;
    let offset_i = i64::try_from(offset).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![instance, minion, offset_i])?;
    let mut chunks = Vec::new();
    let mut taken = 0u64;
    while let Some(row) = rows.next()? {
        let stream: String = row.get(1)?;
        let chunk = OutputChunk {
            offset: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
            stream: Stream::parse(&stream).ok_or_else(|| bad_text(1, &stream))?,
            data: row.get(2)?,
        };
        taken += chunk.data.len() as u64;
        chunks.push(chunk);
        if taken >= limit {
            break;
        }
    }
    Ok(chunks)
}

pub(super) fn open_runs(c: &Connection) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('pending', 'running') ORDER BY scheduled_at"
    ))?;
    let rows = stmt.query_map([], run_row)?;
    rows.collect()
}

pub(super) fn last_slot(c: &Connection, job: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let ms: Option<i64> = c.query_row(
        "SELECT MAX(scheduled_at) FROM runs WHERE job = ?1 AND trigger IN ('schedule', 'catch-up')",
        params![job],
        |row| row.get(0),
    )?;
    opt_time(ms)
}

/// Where a minion's output stands: the next sequence number expected from its agent, and the
/// bytes received so far (the next output offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub next_seq: u64,
    pub output_bytes: u64,
}

pub(super) fn progress(
    c: &Connection,
    instance: &str,
    minion: &str,
) -> rusqlite::Result<Option<Progress>> {
    c.query_row(
        "SELECT next_seq, output_bytes FROM results WHERE instance = ?1 AND minion = ?2",
        params![instance, minion],
        |row| {
            Ok(Progress {
                next_seq: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
                output_bytes: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
            })
        },
    )
    .optional()
}

/// A runtime maintenance entry (set through the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceRow {
    pub id: i64,
    /// `global`, `minion` or `target`.
    pub scope: String,
    /// The minion id or the target expression (`type:expr` for a target); empty for global.
    pub target: String,
    pub who: String,
    pub why: String,
    pub created: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
}

const MAINTENANCE_COLUMNS: &str = "id, scope, target, who, why, created_at, until, ended_at";

fn maintenance_row(row: &Row<'_>) -> rusqlite::Result<MaintenanceRow> {
    Ok(MaintenanceRow {
        id: row.get(0)?,
        scope: row.get(1)?,
        target: row.get(2)?,
        who: row.get(3)?,
        why: row.get(4)?,
        created: time(row.get(5)?)?,
        until: opt_time(row.get(6)?)?,
        ended: opt_time(row.get(7)?)?,
    })
}

/// Entries not ended and not expired at `now`, oldest first.
pub(super) fn active_maintenance(
    c: &Connection,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<MaintenanceRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MAINTENANCE_COLUMNS} FROM maintenance
         WHERE ended_at IS NULL AND (until IS NULL OR until > ?1) ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![now.timestamp_millis()], maintenance_row)?;
    rows.collect()
}

pub(super) fn maintenance_entry(
    c: &Connection,
    id: i64,
) -> rusqlite::Result<Option<MaintenanceRow>> {
    c.query_row(
        &format!("SELECT {MAINTENANCE_COLUMNS} FROM maintenance WHERE id = ?1"),
        params![id],
        maintenance_row,
    )
    .optional()
}

/// The newest entry created by `who` at `created` (the one just written: only the maintenance
/// task creates entries, one at a time).
pub(super) fn maintenance_created(
    c: &Connection,
    who: &str,
    created: DateTime<Utc>,
) -> rusqlite::Result<Option<MaintenanceRow>> {
    c.query_row(
        &format!(
            "SELECT {MAINTENANCE_COLUMNS} FROM maintenance WHERE who = ?1 AND created_at = ?2
             ORDER BY id DESC LIMIT 1"
        ),
        params![who, created.timestamp_millis()],
        maintenance_row,
    )
    .optional()
}

/// One audit record: who did what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// Audit records newest first, before id `before` when given.
pub(super) fn audit(
    c: &Connection,
    before: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<AuditRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at, actor, action, detail FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |row| {
        Ok(AuditRow {
            id: row.get(0)?,
            at: time(row.get(1)?)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            detail: row.get(4)?,
        })
    })?;
    rows.collect()
}

/// A job's most recent runs, newest first (for its last result, success rate and history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRecent {
    pub runs: Vec<RunRow>,
}

/// The newest `per_job` runs of each of `jobs`, grouped by job. One indexed query per job (on
/// `runs_by_job`), in one read transaction: the cost follows the number of jobs asked for, not the
/// number of runs stored.
pub(super) fn recent_runs(
    c: &Connection,
    jobs: &[String],
    per_job: u32,
) -> rusqlite::Result<std::collections::HashMap<String, JobRecent>> {
    let tx = c.unchecked_transaction()?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1
         ORDER BY scheduled_at DESC, created_at DESC, instance DESC LIMIT ?2"
    ))?;
    let mut out = std::collections::HashMap::with_capacity(jobs.len());
    for job in jobs {
        let runs =
            stmt.query_map(params![job, per_job], run_row)?.collect::<Result<Vec<_>, _>>()?;
        if !runs.is_empty() {
            out.insert(job.clone(), JobRecent { runs });
        }
    }
    drop(stmt);
    tx.finish()?;
    Ok(out)
}

/// Per-minion results of the newest `runs` runs of `job`: (instance, result), newest run first.
pub(super) fn job_results(
    c: &Connection,
    job: &str,
    runs: u32,
) -> rusqlite::Result<Vec<(String, ResultRow)>> {
    let mut stmt = c.prepare_cached(
        "SELECT r.instance, r.minion, r.phase, r.retcode, r.reason, r.started_at, r.finished_at,
                r.output_bytes, r.output_dropped
         FROM results r JOIN (SELECT instance, scheduled_at FROM runs WHERE job = ?1
                              ORDER BY scheduled_at DESC, created_at DESC LIMIT ?2) k
           ON k.instance = r.instance
         ORDER BY k.scheduled_at DESC, r.minion",
    )?;
    let rows = stmt.query_map(params![job, runs], |row| {
        Ok((
            row.get(0)?,
            ResultRow {
                minion: row.get(1)?,
                phase: row.get(2)?,
                retcode: row.get(3)?,
                reason: row.get(4)?,
                started: opt_time(row.get(5)?)?,
                finished: opt_time(row.get(6)?)?,
                output_bytes: row.get::<_, i64>(7)?.try_into().unwrap_or(0),
                output_dropped: row.get::<_, i64>(8)?.try_into().unwrap_or(0),
                token: None,
                path: String::new(),
                jid: None,
            },
        ))
    })?;
    rows.collect()
}

/// Runs that finished after `after` (milliseconds), oldest first, and runs skipped when created
/// after `after` without a finish time: what `/metrics` counts. At most `limit` of each.
pub(super) fn finished_since(
    c: &Connection,
    after: DateTime<Utc>,
    limit: u32,
) -> rusqlite::Result<Vec<RunRow>> {
    let ms = after.timestamp_millis();
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE finished_at > ?1 ORDER BY finished_at LIMIT ?2"
    ))?;
    for row in stmt.query_map(params![ms, limit], run_row)? {
        out.push(row?);
    }
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'skipped' AND created_at > ?1
         AND finished_at IS NULL ORDER BY created_at LIMIT ?2"
    ))?;
    for row in stmt.query_map(params![ms, limit], run_row)? {
        out.push(row?);
    }
    Ok(out)
}

/// Each job's latest successful finish.
pub(super) fn last_successes(c: &Connection) -> rusqlite::Result<Vec<(String, DateTime<Utc>)>> {
    let mut stmt = c.prepare_cached(
        "SELECT job, MAX(finished_at) FROM runs WHERE status = 'succeeded' AND finished_at IS NOT NULL
         GROUP BY job",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, time(row.get(1)?)?)))?;
    rows.collect()
}
