//! Targets: an expression and Salt's `tgt_type`, and nodegroups expanded the way Salt's CLI does
//! (minions cannot resolve nodegroups, so they are sent as compound expressions).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Salt's `tgt_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetType {
    Glob,
    Pcre,
    List,
    Grain,
    GrainPcre,
    Pillar,
    PillarPcre,
    PillarExact,
    Nodegroup,
    Range,
    Compound,
    Ipcidr,
}

impl TargetType {
    /// Every `tgt_type`, in the order Salt's documentation lists them.
    pub const ALL: [TargetType; 12] = [
        Self::Glob,
        Self::Pcre,
        Self::List,
        Self::Grain,
        Self::GrainPcre,
        Self::Pillar,
        Self::PillarPcre,
        Self::PillarExact,
        Self::Nodegroup,
        Self::Range,
        Self::Compound,
        Self::Ipcidr,
    ];

    /// The name on the wire and in Saltpeter's job files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Glob => "glob",
            Self::Pcre => "pcre",
            Self::List => "list",
            Self::Grain => "grain",
            Self::GrainPcre => "grain_pcre",
            Self::Pillar => "pillar",
            Self::PillarPcre => "pillar_pcre",
            Self::PillarExact => "pillar_exact",
            Self::Nodegroup => "nodegroup",
            Self::Range => "range",
            Self::Compound => "compound",
            Self::Ipcidr => "ipcidr",
        }
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `tgt_type`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown target type {0:?} (expected glob, pcre, list, grain, grain_pcre, pillar, \
     pillar_pcre, pillar_exact, nodegroup, range, compound or ipcidr)"
)]
pub struct UnknownTargetType(pub String);

impl FromStr for TargetType {
    type Err = UnknownTargetType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "glob" => Self::Glob,
            "pcre" => Self::Pcre,
            "list" => Self::List,
            "grain" => Self::Grain,
            "grain_pcre" => Self::GrainPcre,
            "pillar" => Self::Pillar,
            "pillar_pcre" => Self::PillarPcre,
            "pillar_exact" => Self::PillarExact,
            "nodegroup" => Self::Nodegroup,
            "range" => Self::Range,
            "compound" => Self::Compound,
            "ipcidr" => Self::Ipcidr,
            other => return Err(UnknownTargetType(other.to_owned())),
        })
    }
}

/// What a job is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub expr: String,
    pub kind: TargetType,
}

impl Target {
    pub fn new(expr: impl Into<String>, kind: TargetType) -> Self {
        Self { expr: expr.into(), kind }
    }
    pub fn glob(expr: impl Into<String>) -> Self {
        Self::new(expr, TargetType::Glob)
    }
    /// A list target from minion ids.
    pub fn list<I: IntoIterator<Item = S>, S: AsRef<str>>(ids: I) -> Self {
        let ids: Vec<String> = ids.into_iter().map(|s| s.as_ref().to_owned()).collect();
        Self::new(ids.join(","), TargetType::List)
    }
}

/// A nodegroup definition from the master config: a compound string or a list of words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodegroup(Vec<String>);

impl Nodegroup {
    pub(crate) fn from_yaml(v: &serde_yaml::Value) -> Option<Self> {
        match v {
            serde_yaml::Value::String(s) => {
                Some(Self(s.split_whitespace().map(str::to_owned).collect()))
            }
            serde_yaml::Value::Sequence(items) => Some(Self(
                items
                    .iter()
                    .filter_map(|i| match i {
                        serde_yaml::Value::String(s) => Some(s.clone()),
                        serde_yaml::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// A nodegroup could not be expanded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodegroupError {
    #[error("unknown nodegroup `{0}` (not in the master config's `nodegroups`)")]
    Unknown(String),
    #[error("nodegroup `{0}` includes itself")]
    Cycle(String),
}

const OPERATORS: [&str; 5] = ["and", "or", "not", "(", ")"];

/// Expands nodegroup `name` into a compound expression, as Salt's `nodegroup_comp` does:
/// nested `N@` groups are expanded in parentheses, and a plain word list becomes `L@a,b`
/// (or `E@...` when the words look like regular expressions).
pub fn expand_nodegroup(
    name: &str,
    groups: &BTreeMap<String, Nodegroup>,
) -> Result<String, NodegroupError> {
    let words = expand_words(name, groups, &mut BTreeSet::new())?;
    Ok(words.join(" "))
}

fn expand_words(
    name: &str,
    groups: &BTreeMap<String, Nodegroup>,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<String>, NodegroupError> {
    if !seen.insert(name.to_owned()) {
        return Err(NodegroupError::Cycle(name.to_owned()));
    }
    let words = &groups.get(name).ok_or_else(|| NodegroupError::Unknown(name.to_owned()))?.0;
    let plain =
        words.iter().all(|w| !OPERATORS.contains(&w.as_str()) && !w.contains('*') && !is_engine(w));
    let mut out = Vec::new();
    if plain && !words.is_empty() {
        let regex = words.iter().any(|w| w.contains(['(', '[', '{', '\\', '?', '}', ']', ')']));
        out.push(format!("{}@{}", if regex { "E" } else { "L" }, words.join(",")));
    } else {
        for w in words {
            match w.strip_prefix("N@") {
                Some(inner) if !inner.is_empty() => {
                    out.push("(".to_owned());
                    out.extend(expand_words(inner, groups, seen)?);
                    out.push(")".to_owned());
                }
                _ => out.push(w.clone()),
            }
        }
    }
    seen.remove(name);
    Ok(out)
}

fn is_engine(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 2 && b[0].is_ascii_uppercase() && b[1] == b'@'
}

/// Expands every `N@group` word of a compound expression.
pub fn expand_compound(
    expr: &str,
    groups: &BTreeMap<String, Nodegroup>,
) -> Result<String, NodegroupError> {
    if !expr.contains("N@") {
        return Ok(expr.to_owned());
    }
    let mut out = Vec::new();
    for word in expr.split_whitespace() {
        match word.strip_prefix("N@") {
            Some(name) => {
                out.push("(".to_owned());
                out.extend(expand_words(name, groups, &mut BTreeSet::new())?);
                out.push(")".to_owned());
            }
            None => out.push(word.to_owned()),
        }
    }
    Ok(out.join(" "))
}
