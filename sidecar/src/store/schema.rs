//! Opening the database and its versioned schema. `PRAGMA user_version` holds the number of
//! migrations applied; each migration runs once, in its own transaction, in order. Never edit a
//! released migration: add a new one.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// The migrations, in order. Times are milliseconds since the Unix epoch, UTC.
const MIGRATIONS: &[&str] = &[
    // 1: runs, per-minion results, output chunks, maintenance, audit.
    "CREATE TABLE runs (
        instance     TEXT PRIMARY KEY,
        job          TEXT NOT NULL,
        job_group    TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        trigger      TEXT NOT NULL,
        status       TEXT NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_job ON runs (job, scheduled_at);
    CREATE INDEX runs_by_time ON runs (scheduled_at);
    CREATE INDEX runs_open ON runs (status) WHERE status IN ('pending', 'running');

    CREATE TABLE results (
        instance       TEXT NOT NULL REFERENCES runs (instance) ON DELETE CASCADE,
        minion         TEXT NOT NULL,
        phase          TEXT NOT NULL,
        retcode        INTEGER,
        reason         TEXT NOT NULL DEFAULT '',
        started_at     INTEGER,
        finished_at    INTEGER,
        output_bytes   INTEGER NOT NULL DEFAULT 0,
        output_dropped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (instance, minion)
    ) WITHOUT ROWID;
    CREATE INDEX results_by_minion ON results (minion);

    CREATE TABLE output (
        instance TEXT NOT NULL,
        minion   TEXT NOT NULL,
        offset   INTEGER NOT NULL,
        stream   TEXT NOT NULL,
        data     BLOB NOT NULL,
        PRIMARY KEY (instance, minion, offset),
        FOREIGN KEY (instance, minion) REFERENCES results (instance, minion) ON DELETE CASCADE
    ) WITHOUT ROWID;

    CREATE TABLE maintenance (
        id         INTEGER PRIMARY KEY,
        scope      TEXT NOT NULL,
        target     TEXT NOT NULL DEFAULT '',
        who        TEXT NOT NULL,
        why        TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        until      INTEGER,
        ended_at   INTEGER
    );

    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );",
    // 2: what an agent session needs to resume after a restart of the sidecar.
    "ALTER TABLE results ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE results ADD COLUMN token TEXT;",
    // 3: the search-engine export spool. Triggers queue one row per event of the original's
    // documents (`msg_type`) in the same transaction as the change, while a sink is configured;
    // each sink keeps how far it got, and rows every sink passed are deleted.
    "CREATE TABLE export_queue (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        msg_type    TEXT NOT NULL,
        job         TEXT NOT NULL,
        job_group   TEXT NOT NULL,
        instance    TEXT NOT NULL,
        machine     TEXT,
        return_code INTEGER
    );
    CREATE TABLE export_sinks (
        name    TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TRIGGER export_run_created AFTER INSERT ON runs
    WHEN EXISTS (SELECT 1 FROM export_sinks)
    BEGIN
        INSERT INTO export_queue (at, msg_type, job, job_group, instance)
        VALUES (NEW.created_at,
                CASE WHEN NEW.status <> 'skipped' THEN 'start'
                     WHEN NEW.reason LIKE '%maintenance%' THEN 'maintenance'
                     WHEN NEW.reason LIKE '%overlap%' THEN 'overlap'
                     ELSE 'no_machines' END,
                NEW.job, NEW.job_group, NEW.instance);
    END;
    CREATE TRIGGER export_run_finished AFTER UPDATE OF finished_at ON runs
    WHEN OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL
        AND EXISTS (SELECT 1 FROM export_sinks)
    BEGIN
        INSERT INTO export_queue (at, msg_type, job, job_group, instance)
        VALUES (NEW.finished_at,
                CASE WHEN NEW.status = 'skipped' AND NEW.started_at IS NULL THEN 'no_machines'
                     ELSE 'end' END,
                NEW.job, NEW.job_group, NEW.instance);
    END;
    CREATE TRIGGER export_result_inserted AFTER INSERT ON results
    WHEN (NEW.started_at IS NOT NULL OR NEW.retcode IS NOT NULL OR NEW.phase = 'maintenance')
        AND EXISTS (SELECT 1 FROM export_sinks)
    BEGIN
        INSERT INTO export_queue (at, msg_type, job, job_group, instance, machine, return_code)
        SELECT COALESCE(NEW.started_at, NEW.finished_at, CAST(unixepoch('subsec') * 1000 AS INTEGER)),
               'machine_start', job, job_group, NEW.instance, NEW.minion, NULL
        FROM runs WHERE instance = NEW.instance AND NEW.started_at IS NOT NULL;
        INSERT INTO export_queue (at, msg_type, job, job_group, instance, machine, return_code)
        SELECT COALESCE(NEW.finished_at, CAST(unixepoch('subsec') * 1000 AS INTEGER)),
               CASE WHEN NEW.retcode IS NULL THEN 'maintenance' ELSE 'machine_result' END,
               job, job_group, NEW.instance, NEW.minion, NEW.retcode
        FROM runs WHERE instance = NEW.instance
            AND (NEW.retcode IS NOT NULL OR NEW.phase = 'maintenance');
    END;
    CREATE TRIGGER export_result_started AFTER UPDATE OF started_at ON results
    WHEN OLD.started_at IS NULL AND NEW.started_at IS NOT NULL
        AND EXISTS (SELECT 1 FROM export_sinks)
    BEGIN
        INSERT INTO export_queue (at, msg_type, job, job_group, instance, machine)
        SELECT NEW.started_at, 'machine_start', job, job_group, NEW.instance, NEW.minion
        FROM runs WHERE instance = NEW.instance;
    END;
    CREATE TRIGGER export_result_finished AFTER UPDATE OF retcode ON results
    WHEN OLD.retcode IS NULL AND NEW.retcode IS NOT NULL
        AND EXISTS (SELECT 1 FROM export_sinks)
    BEGIN
        INSERT INTO export_queue (at, msg_type, job, job_group, instance, machine, return_code)
        SELECT COALESCE(NEW.finished_at, CAST(unixepoch('subsec') * 1000 AS INTEGER)),
               'machine_result', job, job_group, NEW.instance, NEW.minion, NEW.retcode
        FROM runs WHERE instance = NEW.instance;
    END;",
    // 4: how each minion's part was dispatched (single, legacy, coalesced, pre-armed,
    // armed, fallback) and the minion's clock skew (ms, minion minus sidecar) at its hello.
    "ALTER TABLE results ADD COLUMN path TEXT NOT NULL DEFAULT '';
     ALTER TABLE results ADD COLUMN skew_ms INTEGER;",
    // 5: what /metrics follows: runs as they finish, and runs skipped at creation.
    "CREATE INDEX IF NOT EXISTS runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
     CREATE INDEX IF NOT EXISTS runs_skipped ON runs (created_at) WHERE status = 'skipped';",
    // 6: listing order. Runs are listed newest first by (scheduled_at, created_at, instance);
    // with only `scheduled_at` indexed, every run sharing the newest instant (a burst: thousands
    // of jobs due at one second) had to be read and sorted for one page.
    "DROP INDEX runs_by_time;
     CREATE INDEX runs_by_order ON runs (scheduled_at, created_at);
     DROP INDEX runs_by_job;
     CREATE INDEX runs_by_job ON runs (job, scheduled_at, created_at);",
    // 7 (ops): the runs of one minion in listing order. `results` holds no time, so listing
    // `?minion=` read every result of the minion and sorted its runs; this table keeps each
    // result's run time beside the minion, filled by a trigger as results are inserted and
    // emptied with them.
    "CREATE TABLE minion_runs (
        minion       TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        instance     TEXT NOT NULL,
        PRIMARY KEY (minion, scheduled_at, created_at, instance),
        FOREIGN KEY (instance, minion) REFERENCES results (instance, minion) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX minion_runs_by_result ON minion_runs (instance, minion);
    INSERT OR IGNORE INTO minion_runs (minion, scheduled_at, created_at, instance)
        SELECT r.minion, u.scheduled_at, u.created_at, r.instance
        FROM results r JOIN runs u ON u.instance = r.instance;
    CREATE TRIGGER minion_runs_result AFTER INSERT ON results
    BEGIN
        INSERT OR IGNORE INTO minion_runs (minion, scheduled_at, created_at, instance)
        SELECT NEW.minion, scheduled_at, created_at, NEW.instance FROM runs
        WHERE instance = NEW.instance;
    END;",
    // 8: the jid of a `use_wrapper: false` minion's publish, so a run resumed after a restart
    // can find its return (in the master's job cache or on the bus) and kill it by jid.
    "ALTER TABLE results ADD COLUMN jid TEXT;",
];

/// The schema version this build writes.
pub(super) fn current_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Opens a connection with the settings every connection uses.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(open_err)?;
    // WAL: readers never block the writer. synchronous=FULL: a committed result survives a power
    // loss, not only a crash of ours; the writer batches, so this costs one fsync per batch.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
    Ok(conn)
}

/// Brings the schema up to [`current_version`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = current_version();
    if found > known {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let err = |source| StoreError::Migrate { path: path.to_path_buf(), version, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}
