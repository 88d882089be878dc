//! Loading the config directory: every `*.yaml` and `*.yml` file (not recursive, in name order),
//! reserved keys, duplicate names, and on reload the last valid definition of a broken job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_yaml::Value;

use super::job::{Context, Validator, validate};
use super::lines::{LazyLines, Lines};
use super::raw::{RawJob, RawMaintenance, RawSettings};
use super::settings::{apply_settings, maintenance};
use super::{Diagnostic, Job, JobName, Maintenance, Report, Settings};

const SETTINGS_KEY: &str = "saltpeter_config";
const MAINTENANCE_KEY: &str = "saltpeter_maintenance";

/// The configuration in effect, and what was wrong with the files it came from.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub settings: Settings,
    pub maintenance: Maintenance,
    /// Shared with the scheduler's table: one copy of each job in memory.
    pub jobs: BTreeMap<JobName, Arc<Job>>,
    pub report: Report,
    /// The directory's file names, sizes and times before this load read it (for `watch`).
    pub(super) stamp: Fingerprint,
}

pub(super) type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// Loads the directory from scratch. Fails only when the directory itself cannot be read.
pub fn load_dir(dir: &Path, now: DateTime<Utc>) -> std::io::Result<Loaded> {
    load(dir, None, now)
}

/// Loads the directory again; a job (or file) that became invalid keeps its previous definition.
pub fn reload(dir: &Path, previous: &Loaded, now: DateTime<Utc>) -> std::io::Result<Loaded> {
    load(dir, Some(previous), now)
}

/// One file: its text, and its YAML tree while it is being used (trees are built one file at a
/// time, so 100,000 jobs never hold 100 trees in memory at once).
struct File {
    path: PathBuf,
    text: Option<String>,
    map: Option<serde_yaml::Mapping>,
    /// Unreadable or not a YAML map: reported once; on reload its jobs keep their definitions.
    bad: bool,
}

impl File {
    fn parse(&mut self, report: &mut Report) {
        if self.map.is_some() || self.bad {
            return;
        }
        match self.text.as_deref().and_then(|text| parse(&self.path, text, report)) {
            Some(map) => self.map = Some(map),
            None => self.bad = true,
        }
    }

    fn lines(&self) -> Lines {
        self.text.as_deref().map(Lines::index).unwrap_or_default()
    }
}

fn load(dir: &Path, previous: Option<&Loaded>, now: DateTime<Utc>) -> std::io::Result<Loaded> {
    let mut report = Report::default();
    let stamp = super::watch::fingerprint(dir);
    let mut files: Vec<File> =
        job_files(dir)?.into_iter().map(|path| read(path, &mut report)).collect();

    // Settings first: they hold the default time zone of jobs.
    let mut settings = Settings::default();
    let mut settings_errors = false;
    let mut maintenance_found: Option<(Maintenance, PathBuf)> = None;
    for file in &mut files {
        let mentions = |key| file.text.as_deref().is_some_and(|t| t.contains(key));
        if !(mentions(SETTINGS_KEY) || mentions(MAINTENANCE_KEY)) {
            continue;
        }
        file.parse(&mut report);
        let Some(map) = &file.map else { continue };
        let lines = LazyLines::new(file.text.as_deref());
        if let Some(block) = map.get(SETTINGS_KEY) {
            let mut v = Validator { errors: Vec::new(), warnings: Vec::new() };
            match block {
                Value::Mapping(m) => {
                    apply_settings(&mut settings, RawSettings::from_mapping(m.clone()), &mut v)
                }
                other => v
                    .errors
                    .push((None, format!("{} is not a map of settings", super::job::show(other)))),
            }
            settings_errors |= !v.errors.is_empty();
            push_all(&mut report, &file.path, SETTINGS_KEY, &lines, v);
        }
        if let Some(block) = map.get(MAINTENANCE_KEY) {
            let mut v = Validator { errors: Vec::new(), warnings: Vec::new() };
            let m = match block {
                Value::Mapping(m) => maintenance(RawMaintenance::from_mapping(m.clone()), &mut v),
                other => {
                    v.errors.push((None, format!("{} is not a map", super::job::show(other))));
                    Maintenance::default()
                }
            };
            if let Some((_, earlier)) = &maintenance_found {
                v.warnings.push((
                    None,
                    format!("also set in {}; this file (later by name) wins", earlier.display()),
                ));
            }
            push_all(&mut report, &file.path, MAINTENANCE_KEY, &lines, v);
            maintenance_found = Some((m, file.path.clone()));
        }
    }
    if settings_errors && let Some(prev) = previous {
        settings = prev.settings.clone();
    }

    // Then jobs, by name, remembering every file that defines each.
    let mut found: BTreeMap<String, Vec<(PathBuf, Option<Job>)>> = BTreeMap::new();
    for file in &mut files {
        file.parse(&mut report);
        let Some(map) = file.map.take() else { continue };
        let lines = LazyLines::new(file.text.as_deref());
        let group =
            file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let cx = Context { file: &file.path, group: &group, default_zone: settings.timezone, now };
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                let d = Diagnostic::new(
                    &file.path,
                    None,
                    None,
                    format!("the top-level key {} is not a job name", super::job::show(&key)),
                );
                report.errors.push(d);
                continue;
            };
            if name == SETTINGS_KEY || name == MAINTENANCE_KEY {
                continue;
            }
            let shown = super::job::show(&value);
            let checked = match value {
                Value::Mapping(map) => {
                    let mut raw = RawJob::from_mapping(map);
                    let octal = yaml11_octal(&mut raw, &lines, name);
                    let mut checked = validate(name, raw, &cx);
                    checked.warnings.extend(octal);
                    checked
                }
                _ => super::job::Checked {
                    job: None,
                    errors: vec![(None, format!("{shown} is not a map of job keys"))],
                    warnings: Vec::new(),
                },
            };
            let v = Validator { errors: checked.errors, warnings: checked.warnings };
            push_all(&mut report, &file.path, name, &lines, v);
            found.entry(name.to_owned()).or_default().push((file.path.clone(), checked.job));
        }
    }

    let mut jobs = BTreeMap::new();
    // A file that cannot be read or parsed keeps the jobs it had.
    if let Some(prev) = previous {
        for file in files.iter().filter(|f| f.bad) {
            for (name, job) in prev.jobs.iter().filter(|(_, j)| j.file == file.path) {
                if !found.contains_key(name.as_str()) {
                    jobs.insert(name.clone(), job.clone());
                }
            }
        }
    }
    let keep_previous = |name: &JobName| previous.and_then(|p| p.jobs.get(name)).cloned();
    for (name, mut defs) in found {
        let name = name.as_str();
        let job_name = JobName::new(name);
        if defs.len() > 1 {
            let names: Vec<String> = defs.iter().map(|(p, _)| p.display().to_string()).collect();
            for (path, _) in &defs {
                // Rare: index that file's lines again rather than keep every file's index.
                let line = files.iter().find(|f| f.path == *path).and_then(|f| f.lines().job(name));
                report.errors.push(
                    Diagnostic::new(
                        path,
                        Some(name),
                        None,
                        format!(
                            "is defined in more than one file: {}; each name must be unique",
                            names.join(" and ")
                        ),
                    )
                    .at_line(line),
                );
            }
            if let Some(job) = keep_previous(&job_name) {
                jobs.insert(job_name, job);
            }
            continue;
        }
        match defs.swap_remove(0) {
            (_, Some(job)) => {
                jobs.insert(job_name, Arc::new(job));
            }
            (path, None) => {
                if let Some(job) = keep_previous(&job_name) {
                    report.warnings.push(Diagnostic::new(
                        &path,
                        Some(name),
                        None,
                        "keeps its last valid definition until the errors are fixed",
                    ));
                    jobs.insert(job_name, job);
                }
            }
        }
    }
    Ok(Loaded {
        settings,
        maintenance: maintenance_found.map(|(m, _)| m).unwrap_or_default(),
        jobs,
        report,
        stamp,
    })
}

/// PyYAML (the original's parser, YAML 1.1) reads an unquoted `010` as octal 8; YAML 1.2 (ours)
/// reads it as the string "010". Cron fields written that way keep the original's meaning.
fn yaml11_octal(
    raw: &mut RawJob,
    lines: &LazyLines<'_>,
    job: &str,
) -> Vec<(Option<String>, String)> {
    let mut warnings = Vec::new();
    let fields = [
        ("sec", &mut raw.sec),
        ("min", &mut raw.min),
        ("hour", &mut raw.hour),
        ("dom", &mut raw.dom),
        ("mon", &mut raw.mon),
        ("dow", &mut raw.dow),
        ("year", &mut raw.year),
    ];
    for (key, value) in fields {
        let Some(Value::String(text)) = value.as_ref() else { continue };
        let octal = text.len() > 1
            && text.starts_with('0')
            && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && lines.get().written(job, key) == Some(text.as_str());
        if let (true, Ok(n)) = (octal, u64::from_str_radix(text, 8)) {
            warnings.push((
                Some(key.to_owned()),
                format!("{text} is YAML 1.1 octal, read as {n} as the original did; write {n}, or '{text}' (quoted) for {}", text.trim_start_matches('0')),
            ));
            *value = Some(Value::Number(n.into()));
        }
    }
    warnings
}

fn push_all(report: &mut Report, file: &Path, job: &str, lines: &LazyLines<'_>, v: Validator) {
    if v.errors.is_empty() && v.warnings.is_empty() {
        return;
    }
    let lines = lines.get();
    let diag = |(field, message): (Option<String>, String)| {
        let line = match &field {
            Some(f) => lines.field(job, f),
            None => lines.job(job),
        };
        Diagnostic::new(file, Some(job), field.as_deref(), message).at_line(line)
    };
    report.errors.extend(v.errors.into_iter().map(diag));
    report.warnings.extend(v.warnings.into_iter().map(diag));
}

fn job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if matches!(ext, Some("yaml" | "yml")) && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: PathBuf, report: &mut Report) -> File {
    match fs_err::read_to_string(&path) {
        Ok(text) => File { path, text: Some(text), map: None, bad: false },
        Err(e) => {
            report.errors.push(Diagnostic::new(&path, None, None, format!("cannot be read: {e}")));
            File { path, text: None, map: None, bad: true }
        }
    }
}

fn parse(path: &Path, text: &str, report: &mut Report) -> Option<serde_yaml::Mapping> {
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(map)) => Some(map),
        Ok(Value::Null) => Some(serde_yaml::Mapping::new()),
        Ok(other) => {
            report.errors.push(Diagnostic::new(
                path,
                None,
                None,
                format!("is {}, not a map of job names to jobs", super::job::show(&other)),
            ));
            None
        }
        Err(e) => {
            let line = e.location().map(|l| l.line());
            let message = format!(
                "is not valid YAML: {e} (hint: quote values starting with `*`, like '*/5')"
            );
            report.errors.push(Diagnostic::new(path, None, None, message).at_line(line));
            None
        }
    }
}
