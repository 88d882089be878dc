//! Reading the search-engine export spool (filled by triggers, see migration 3).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::read::time;

/// One queued event, with the output of its minion for a `machine_result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub msg_type: String,
    pub job: String,
    pub group: String,
    pub instance: String,
    pub machine: Option<String>,
    pub return_code: Option<i32>,
    pub output: Option<String>,
}

/// The next events `sink` has not delivered, oldest first; `None` if the sink is not registered.
pub(super) fn pending(
    c: &Connection,
    sink: &str,
    limit: u32,
) -> rusqlite::Result<Option<Vec<ExportEvent>>> {
    let last: Option<i64> = c
        .query_row("SELECT last_id FROM export_sinks WHERE name = ?1", params![sink], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some(last) = last else { return Ok(None) };
    let mut stmt = c.prepare_cached(
        "SELECT id, at, msg_type, job, job_group, instance, machine, return_code FROM export_queue
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut events = stmt
        .query_map(params![last, limit], |r| {
            Ok(ExportEvent {
                id: r.get(0)?,
                at: time(r.get(1)?)?,
                msg_type: r.get(2)?,
                job: r.get(3)?,
                group: r.get(4)?,
                instance: r.get(5)?,
                machine: r.get(6)?,
                return_code: r.get(7)?,
                output: None,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut output = c.prepare_cached(
        "SELECT data FROM output WHERE instance = ?1 AND minion = ?2 ORDER BY offset",
    )?;
    for event in events.iter_mut().filter(|e| e.msg_type == "machine_result") {
        let Some(machine) = &event.machine else { continue };
        let mut bytes = Vec::new();
        let mut rows = output.query(params![event.instance, machine])?;
        while let Some(row) = rows.next()? {
            bytes.extend_from_slice(row.get_ref(0)?.as_blob()?);
        }
        event.output = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(Some(events))
}
