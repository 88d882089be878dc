//! Our side's figures from the sidecar's run store (SQLite, read-only, as an operator would):
//! for the runs of jobs whose names start with a prefix, each minion's result and output.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

/// One minion's result of one run.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The slot's instant, in seconds since the epoch.
    pub(crate) instant: f64,
    pub(crate) status: String,
    pub(crate) retcode: Option<i32>,
    pub(crate) output: String,
    /// The dispatch path the minion took (`armed`, `late-armed`, `fallback`, ...).
    pub(crate) path: Option<String>,
}

/// Runs of the jobs named `prefix*`, per scheduled instant (oldest first): how many there are
/// and how many are finished.
pub(crate) fn runs_per_instant(
    db: &Path,
    prefix: &str,
) -> anyhow::Result<Vec<(i64, usize, usize)>> {
    let Some(db) = open(db)? else { return Ok(Vec::new()) };
    let mut q = db.prepare(
        "SELECT scheduled_at, count(*), sum(status NOT IN ('pending', 'running')) FROM runs
         WHERE job LIKE ?1 || '%' AND trigger = 'schedule' GROUP BY scheduled_at ORDER BY scheduled_at",
    )?;
    let rows = q
        .query_map([prefix], |r| Ok((r.get(0)?, r.get::<_, usize>(1)?, r.get::<_, usize>(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Every minion result (with its output) of the runs of jobs `prefix*` scheduled in
/// `[from, to]` (milliseconds); a run without results yields one row with no retcode.
pub(crate) fn results(db: &Path, prefix: &str, from: i64, to: i64) -> anyhow::Result<Vec<Stored>> {
    let Some(db) = open(db)? else { return Ok(Vec::new()) };
    let mut q = db.prepare(
        "SELECT r.scheduled_at, r.status, s.retcode,
                (SELECT group_concat(CAST(o.data AS TEXT), '') FROM output o
                  WHERE o.instance = s.instance AND o.minion = s.minion), s.path
         FROM runs r LEFT JOIN results s ON s.instance = r.instance
         WHERE r.job LIKE ?1 || '%' AND r.trigger = 'schedule' AND r.scheduled_at BETWEEN ?2 AND ?3",
    )?;
    let rows = q
        .query_map(rusqlite::params![prefix, from, to], |r| {
            Ok(Stored {
                instant: r.get::<_, i64>(0)? as f64 / 1000.0,
                status: r.get(1)?,
                retcode: r.get(2)?,
                output: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                path: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn open(path: &Path) -> anyhow::Result<Option<rusqlite::Connection>> {
    if !path.exists() {
        return Ok(None);
    }
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("open the run store {}", path.display()))?;
    db.busy_timeout(Duration::from_secs(10))?;
    Ok(Some(db))
}
