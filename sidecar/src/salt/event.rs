//! Events of the master bus as types: the tags Saltpeter acts on get a struct each, every other
//! tag arrives as [`EventKind::Other`] with its data still packed.
//!
//! Decoding is lazy where it pays: the typed fields are read by walking the packed data once, and
//! free-form values (a job's `return`, its `fun_args`) stay as [`Packed`] bytes, shared with the
//! read buffer, until a consumer asks for them. A 100 KB `cmd.run` output is never copied by the
//! reader. Text fields (tag, jid, minion id, function, ...) are [`Text`] over the same buffer, so
//! decoding an event allocates nothing.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::frame::split_body;
use super::msgpack::{WalkError, Walker};
use super::text::Text;
use super::value::decode_value;

/// A Salt job id: a 20-digit UTC timestamp string (`YYYYmmddHHMMSSffffff`), possibly with a
/// `_<pid>` suffix. Not a number: it does not fit in a u64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Jid(Text);

impl Jid {
    /// Wraps a jid as received.
    pub fn new(jid: impl Into<String>) -> Self {
        Self(Text::from(jid.into()))
    }
    /// A fresh jid in Salt's format, from the current UTC time.
    pub fn generate() -> Self {
        Self::new(Utc::now().format("%Y%m%d%H%M%S%6f").to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A minion id, as the master knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinionId(Text);

impl MinionId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(Text::from(id.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MinionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MinionId {
    fn from(s: &str) -> Self {
        Self(Text::from(s))
    }
}

/// A MessagePack value kept in its packed form, decoded on demand.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Bytes);

impl Packed {
    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Decodes the value. Invalid UTF-8 in a str is kept as bytes, ext types stay `Ext`
    /// (78 is Salt's datetime, 79 its constants), so this fails only on broken MessagePack.
    pub fn decode(&self) -> Result<rmpv::Value, rmpv::decode::Error> {
        decode_value(&self.0)
    }
    /// The value as text, if it is a str or bin (no copy when the bytes are valid UTF-8).
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        let mut walker = Walker::new(&self.0);
        walker.opt_text().ok().flatten()
    }
    /// True when Salt replaced the value because the event was over `max_event_size`.
    pub fn is_trimmed(&self) -> bool {
        self.as_text().is_some_and(|t| t == "VALUE_TRIMMED")
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decode() {
            Ok(v) => write!(f, "{v}"),
            Err(_) => write!(f, "<{} bad bytes>", self.0.len()),
        }
    }
}

/// One event from the master bus.
#[derive(Debug, Clone)]
pub struct Event {
    /// The tag, e.g. `salt/job/20261122190935152817/ret/minion-1`.
    pub tag: Text,
    /// When the master fired it (`_stamp`), if present and parseable.
    pub stamp: Option<DateTime<Utc>>,
    /// The typed view of the tags we use.
    pub kind: EventKind,
    /// The whole data map, packed.
    pub data: Packed,
}

/// What an event is, for the tags Saltpeter uses.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// `salt/job/<jid>/new`: a job was published.
    JobNew(JobNew),
    /// `salt/job/<jid>/ret/<minion>`: a minion returned.
    JobReturn(JobReturn),
    /// `salt/run/<jid>/ret`: a runner finished.
    RunReturn(RunReturn),
    /// `salt/auth`: a minion authenticated (or tried to).
    Auth(Auth),
    /// `minion_start` or `salt/minion/<id>/start`.
    MinionStart { id: MinionId },
    /// `salt/presence/present` (`present`) or `salt/presence/change` (`new`, `lost`).
    Presence(Presence),
    /// Any other tag; read [`Event::data`].
    Other,
}

/// `salt/job/<jid>/new`.
#[derive(Debug, Clone)]
pub struct JobNew {
    pub jid: Jid,
    pub fun: Text,
    pub tgt_type: Text,
    /// The target as sent: a string, or a list for `tgt_type: list`.
    pub tgt: Packed,
    pub arg: Packed,
    pub minions: Vec<MinionId>,
    pub missing: Vec<MinionId>,
    pub user: Option<Text>,
}

/// `salt/job/<jid>/ret/<minion>`.
#[derive(Debug, Clone)]
pub struct JobReturn {
    pub jid: Jid,
    pub id: MinionId,
    pub fun: Text,
    /// The function's return, free-form; `"VALUE_TRIMMED"` when the event was too large.
    pub ret: Packed,
    pub retcode: Option<i64>,
    pub success: Option<bool>,
    /// The outputter hint (`nested` on errors, `highstate` for states).
    pub out: Option<Text>,
    pub fun_args: Option<Packed>,
}

impl JobReturn {
    /// Salt's notion of a failed return: `success: false`, or a non-zero `retcode`.
    pub fn failed(&self) -> bool {
        self.success == Some(false) || self.retcode.is_some_and(|c| c != 0)
    }
}

/// `salt/run/<jid>/ret`.
#[derive(Debug, Clone)]
pub struct RunReturn {
    pub jid: Jid,
    /// `runner.<name>`.
    pub fun: Text,
    pub ret: Packed,
    pub success: Option<bool>,
    pub retcode: Option<i64>,
}

/// `salt/auth`.
#[derive(Debug, Clone)]
pub struct Auth {
    pub id: MinionId,
    /// `accept`, `pend`, `reject`, `denied`, `full`.
    pub act: Text,
    pub result: Option<bool>,
}

/// `salt/presence/*`.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    pub present: Vec<MinionId>,
    pub new: Vec<MinionId>,
    pub lost: Vec<MinionId>,
}

/// Why an event body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event body has no tag end")]
    NoTagEnd,
    #[error("event `{tag}` has an empty or non-map data: {reason}")]
    BadData { tag: String, reason: &'static str },
}

/// Field values of one data map, read in one pass; text borrows from the data.
#[derive(Default)]
struct Fields {
    jid: Option<Text>,
    id: Option<Text>,
    fun: Option<Text>,
    tgt_type: Option<Text>,
    tgt: Option<Bytes>,
    arg: Option<Bytes>,
    fun_args: Option<Bytes>,
    ret: Option<Bytes>,
    retcode: Option<i64>,
    success: Option<bool>,
    result: Option<bool>,
    out: Option<Text>,
    user: Option<Text>,
    act: Option<Text>,
    stamp: Option<DateTime<Utc>>,
    minions: Vec<MinionId>,
    missing: Vec<MinionId>,
    present: Vec<MinionId>,
    new: Vec<MinionId>,
    lost: Vec<MinionId>,
}

/// A str or bin value as [`Text`] over `data` (no copy), or `None` (skipped) for anything else.
fn opt_text(w: &mut Walker<'_>, data: &Bytes) -> Result<Option<Text>, WalkError> {
    match w.peek()? {
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            let len = w.raw()?.len();
            let end = w.position();
            Ok(Some(Text::from_utf8_bytes(data.slice(end - len..end))))
        }
        _ => w.skip().map(|()| None),
    }
}

/// An array of strings as minion ids; non-strings are skipped, a non-array reads empty.
fn id_list(w: &mut Walker<'_>, data: &Bytes) -> Result<Vec<MinionId>, WalkError> {
    if !matches!(w.peek()?, 0x90..=0x9f | 0xdc | 0xdd) {
        w.skip()?;
        return Ok(Vec::new());
    }
    let n = w.array_len()?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        if let Some(s) = opt_text(w, data)? {
            out.push(MinionId(s));
        }
    }
    Ok(out)
}

fn read_fields(data: &Bytes) -> Result<Fields, WalkError> {
    let mut w = Walker::new(data);
    let mut f = Fields::default();
    let entries = w.map_len()?;
    for _ in 0..entries {
        let key = match w.peek()? {
            0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => w.raw()?,
            _ => {
                w.skip()?;
                w.skip()?;
                continue;
            }
        };
        let start = w.position();
        match key {
            b"jid" => f.jid = opt_text(&mut w, data)?,
            b"id" => f.id = opt_text(&mut w, data)?,
            b"fun" => f.fun = opt_text(&mut w, data)?,
            b"tgt_type" => f.tgt_type = opt_text(&mut w, data)?,
            b"out" => f.out = opt_text(&mut w, data)?,
            b"user" => f.user = opt_text(&mut w, data)?,
            b"act" => f.act = opt_text(&mut w, data)?,
            b"_stamp" => f.stamp = w.opt_text()?.as_deref().and_then(parse_stamp),
            b"retcode" => f.retcode = w.opt_int()?,
            b"success" => f.success = w.opt_bool()?,
            b"result" => f.result = w.opt_bool()?,
            b"minions" => f.minions = id_list(&mut w, data)?,
            b"missing" => f.missing = id_list(&mut w, data)?,
            b"present" => f.present = id_list(&mut w, data)?,
            b"new" => f.new = id_list(&mut w, data)?,
            b"lost" => f.lost = id_list(&mut w, data)?,
            b"tgt" | b"arg" | b"fun_args" | b"return" => {
                w.skip()?;
                let packed = data.slice(start..w.position());
                match key {
                    b"tgt" => f.tgt = Some(packed),
                    b"arg" => f.arg = Some(packed),
                    b"fun_args" => f.fun_args = Some(packed),
                    _ => f.ret = Some(packed),
                }
            }
            _ => w.skip()?,
        }
    }
    Ok(f)
}

/// `nil`, packed: the stand-in for a missing free-form field.
fn nil() -> Bytes {
    Bytes::from_static(&[0xc0])
}

/// Parses `_stamp`: `2026-11-22T18:47:29.535071` (3006/3007, naive UTC) or with `+00:00` (3008).
/// The fixed layout is read by hand (this runs for every event); anything else goes to chrono.
pub(crate) fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    fast_stamp(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
        })
    })
}

fn fast_stamp(b: &[u8]) -> Option<DateTime<Utc>> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?
            .iter()
            .try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let tail = b.get(26..).unwrap_or_default();
    let layout_ok = b.len() >= 26
        && (b[4], b[7], b[10], b[13], b[16], b[19]) == (b'-', b'-', b'T', b':', b':', b'.')
        && (tail.is_empty() || tail == b"+00:00" || tail == b"Z");
    if !layout_ok {
        return None;
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let time = chrono::NaiveTime::from_hms_micro_opt(
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
        num(20..26)?,
    )?;
    Some(date.and_time(time).and_utc())
}

impl Event {
    /// Decodes a frame body: `tag "\n\n" msgpack(data)`. `body` is shared, not copied.
    pub fn from_body(mut body: Bytes) -> Result<Self, EventError> {
        let (tag, data_at) = split_body(&body).ok_or(EventError::NoTagEnd)?;
        let tag_len = tag.len();
        let data = body.split_off(data_at);
        body.truncate(tag_len);
        let tag = Text::from_utf8_bytes(body);
        let f = match read_fields(&data) {
            Ok(f) => f,
            Err(WalkError::Incomplete) => {
                return Err(EventError::BadData { tag: tag.into(), reason: "truncated data" });
            }
            Err(WalkError::Malformed(reason)) => {
                return Err(EventError::BadData { tag: tag.into(), reason });
            }
        };
        let stamp = f.stamp;
        let kind = classify(&tag, f);
        Ok(Self { tag, stamp, kind, data: Packed(data) })
    }

    /// Decodes the whole data map (see [`Packed::decode`]).
    pub fn decode_data(&self) -> Result<rmpv::Value, rmpv::decode::Error> {
        self.data.decode()
    }
}

/// The tags we type, recognised without allocating.
enum Shape<'t> {
    JobNew(&'t str),
    JobReturn(&'t str, &'t str),
    RunReturn(&'t str),
    Auth,
    MinionStart,
    Presence,
    Other,
}

fn shape(tag: &str) -> Shape<'_> {
    if let Some(rest) = tag.strip_prefix("salt/job/") {
        let (jid, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if rest == "new" {
            return Shape::JobNew(jid);
        }
        // A minion id may contain `/`: everything after `ret/` is the id.
        if let Some(id) = rest.strip_prefix("ret/").filter(|id| !id.is_empty()) {
            return Shape::JobReturn(jid, id);
        }
        return Shape::Other;
    }
    if let Some(rest) = tag.strip_prefix("salt/run/") {
        return match rest.split_once('/') {
            Some((jid, "ret")) => Shape::RunReturn(jid),
            _ => Shape::Other,
        };
    }
    if tag == "salt/auth" {
        return Shape::Auth;
    }
    if tag == "minion_start"
        || tag.strip_prefix("salt/minion/").is_some_and(|r| r.ends_with("/start") && r.len() > 6)
    {
        return Shape::MinionStart;
    }
    if tag == "salt/presence/present" || tag == "salt/presence/change" {
        return Shape::Presence;
    }
    Shape::Other
}

fn classify(tag: &Text, f: Fields) -> EventKind {
    // A field missing from the data falls back to the part of the tag that names it.
    let jid =
        |from_tag: &str, field: Option<Text>| Jid(field.unwrap_or_else(|| tag.slice_ref(from_tag)));
    match shape(tag) {
        Shape::JobNew(j) => EventKind::JobNew(JobNew {
            jid: jid(j, f.jid),
            fun: f.fun.unwrap_or_default(),
            tgt_type: f.tgt_type.unwrap_or_else(|| Text::from("glob")),
            tgt: Packed(f.tgt.unwrap_or_else(nil)),
            arg: Packed(f.arg.unwrap_or_else(nil)),
            minions: f.minions,
            missing: f.missing,
            user: f.user,
        }),
        Shape::JobReturn(j, id) => EventKind::JobReturn(JobReturn {
            jid: jid(j, f.jid),
            id: MinionId(f.id.unwrap_or_else(|| tag.slice_ref(id))),
            fun: f.fun.unwrap_or_default(),
            ret: Packed(f.ret.unwrap_or_else(nil)),
            retcode: f.retcode,
            success: f.success,
            out: f.out,
            fun_args: f.fun_args.map(Packed),
        }),
        Shape::RunReturn(j) => EventKind::RunReturn(RunReturn {
            jid: jid(j, f.jid),
            fun: f.fun.unwrap_or_default(),
            ret: Packed(f.ret.unwrap_or_else(nil)),
            success: f.success,
            retcode: f.retcode,
        }),
        Shape::Auth => match f.id {
            Some(id) => EventKind::Auth(Auth {
                id: MinionId(id),
                act: f.act.unwrap_or_default(),
                result: f.result,
            }),
            None => EventKind::Other,
        },
        Shape::MinionStart => match f.id {
            Some(id) => EventKind::MinionStart { id: MinionId(id) },
            None => EventKind::Other,
        },
        Shape::Presence => {
            EventKind::Presence(Presence { present: f.present, new: f.new, lost: f.lost })
        }
        Shape::Other => EventKind::Other,
    }
}
