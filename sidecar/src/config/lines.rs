//! Where in a file a job and its keys are written, so diagnostics can name the YAML line.
//!
//! `serde_yaml` gives positions only for syntax errors, not for values inside a `Value` tree, so
//! this reads the block-style layout job files use: a job name at column 0, its keys indented
//! below. Anything it cannot place (flow style, anchors) just gets no line number.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct Lines {
    /// Job → (its line, key → (line, the value as written on that line)).
    jobs: HashMap<String, (usize, Fields)>,
}

type Fields = HashMap<String, (usize, String)>;

impl Lines {
    pub(super) fn index(text: &str) -> Lines {
        let mut jobs: HashMap<String, (usize, Fields)> = HashMap::new();
        let mut current: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let number = n + 1;
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some(key) = key_of(trimmed) else { continue };
            if trimmed.len() == line.len() {
                current = Some(key.clone());
                jobs.entry(key).or_insert((number, HashMap::new()));
            } else if let Some(job) = &current
                && let Some((_, fields)) = jobs.get_mut(job)
            {
                let value = trimmed.split_once(':').map_or("", |(_, v)| v);
                let value = value.split(" #").next().unwrap_or("").trim().to_owned();
                fields.entry(key).or_insert((number, value));
            }
        }
        Lines { jobs }
    }

    pub(super) fn job(&self, job: &str) -> Option<usize> {
        self.jobs.get(job).map(|(line, _)| *line)
    }

    /// The line of `field` inside `job`, else the job's own line.
    pub(super) fn field(&self, job: &str, field: &str) -> Option<usize> {
        let (line, fields) = self.jobs.get(job)?;
        Some(fields.get(field).map_or(*line, |(l, _)| *l))
    }

    /// The value of `field` in `job` exactly as written (quotes included), if on the key's line.
    pub(super) fn written(&self, job: &str, field: &str) -> Option<&str> {
        self.jobs.get(job)?.1.get(field).map(|(_, v)| v.as_str())
    }
}

/// The key of a `key: value` line, unquoted.
fn key_of(line: &str) -> Option<String> {
    let (key, _) = line.split_once(':')?;
    let key = key.trim();
    let unquoted = key
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
        .unwrap_or(key);
    (!unquoted.is_empty() && !unquoted.starts_with('-')).then(|| unquoted.to_owned())
}

/// A file's `Lines`, indexed only when a diagnostic needs a line number (most loads need none).
pub(super) struct LazyLines<'a> {
    text: Option<&'a str>,
    cell: std::cell::OnceCell<Lines>,
}

impl<'a> LazyLines<'a> {
    pub(super) fn new(text: Option<&'a str>) -> Self {
        LazyLines { text, cell: std::cell::OnceCell::new() }
    }

    pub(super) fn get(&self) -> &Lines {
        self.cell.get_or_init(|| self.text.map(Lines::index).unwrap_or_default())
    }
}
