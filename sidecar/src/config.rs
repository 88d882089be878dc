//! Job definitions and the daemon's settings: YAML files in the config directory → validated
//! `Job`s and `Settings`, with every problem reported at once, each naming file, job and field.
//!
//! Each file is first read as it is written (`raw`: the original's keys, loosely typed), then
//! validated into types that cannot hold a bad value (`job`, `settings`). A bad file or job never
//! affects another; on reload, a job whose new definition is invalid keeps its last valid one
//! (`load::reload`), and the change is described as a `JobDiff`. `watch` follows the directory.

mod diff;
mod job;
mod lines;
mod load;
mod pillar;
mod raw;
mod settings;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};

pub use diff::JobDiff;
pub use job::{BatchSize, CatchUp, Dispatch, Job, JobName, TargetType, Threshold, WrapperLogLevel};
pub use load::{Loaded, load_dir, reload};
pub use pillar::{JOBS_KEY, MAINTENANCE_KEY, PillarConfig, with_pillar};
pub use settings::{ApiToken, Maintenance, MinionDispatch, MinionMode, Role, Settings};
pub use watch::{Reloaded, WatchOptions, watch};

/// The file and YAML line a diagnostic is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: Option<usize>,
}

/// An error or a warning about the configuration, naming where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    /// The job, or the reserved key (`saltpeter_config`), it is about; none for a whole file.
    pub job: Option<String>,
    /// The key it is about; none for a whole job or file.
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    fn new(
        file: &Path,
        job: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            origin: Origin { file: file.to_path_buf(), line: None },
            job: job.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn at_line(mut self, line: Option<usize>) -> Self {
        self.origin.line = line;
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `/etc/saltpeter/db.yaml:12: job `nightly`: `dow`: "8" has 8, out of range 0-7 ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin.file.display())?;
        if let Some(line) = self.origin.line {
            write!(f, ":{line}")?;
        }
        if let Some(job) = &self.job {
            write!(f, ": job `{job}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything a load found wrong (errors: the job or file was not taken) or suspicious (warnings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}
