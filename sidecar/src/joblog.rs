//! The per-job log file `<logdir>/<job>.log`, in the original Saltpeter's banner format, so log
//! shippers and people's `grep` habits keep working after a migration. Formatting is pure
//! ([`Entry::render`]); [`append`] writes one entry.
//!
//! Times are rendered as Python's `str()` of an aware UTC datetime, as the original wrote them:
//! `2026-11-23 15:30:00.250000+00:00`, without the fraction when it is zero. Output has `\r`
//! progress collapsed to the last segment of each line, as the original did for its logs.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Timelike, Utc};

/// One entry of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A run started.
    Start { instance: &'a str, at: DateTime<Utc> },
    /// A run was skipped because the previous one still runs.
    Overlap { instance: &'a str, at: DateTime<Utc> },
    /// The target matched no minion.
    NoTargets { instance: &'a str },
    /// Salt failed while resolving the target.
    SaltError { instance: &'a str, at: DateTime<Utc>, output: &'a str },
    /// A minion's result (also used, as the original did, for maintenance notes, code 0).
    MinionResult {
        instance: &'a str,
        minion: &'a str,
        at: DateTime<Utc>,
        code: i32,
        output: &'a str,
    },
    /// A run ended.
    End { instance: &'a str, at: DateTime<Utc> },
}

impl Entry<'_> {
    /// The text appended to the log file.
    pub fn render(&self) -> String {
        match *self {
            Entry::Start { instance, at } => {
                format!("###### Starting {instance} at {} ################\n", py_time(at))
            }
            Entry::Overlap { instance, at } => {
                format!(
                    "###### Overlap detected on {instance} at {} ################\n",
                    py_time(at)
                )
            }
            Entry::NoTargets { instance } => {
                format!("!!!!!! No targets matched for {instance} !!!!!!\n")
            }
            Entry::SaltError { instance, at, output } => format!(
                "!!!!!! SALT-MASTER ERROR during test.ping for {instance} at {} !!!!!!\n{}\n",
                py_time(at),
                collapse_carriage_returns(output)
            ),
            Entry::MinionResult { instance, minion, at, code, output } => format!(
                "########## {minion} from {instance} ################\n**** Exit Code {code} ******\n{}\n####### END {minion} from {instance} at {} #########\n",
                collapse_carriage_returns(output),
                py_time(at)
            ),
            Entry::End { instance, at } => {
                format!("###### Finished {instance} at {} ################\n", py_time(at))
            }
        }
    }
}

/// Appends `entry` to `<logdir>/<job>.log`, creating the directory and file as needed.
pub fn append(logdir: &Path, job: &str, entry: &Entry<'_>) -> std::io::Result<()> {
    fs_err::create_dir_all(logdir)?;
    let path = logdir.join(format!("{job}.log"));
    let mut file = fs_err::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(entry.render().as_bytes())
}

/// Python's `str(datetime)` of an aware UTC instant.
fn py_time(at: DateTime<Utc>) -> String {
    let micros = at.nanosecond() / 1000 % 1_000_000;
    if micros == 0 {
        format!("{}+00:00", at.format("%Y-%m-%d %H:%M:%S"))
    } else {
        format!("{}.{micros:06}+00:00", at.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// Keeps, of each line, the last non-empty segment after a `\r`, like a terminal showing a
/// progress bar would.
pub fn collapse_carriage_returns(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            if line.contains('\r') {
                line.split('\r').rfind(|s| !s.is_empty()).unwrap_or("")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(micros: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 15, 30, 0).unwrap()
            + chrono::Duration::microseconds(micros.into())
    }

    #[test]
    fn banners_match_the_original() {
        let instance = "backup_1795440600";
        assert_eq!(
            Entry::Start { instance, at: at(250_000) }.render(),
            "###### Starting backup_1795440600 at 2026-11-23 15:30:00.250000+00:00 ################\n"
        );
        assert_eq!(
            Entry::MinionResult {
                instance,
                minion: "web1",
                at: at(0),
                code: 3,
                output: "50%\r100%\ndone"
            }
            .render(),
            "########## web1 from backup_1795440600 ################\n**** Exit Code 3 ******\n100%\ndone\n####### END web1 from backup_1795440600 at 2026-11-23 15:30:00+00:00 #########\n"
        );
        assert_eq!(
            Entry::End { instance, at: at(1) }.render(),
            "###### Finished backup_1795440600 at 2026-11-23 15:30:00.000001+00:00 ################\n"
        );
        assert_eq!(
            Entry::Overlap { instance, at: at(0) }.render(),
            "###### Overlap detected on backup_1795440600 at 2026-11-23 15:30:00+00:00 ################\n"
        );
        assert_eq!(
            Entry::NoTargets { instance }.render(),
            "!!!!!! No targets matched for backup_1795440600 !!!!!!\n"
        );
    }

    #[test]
    fn carriage_returns_keep_the_last_segment() {
        assert_eq!(collapse_carriage_returns("a\rb\r\nc\r\r\nplain"), "b\nc\nplain");
    }

    #[test]
    fn append_creates_the_file_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("logs");
        append(&logdir, "j", &Entry::NoTargets { instance: "i1" }).unwrap();
        append(&logdir, "j", &Entry::NoTargets { instance: "i2" }).unwrap();
        let text = fs_err::read_to_string(logdir.join("j.log")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
