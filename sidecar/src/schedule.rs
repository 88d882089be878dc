//! Cron math: when does a job fire next. Pure functions of values: no tokio, no I/O, no clock.
//!
//! The original Saltpeter formats `sec min hour dom mon dow year` into one expression for the PyPI
//! `crontab` package (parse-crontab), and every job file written for it relies on that library's
//! semantics. We implement them here rather than use the `cron` crate, which differs on exactly the
//! points job files depend on: day of month and day of week combine with AND (not crontab(5)'s
//! OR), `Z<n>` (n days before the month's last), `L<dow>` (the last such weekday), `?`, 0 and 7
//! both Sunday, the `sat-sun` special case, the library's step rejections (`45/30` and `*/61` are
//! errors, not silently clamped) and no wrap-around ranges. The differential test
//! (`tests/tests/e2e/cron_differential.rs`) checks us against the library itself.
//!
//! Time zones add the one thing the original never had: a job's fields are read as wall-clock time
//! in its zone. A wall-clock time that does not exist (spring forward) fires once, at the first
//! instant after the gap; an ambiguous one (fall back) fires once, at its first occurrence. So a
//! job fires at most once per slot and never silently skips one. Schedules end with 2099.

mod cron;
mod parse;
#[cfg(test)]
mod tests;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use cron::{Cron, LAST_YEAR};
pub use parse::{Field, FieldError};

/// When a job fires: its cron expression read in its time zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn new(cron: Cron, zone: Tz) -> Schedule {
        Schedule { cron, zone }
    }

    pub fn cron(&self) -> &Cron {
        &self.cron
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first firing instant strictly after `t`, or `None` if the job never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t.with_timezone(&self.zone).naive_local();
        loop {
            let local = self.cron.next_after(from)?;
            let at = resolve(self.zone, local)?;
            if at > t {
                return Some(at);
            }
            // Only in the second pass of a repeated hour: its slots fired in the first pass.
            from = local;
        }
    }

    /// The next `n` firing instants after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(64));
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// The instant a wall-clock slot fires at: the time itself, its first occurrence when it is
/// ambiguous, the first instant after the gap when it does not exist.
fn resolve(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => gap_end(zone, local),
    }
}

/// The first instant whose wall-clock reading is at or after `local`, found by bisection over
/// instants ±15 h around it (the reading only moves forward there: no zone has two transitions
/// that close together).
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let reading = |secs: i64| {
        let at = DateTime::from_timestamp(secs, 0)?;
        Some(at.with_timezone(&zone).naive_local())
    };
    let centre = local.and_utc().timestamp();
    let (mut lo, mut hi) = (centre - 15 * 3600, centre + 15 * 3600);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if reading(mid)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}
