//! `saltpeter import-crontab [FILE|-]`: converts a system or user crontab into job YAML.
//!
//! `@daily`-style macros become fields; `VAR=value` lines become each later job's `env`; the user
//! column of a system crontab (`/etc/crontab`, `/etc/cron.d/*`, or `--system`) becomes `user`;
//! `%` works as in crontab(5) (the first unescaped `%` starts the command's standard input, later
//! ones are newlines, `\%` is a literal `%`). crontab(5) fires when dom OR dow matches if both are
//! restricted (neither starts with `*`), while Saltpeter requires both: such a line becomes two
//! jobs, one on the dom days, one on the dow days among the other days of the month, so the
//! converted schedule means what the crontab meant and a day matching both fires once.
#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_yaml::{Mapping, Value};

use crate::schedule::Cron;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crontab to convert; `-` (default) reads standard input.
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// The Salt target of every job (crontabs have none).
    #[arg(long)]
    pub targets: String,
    /// The Salt target type.
    #[arg(long, default_value = "glob")]
    pub target_type: String,
    /// The file has a user column (default: yes for /etc/crontab and /etc/cron.d/*).
    #[arg(long)]
    pub system: bool,
    /// Prefix of the generated job names (default: the file's name, or `crontab`).
    #[arg(long)]
    pub prefix: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let stdin = args.file.as_os_str() == "-";
    let text = if stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        fs_err::read_to_string(&args.file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("saltpeter import-crontab: {e}");
            return ExitCode::from(66);
        }
    };
    let system = args.system
        || args.file.starts_with("/etc/crontab")
        || args.file.starts_with("/etc/cron.d");
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        if stdin {
            "crontab".into()
        } else {
            args.file
                .file_stem()
                .map_or("crontab".into(), |s| s.to_string_lossy().replace('.', "_"))
        }
    });
    let (jobs, problems) = convert(&text, system, &prefix, &args.targets, &args.target_type);
    for p in &problems {
        eprintln!("saltpeter import-crontab: {p}");
    }
    match serde_yaml::to_string(&jobs) {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("saltpeter import-crontab: {e}");
            return ExitCode::FAILURE;
        }
    }
    if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Converts crontab text into a map of job name to job; also returns the lines it could not take.
pub fn convert(
    text: &str,
    system: bool,
    prefix: &str,
    targets: &str,
    target_type: &str,
) -> (Mapping, Vec<String>) {
    let (mut jobs, mut problems, mut env) = (Mapping::new(), Vec::new(), Mapping::new());
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = env_assignment(line) {
            env.insert(name.into(), unquote(value).into());
            continue;
        }
        let (fields, rest) = match schedule_of(line) {
            Ok(x) => x,
            Err(why) => {
                problems.push(format!("line {number}: {why}: {line}"));
                continue;
            }
        };
        let (user, command) = if system {
            match rest.split_once(char::is_whitespace) {
                Some((user, command)) => (Some(user.to_owned()), command.trim_start().to_owned()),
                None => {
                    problems.push(format!(
                        "line {number}: no user and command after the schedule: {line}"
                    ));
                    continue;
                }
            }
        } else {
            (None, rest.to_owned())
        };
        let command = percent(&command);
        let [min, hour, dom, mon, dow] = fields;
        // cron(8) uses OR only when neither field starts with `*` (`*/2` keeps AND).
        let both = !dom.starts_with('*') && !dow.starts_with('*');
        let variants: Vec<(String, [String; 5])> = if both {
            // The second job takes the other days of the month, so a day matching both fields
            // (a Friday the 13th for `13` and `fri`) fires once, as in crontab(5).
            let Some(other_days) = complement_days(&dom) else {
                problems.push(format!(
                    "line {number}: cannot split dom `{dom}` from dow `{dow}`: {line}"
                ));
                continue;
            };
            vec![
                (
                    format!("{prefix}_{number}_dom"),
                    [min.clone(), hour.clone(), dom.clone(), mon.clone(), "*".into()],
                ),
                (format!("{prefix}_{number}_dow"), [min, hour, other_days, mon, dow]),
            ]
        } else {
            vec![(format!("{prefix}_{number}"), [min, hour, dom, mon, dow])]
        };
        for (name, [min, hour, dom, mon, dow]) in variants {
            if let Err(e) = Cron::parse(["0", &min, &hour, &dom, &mon, &dow, "*"]) {
                problems.push(format!("line {number}: `{}`: {e}", e.field));
                continue;
            }
            let mut job = Mapping::new();
            let mut put = |k: &str, v: Value| {
                job.insert(k.into(), v);
            };
            put("sec", Value::from(0));
            put("min", min.into());
            put("hour", hour.into());
            put("dom", dom.into());
            put("mon", mon.into());
            put("dow", dow.into());
            put("command", command.clone().into());
            put("targets", targets.into());
            put("target_type", target_type.into());
            if let Some(user) = &user {
                put("user", user.clone().into());
            }
            if !env.is_empty() {
                put("env", Value::Mapping(env.clone()));
            }
            put("description", format!("imported from crontab line {number}: {line}").into());
            jobs.insert(name.into(), Value::Mapping(job));
        }
    }
    (jobs, problems)
}

/// The days 1-31 that a crontab(5) dom field does not name, as a list of ranges; `None` if the
/// field names every day or is not plain crontab(5) syntax.
fn complement_days(dom: &str) -> Option<String> {
    let mut named = [false; 32];
    for item in dom.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().ok().filter(|s| *s > 0)?),
            None => (item, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            _ if range == "*" => (1, 31),
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let a = range.parse::<usize>().ok()?;
                (a, if step > 1 { 31 } else { a })
            }
        };
        if lo < 1 || hi > 31 || lo > hi {
            return None;
        }
        (lo..=hi).step_by(step).for_each(|d| named[d] = true);
    }
    let mut parts = Vec::new();
    let mut d = 1;
    while d <= 31 {
        if named[d] {
            d += 1;
            continue;
        }
        let start = d;
        while d < 31 && !named[d + 1] {
            d += 1;
        }
        parts.push(if start == d { start.to_string() } else { format!("{start}-{d}") });
        d += 1;
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

fn env_assignment(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once('=')?;
    let name = name.trim();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (valid && !name.starts_with(|c: char| c.is_ascii_digit())).then(|| (name, value.trim()))
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// The five schedule fields (macros expanded) and the rest of the line.
fn schedule_of(line: &str) -> Result<([String; 5], &str), String> {
    if let Some(mac) = line.strip_prefix('@') {
        let (name, rest) = mac.split_once(char::is_whitespace).unwrap_or((mac, ""));
        let fields = match name {
            "yearly" | "annually" => ["0", "0", "1", "1", "*"],
            "monthly" => ["0", "0", "1", "*", "*"],
            "weekly" => ["0", "0", "*", "*", "0"],
            "daily" | "midnight" => ["0", "0", "*", "*", "*"],
            "hourly" => ["0", "*", "*", "*", "*"],
            "reboot" => return Err("@reboot has no equivalent in a cron scheduler".into()),
            other => return Err(format!("unknown macro @{other}")),
        };
        return Ok((fields.map(str::to_owned), rest.trim_start()));
    }
    let mut rest = line;
    let mut fields: Vec<String> = Vec::with_capacity(5);
    for _ in 0..5 {
        let (field, tail) = rest
            .split_once(char::is_whitespace)
            .ok_or("fewer than five schedule fields and a command")?;
        fields.push(field.to_owned());
        rest = tail.trim_start();
    }
    let fields: [String; 5] =
        fields.try_into().map_err(|_| "fewer than five fields".to_string())?;
    Ok((fields, rest))
}

/// crontab(5)'s `%`: the first unescaped one starts standard input, later ones are newlines.
fn percent(command: &str) -> String {
    let (mut cmd, mut input, mut in_input) = (String::new(), String::new(), false);
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                chars.next();
                if in_input { input.push('%') } else { cmd.push('%') }
            }
            '%' if !in_input => in_input = true,
            '%' => input.push('\n'),
            c if in_input => input.push(c),
            c => cmd.push(c),
        }
    }
    if !in_input {
        return cmd;
    }
    format!("{} <<'SALTPETER_STDIN'\n{input}\nSALTPETER_STDIN", cmd.trim_end())
}

#[cfg(test)]
mod tests;
