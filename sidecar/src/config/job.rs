//! `Job`: one validated job definition, and the validation of a `RawJob` into it.
//!
//! Validation checks every key and reports every problem; a job with any error is not taken.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_yaml::Value;

use super::raw::{RawJob, did_you_mean};
use crate::schedule::{Cron, Field, Schedule};

/// A job's name: a top-level key of a job file, unique across the config directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobName(String);

impl JobName {
    pub fn new(name: impl Into<String>) -> JobName {
        JobName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Salt's `tgt_type`s: the Salt client's own type.
pub use crate::salt::TargetType;

/// A count or a share of the targets (`batch_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Count(u32),
    Percent(u8),
}

/// How many failures stop later batches (`max_failures`).
pub type Threshold = BatchSize;

/// Slots missed while the sidecar was down or asleep, beyond `catch_up_window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Not run (the original's behaviour); logged.
    #[default]
    Skip,
    /// The latest missed slot runs once.
    Latest,
    /// Every missed slot runs.
    All,
}

/// How a run reaches its minions (used by the run engine; parsed here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    Coalesced,
    Single,
}

/// The agent's log level (`wrapper_loglevel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapperLogLevel {
    Normal,
    Debug,
    Off,
}

/// A validated job. `None` in an override field means "the global default from `Settings`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub name: JobName,
    /// The file name without extension, unless the job sets `group:`.
    pub group: String,
    /// The file the job comes from.
    pub file: std::path::PathBuf,
    pub schedule: Schedule,
    pub command: String,
    pub targets: String,
    pub target_type: TargetType,
    /// `number_of_targets`: a random subset of this size; `None` = all.
    pub number_of_targets: Option<u32>,
    pub batch_size: Option<BatchSize>,
    pub batch_wait: Duration,
    pub max_failures: Option<Threshold>,
    /// `None` = no timeout (`timeout: 0`).
    pub timeout: Option<Duration>,
    /// Past this, the run is reported as running long (not killed).
    pub soft_timeout: Option<Duration>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub allow_overlap: bool,
    pub lockfile: Option<String>,
    pub use_wrapper: bool,
    pub wrapper_path: Option<String>,
    pub wrapper_loglevel: Option<WrapperLogLevel>,
    pub wrapper_logdir: Option<String>,
    pub saltpeter_server_host: Option<String>,
    pub description: Option<String>,
    /// A disabled job is loaded and shown, never fired by the schedule.
    pub enabled: bool,
    pub catch_up: CatchUp,
    pub catch_up_window: Option<Duration>,
    pub dispatch: Option<Dispatch>,
    pub lead_time: Option<Duration>,
    pub history_days: Option<u32>,
    pub max_runs: Option<u32>,
}

/// The original's magic value of `allow_overlap`.
const OVERLAP_MAGIC: &str = "i know what i am doing!";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What validation found: the job if it has no error, and every problem.
pub(super) struct Checked {
    pub(super) job: Option<Job>,
    /// (field, message); `None` field = the whole job.
    pub(super) errors: Vec<(Option<String>, String)>,
    pub(super) warnings: Vec<(Option<String>, String)>,
}

pub(super) struct Context<'a> {
    pub(super) file: &'a std::path::Path,
    pub(super) group: &'a str,
    pub(super) default_zone: Tz,
    pub(super) now: DateTime<Utc>,
}

/// Validates one job, reporting every problem.
pub(super) fn validate(name: &str, raw: RawJob, cx: &Context<'_>) -> Checked {
    let mut v = Validator { errors: Vec::new(), warnings: Vec::new() };
    for key in raw.unknown.keys() {
        let hint = did_you_mean(key, RawJob::KEYS)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        v.warn(key, format!("unknown key, ignored{hint}"));
    }

    // The schedule: the original formats the seven fields into one expression.
    let mut texts: Vec<String> = Vec::with_capacity(7);
    for field in Field::ALL {
        let value = match field {
            Field::Second => raw.sec.as_ref(),
            Field::Minute => raw.min.as_ref(),
            Field::Hour => raw.hour.as_ref(),
            Field::DayOfMonth => raw.dom.as_ref(),
            Field::Month => raw.mon.as_ref(),
            Field::DayOfWeek => raw.dow.as_ref(),
            Field::Year => raw.year.as_ref(),
        };
        let default = match field {
            Field::Second => Some("0"),
            Field::Year => Some("*"),
            _ => None,
        };
        match (value, default) {
            (None, Some(d)) => texts.push(d.to_owned()),
            (None, None) => v.err(field.key(), "is required (the original drops a job without it)"),
            (Some(Value::Number(n)), _) => texts.push(n.to_string()),
            (Some(Value::String(s)), _) => texts.push(s.clone()),
            (Some(other), _) => {
                v.err(field.key(), format!("{} is not a number or a cron field", show(other)))
            }
        }
    }
    let zone = zone(&raw, cx, &mut v);
    let schedule = match <[String; 7]>::try_from(texts) {
        Ok(texts) => match Cron::parse_all(texts.each_ref().map(String::as_str)) {
            Ok(cron) => zone.map(|z| Schedule::new(cron, z)),
            Err(errors) => {
                for e in errors {
                    v.err(e.field.key(), e.to_string());
                }
                None
            }
        },
        Err(_) => None,
    };
    if let Some(s) = &schedule
        && s.next_after(cx.now).is_none()
    {
        v.warn_job(format!(
            "never fires after {} (`{}`): it is loaded but never scheduled",
            cx.now.format("%Y-%m-%dT%H:%M:%SZ"),
            s.cron().as_str()
        ));
    }
    let restricted = |x: &Option<Value>| {
        x.as_ref().is_some_and(|x| !matches!(x, Value::String(s) if s == "*" || s == "?"))
    };
    if restricted(&raw.dom) && restricted(&raw.dow) {
        v.warn("dow", "dom and dow are both restricted: here (as in the original) a day must match both; crontab(5) fires when either matches");
    }

    let command = v.string_required(&raw.command, "command");
    let targets = v.string_required(&raw.targets, "targets");
    let target_type = match &raw.target_type {
        None => Some(TargetType::Glob),
        Some(Value::String(s)) => {
            let found = TargetType::ALL.into_iter().find(|t| t.as_str() == s);
            if found.is_none() {
                let names: Vec<&str> = TargetType::ALL.iter().map(|t| t.as_str()).collect();
                v.err("target_type", format!("{s:?} is not one of {}", names.join(", ")));
            }
            found
        }
        Some(other) => {
            v.err("target_type", format!("{} is not a string", show(other)));
            None
        }
    };

    let timeout_raw = match (&raw.timeout, &raw.hard_timeout) {
        (Some(t), _) if !t.is_null() => {
            if raw.hard_timeout.is_some() {
                v.warn("hard_timeout", "ignored: `timeout` is set (the original ignored it too)");
            }
            Some(("timeout", t))
        }
        (_, Some(h)) if !h.is_null() => {
            v.warn("hard_timeout", "used as the timeout because `timeout` is absent (the original ignored it since 2024); prefer `timeout`");
            Some(("hard_timeout", h))
        }
        _ => None,
    };
    let timeout = match timeout_raw {
        None => Some(DEFAULT_TIMEOUT),
        Some((key, value)) => {
            v.seconds(value, key).map(|d| (!d.is_zero()).then_some(d)).unwrap_or(None)
        }
    };
    let soft_timeout = raw.soft_timeout.as_ref().and_then(|s| {
        let d = v.seconds(s, "soft_timeout");
        v.warn("soft_timeout", "reports a run as running long past this; it does not kill it (the original ignored this key)");
        d
    });

    let allow_overlap = match &raw.allow_overlap {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::String(s)) if s == OVERLAP_MAGIC => true,
        Some(other) => {
            v.warn("allow_overlap", format!("{} is neither `true` nor the original's {OVERLAP_MAGIC:?}: overlap stays forbidden", show(other)));
            false
        }
    };

    let env = match &raw.env {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Mapping(m)) => {
            let mut env = BTreeMap::new();
            for (k, val) in m {
                match (scalar(k), scalar(val)) {
                    (Some(k), Some(val)) => {
                        env.insert(k, val);
                    }
                    _ => v.err(
                        "env",
                        format!("entry {}: {} is not a plain value", show(k), show(val)),
                    ),
                }
            }
            env
        }
        Some(other) => {
            v.err("env", format!("{} is not a map of variables", show(other)));
            BTreeMap::new()
        }
    };

    let group = v.string_opt(&raw.group, "group").unwrap_or_else(|| cx.group.to_owned());
    let job = Job {
        name: JobName::new(name),
        group,
        file: cx.file.to_path_buf(),
        schedule: schedule.clone().unwrap_or_else(|| Schedule::new(placeholder(), Tz::UTC)),
        command: command.clone().unwrap_or_default(),
        targets: targets.clone().unwrap_or_default(),
        target_type: target_type.unwrap_or(TargetType::Glob),
        number_of_targets: v.count(&raw.number_of_targets, "number_of_targets").filter(|n| *n > 0),
        batch_size: v.share(&raw.batch_size, "batch_size").filter(|b| *b != BatchSize::Count(0)),
        batch_wait: raw
            .batch_wait
            .as_ref()
            .and_then(|b| v.seconds(b, "batch_wait"))
            .unwrap_or_default(),
        max_failures: v.share(&raw.max_failures, "max_failures"),
        timeout,
        soft_timeout,
        user: v.string_opt(&raw.user, "user"),
        cwd: v.string_opt(&raw.cwd, "cwd"),
        env,
        allow_overlap,
        lockfile: v.string_opt(&raw.lockfile, "lockfile"),
        use_wrapper: v.boolean(&raw.use_wrapper, "use_wrapper").unwrap_or(true),
        wrapper_path: v.string_opt(&raw.wrapper_path, "wrapper_path"),
        wrapper_loglevel: v.choice(
            &raw.wrapper_loglevel,
            "wrapper_loglevel",
            &[
                ("normal", WrapperLogLevel::Normal),
                ("debug", WrapperLogLevel::Debug),
                ("off", WrapperLogLevel::Off),
            ],
        ),
        wrapper_logdir: v.string_opt(&raw.wrapper_logdir, "wrapper_logdir"),
        saltpeter_server_host: v.string_opt(&raw.saltpeter_server_host, "saltpeter_server_host"),
        description: v.string_opt(&raw.description, "description"),
        enabled: v.boolean(&raw.enabled, "enabled").unwrap_or(true),
        catch_up: v
            .choice(
                &raw.catch_up,
                "catch_up",
                &[("skip", CatchUp::Skip), ("latest", CatchUp::Latest), ("all", CatchUp::All)],
            )
            .unwrap_or_default(),
        catch_up_window: raw.catch_up_window.as_ref().and_then(|w| v.seconds(w, "catch_up_window")),
        dispatch: v.choice(
            &raw.dispatch,
            "dispatch",
            &[("coalesced", Dispatch::Coalesced), ("single", Dispatch::Single)],
        ),
        lead_time: raw.lead_time.as_ref().and_then(|l| v.seconds(l, "lead_time")),
        history_days: v.count(&raw.history_days, "history_days"),
        max_runs: v.count(&raw.max_runs, "max_runs"),
    };
    let ok = v.errors.is_empty() && schedule.is_some() && command.is_some() && targets.is_some();
    Checked { job: ok.then_some(job), errors: v.errors, warnings: v.warnings }
}

/// The job's time zone: `timezone`, else `utc: true` (UTC), else the global default.
fn zone(raw: &RawJob, cx: &Context<'_>, v: &mut Validator) -> Option<Tz> {
    let utc = v.boolean(&raw.utc, "utc");
    if utc == Some(false) {
        v.warn("utc", "`utc: false` has had no effect since 2023 (the original evaluates every schedule in UTC); the job stays in UTC unless `timezone` says otherwise");
    }
    match &raw.timezone {
        None | Some(Value::Null) => Some(if utc.is_some() { Tz::UTC } else { cx.default_zone }),
        Some(Value::String(s)) => match s.parse::<Tz>() {
            Ok(tz) if utc == Some(true) && tz != Tz::UTC => {
                v.err("timezone", format!("{s:?} contradicts `utc: true`; remove one of them"));
                None
            }
            Ok(tz) => Some(tz),
            Err(_) => {
                v.err(
                    "timezone",
                    format!("{s:?} is not an IANA time zone name (like Europe/Berlin or UTC)"),
                );
                None
            }
        },
        Some(other) => {
            v.err("timezone", format!("{} is not a time zone name", show(other)));
            None
        }
    }
}

fn placeholder() -> Cron {
    Cron::parse(["0", "0", "0", "1", "1", "*", "*"])
        .unwrap_or_else(|_| unreachable!("a valid expression"))
}

/// A YAML value as the user wrote it, for messages.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Collects problems while converting values; each conversion returns `None` on error.
pub(super) struct Validator {
    pub(super) errors: Vec<(Option<String>, String)>,
    pub(super) warnings: Vec<(Option<String>, String)>,
}

impl Validator {
    pub(super) fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push((Some(field.to_owned()), message.into()));
    }
    pub(super) fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push((Some(field.to_owned()), message.into()));
    }
    fn warn_job(&mut self, message: impl Into<String>) {
        self.warnings.push((None, message.into()));
    }

    fn string_required(&mut self, value: &Option<Value>, field: &str) -> Option<String> {
        if value.as_ref().is_none_or(Value::is_null) {
            self.err(field, "is required");
            return None;
        }
        self.string_opt(value, field)
    }

    pub(super) fn string_opt(&mut self, value: &Option<Value>, field: &str) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.err(field, format!("{} is not a string", show(other)));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, value: &Option<Value>, field: &str) -> Option<bool> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            // YAML 1.1 booleans, as the original's parser read them.
            Some(Value::String(s)) if matches!(s.to_lowercase().as_str(), "yes" | "y" | "on") => {
                Some(true)
            }
            Some(Value::String(s)) if matches!(s.to_lowercase().as_str(), "no" | "n" | "off") => {
                Some(false)
            }
            Some(other) => {
                self.err(field, format!("{} is not true or false", show(other)));
                None
            }
        }
    }

    /// A whole number of seconds or more (ints, floats and numeric strings).
    pub(super) fn seconds(&mut self, value: &Value, field: &str) -> Option<Duration> {
        let secs = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match secs {
            Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
            Some(_) => {
                self.err(field, format!("{} is negative; give seconds, 0 or more", show(value)));
                None
            }
            None => {
                self.err(field, format!("{} is not a number of seconds", show(value)));
                None
            }
        }
    }

    pub(super) fn count(&mut self, value: &Option<Value>, field: &str) -> Option<u32> {
        let value = value.as_ref().filter(|v| !v.is_null())?;
        let n = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(field, format!("{} is not a whole number, 0 or more", show(value)));
                None
            }
        }
    }

    /// A count, or a percentage written `"25%"`.
    fn share(&mut self, value: &Option<Value>, field: &str) -> Option<BatchSize> {
        if let Some(Value::String(s)) = value
            && let Some(p) = s.trim().strip_suffix('%')
        {
            return match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Some(BatchSize::Percent(p)),
                _ => {
                    self.err(field, format!("{s:?} is not a percentage from 1% to 100%"));
                    None
                }
            };
        }
        self.count(value, field).map(BatchSize::Count)
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        value: &Option<Value>,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let value = value.as_ref().filter(|v| !v.is_null())?;
        let found = match value {
            Value::String(s) => {
                options.iter().find(|(n, _)| *n == s.to_lowercase()).map(|(_, t)| *t)
            }
            _ => None,
        };
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.err(field, format!("{} is not one of {}", show(value), names.join(", ")));
        }
        found
    }
}
