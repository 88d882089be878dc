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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_dir;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("instant").with_timezone(&Utc)
    }

    fn job(command: &str) -> String {
        format!(
            "min: '*'\nhour: '*'\ndom: '*'\nmon: '*'\ndow: '*'\ntargets: '*'\ncommand: {command}\n"
        )
    }

    fn pillar(yaml: &str) -> PillarConfig {
        let jobs = serde_yaml::from_str(yaml).expect("yaml");
        PillarConfig {
            origin: PillarConfig::origin_of("master_master"),
            jobs,
            ..Default::default()
        }
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("  {l}\n")).collect()
    }

    #[test]
    fn pillar_jobs_join_the_files_and_a_clash_names_both_sources() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a.yaml");
        fs_err::write(&file, format!("both:\n{}", indent(&job("echo file")))).expect("write");
        let files = load_dir(dir.path(), now()).expect("load");
        let p = pillar(&format!(
            "both:\n{}only:\n{}",
            indent(&job("echo pillar")),
            indent(&job("echo only"))
        ));
        let merged = with_pillar(&files, &p, None, now());
        assert_eq!(merged.jobs[&JobName::new("both")].command, "echo file");
        let only = &merged.jobs[&JobName::new("only")];
        assert_eq!(
            (only.group.as_str(), only.file.to_str()),
            ("pillar", Some("pillar:master_master"))
        );
        let errors: Vec<String> = merged.report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("pillar:master_master: job `both`: is defined both in "));
        assert!(errors[0].contains(&file.display().to_string()), "{errors:?}");
    }

    #[test]
    fn an_invalid_pillar_job_is_reported_like_a_file_job_and_keeps_its_last_definition() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = load_dir(dir.path(), now()).expect("load");
        let good =
            with_pillar(&files, &pillar(&format!("j:\n{}", indent(&job("echo 1")))), None, now());
        let bad = pillar(
            "j:\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '8'\n  command: x\n  targets: '*'\n",
        );
        let merged = with_pillar(&files, &bad, Some(&good), now());
        assert_eq!(merged.jobs[&JobName::new("j")].command, "echo 1");
        let error = merged.report.errors[0].to_string();
        assert!(error.starts_with("pillar:master_master: job `j`: `dow`: "), "{error}");
        assert!(merged.report.warnings[0].message.contains("last valid definition"));
        // Without a previous definition, it is not taken.
        assert!(with_pillar(&files, &bad, None, now()).jobs.is_empty());
    }

    #[test]
    fn pillar_maintenance_adds_to_the_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = "saltpeter_maintenance:\n  machines: [m1]\n";
        fs_err::write(dir.path().join("m.yaml"), text).expect("write");
        let files = load_dir(dir.path(), now()).expect("load");
        let mut p = pillar("{}");
        p.maintenance = Some(serde_yaml::from_str("machines: [m2, m1]").expect("yaml"));
        p.minions_in_maintenance = vec!["m3".into()];
        let merged = with_pillar(&files, &p, None, now());
        assert_eq!(merged.maintenance.machines, ["m1", "m2", "m3"]);
        assert!(!merged.maintenance.global);
        p.maintenance = Some(serde_yaml::from_str("global: true").expect("yaml"));
        assert!(with_pillar(&files, &p, None, now()).maintenance.global);
    }
}
