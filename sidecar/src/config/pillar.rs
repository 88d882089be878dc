//! Jobs and maintenance from Salt pillar, merged into the file configuration: pillar jobs go
//! through the same validation as file jobs, a name defined by a file and by pillar is an error
//! naming both (the file's job is used), and a pillar job that became invalid keeps its last
//! valid definition. Reading the pillar is `crate::pillar`'s; this is only the merge.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_yaml::Value;

use super::job::{Checked, Context, Validator, show, validate};
use super::raw::{RawJob, RawMaintenance};
use super::settings::maintenance;
use super::{Diagnostic, JobName, Loaded};

/// The pillar key of the jobs and of the maintenance block, as named in diagnostics.
pub const JOBS_KEY: &str = "saltpeter:jobs";
pub const MAINTENANCE_KEY: &str = "saltpeter:maintenance";

/// What the pillar holds for Saltpeter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PillarConfig {
    /// Where it comes from, shown in diagnostics and as the jobs' `file`
    /// (`pillar:<minion id>`).
    pub origin: PathBuf,
    /// `saltpeter:jobs` of the sidecar's pillar minion id: job name → job keys.
    pub jobs: serde_yaml::Mapping,
    /// `saltpeter:maintenance` of that minion id: `{global, machines}` (or `true`: that id).
    pub maintenance: Option<Value>,
    /// Minions whose own pillar says `saltpeter:maintenance: true`.
    pub minions_in_maintenance: Vec<String>,
    /// What Salt reported while rendering the pillar (`_errors`), or why it could not be read.
    pub errors: Vec<String>,
}

impl PillarConfig {
    /// The source name of the pillar of `minion`.
    pub fn origin_of(minion: &str) -> PathBuf {
        PathBuf::from(format!("pillar:{minion}"))
    }

    fn minion(&self) -> String {
        let origin = self.origin.display().to_string();
        origin.strip_prefix("pillar:").unwrap_or(&origin).to_owned()
    }
}

/// The file configuration `files` with the pillar's jobs and maintenance added. `previous` is
/// the configuration in effect (its pillar jobs stand in for ones that became invalid).
pub fn with_pillar(
    files: &Loaded,
    pillar: &PillarConfig,
    previous: Option<&Loaded>,
    now: DateTime<Utc>,
) -> Loaded {
    let mut out = files.clone();
    let origin = pillar.origin.as_path();
    for e in &pillar.errors {
        out.report.errors.push(Diagnostic::new(
            origin,
            None,
            None,
            format!("Salt could not render the pillar: {e}"),
        ));
    }

    // Maintenance: added to the files' (either may turn global maintenance on).
    match &pillar.maintenance {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => push_unique(&mut out.maintenance.machines, pillar.minion()),
        Some(Value::Mapping(m)) => {
            let mut v = Validator { errors: Vec::new(), warnings: Vec::new() };
            let m = maintenance(RawMaintenance::from_mapping(m.clone()), &mut v);
            push_diagnostics(&mut out, origin, MAINTENANCE_KEY, v);
            out.maintenance.global |= m.global;
            for id in m.machines {
                push_unique(&mut out.maintenance.machines, id);
            }
        }
        Some(other) => out.report.errors.push(Diagnostic::new(
            origin,
            Some(MAINTENANCE_KEY),
            None,
            format!("{} is not a map of `global` and `machines`, nor true", show(other)),
        )),
    }
    for id in &pillar.minions_in_maintenance {
        push_unique(&mut out.maintenance.machines, id.clone());
    }

    // Jobs. Names the files define, valid or not: those win.
    let in_files: BTreeSet<&str> = files
        .jobs
        .keys()
        .map(JobName::as_str)
        .chain(files.report.errors.iter().filter_map(|d| d.job.as_deref()))
        .collect();
    let group = "pillar";
    let cx = Context { file: origin, group, default_zone: files.settings.timezone, now };
    let mut added = Vec::new();
    for (key, value) in &pillar.jobs {
        let Some(name) = key.as_str() else {
            out.report.errors.push(Diagnostic::new(
                origin,
                None,
                Some(JOBS_KEY),
                format!("the key {} is not a job name", show(key)),
            ));
            continue;
        };
        if in_files.contains(name) {
            let file = files
                .jobs
                .get(&JobName::new(name))
                .map(|j| j.file.display().to_string())
                .or_else(|| {
                    let d = files.report.errors.iter().find(|d| d.job.as_deref() == Some(name));
                    d.map(|d| d.origin.file.display().to_string())
                })
                .unwrap_or_default();
            out.report.errors.push(Diagnostic::new(
                origin,
                Some(name),
                None,
                format!(
                    "is defined both in {file} and in pillar {JOBS_KEY} of {}; the file's definition is used: rename one",
                    pillar.minion()
                ),
            ));
            continue;
        }
        let checked = match value {
            Value::Mapping(map) => validate(name, RawJob::from_mapping(map.clone()), &cx),
            other => Checked {
                job: None,
                errors: vec![(None, format!("{} is not a map of job keys", show(other)))],
                warnings: Vec::new(),
            },
        };
        let v = Validator { errors: checked.errors, warnings: checked.warnings };
        push_diagnostics(&mut out, origin, name, v);
        let job_name = JobName::new(name);
        match checked.job {
            Some(job) => added.push((job_name, Arc::new(job))),
            None => {
                let last = previous
                    .and_then(|p| p.jobs.get(&job_name))
                    .filter(|j| j.file.as_path() == origin);
                if let Some(job) = last {
                    out.report.warnings.push(Diagnostic::new(
                        origin,
                        Some(name),
                        None,
                        "keeps its last valid definition until the errors are fixed",
                    ));
                    added.push((job_name, Arc::clone(job)));
                }
            }
        }
    }
    // A job unchanged since the previous load stays the same `Arc` (the diff compares cheaply).
    for (name, job) in added {
        let same = previous.and_then(|p| p.jobs.get(&name)).filter(|j| ***j == *job).cloned();
        out.jobs.insert(name, same.unwrap_or(job));
    }
    out
}

fn push_unique(list: &mut Vec<String>, id: String) {
    if !list.contains(&id) {
        list.push(id);
    }
}

fn push_diagnostics(out: &mut Loaded, origin: &std::path::Path, job: &str, v: Validator) {
    let diag = |(field, message): (Option<String>, String)| {
        Diagnostic::new(origin, Some(job), field.as_deref(), message)
    };
    out.report.errors.extend(v.errors.into_iter().map(diag));
    out.report.warnings.extend(v.warnings.into_iter().map(diag));
}
