//! Parsing one cron field the way the original's library (PyPI `crontab`, `_Matcher`) does.
//!
//! The checks run in the library's order, so an expression it rejects is rejected here too, and one
//! it accepts means the same set of values. Our messages say more than the library's (field, value
//! and why), but the accept/reject decision is the library's: the differential test in
//! `tests/tests/e2e/cron_differential.rs` holds us to it.

use std::fmt;

/// The seven fields of the original's expression, in its order `sec min hour dom mon dow year`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Second,
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
        Field::Year,
    ];

    /// The job key that holds this field.
    pub fn key(self) -> &'static str {
        match self {
            Field::Second => "sec",
            Field::Minute => "min",
            Field::Hour => "hour",
            Field::DayOfMonth => "dom",
            Field::Month => "mon",
            Field::DayOfWeek => "dow",
            Field::Year => "year",
        }
    }

    /// Smallest and largest value (the day of week's largest is 6; 7 is accepted as Sunday).
    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
            Field::Year => (1970, 2099),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of the month",
            Field::Month => "month",
            Field::DayOfWeek => "day of the week",
            Field::Year => "year",
        }
    }

    fn name_value(self, name: &str) -> Option<u32> {
        const MONTHS: [&str; 12] =
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let table: &[&str] = match self {
            Field::Month => &MONTHS,
            Field::DayOfWeek => &DAYS,
            _ => return None,
        };
        let at = table.iter().position(|n| *n == name)?;
        let offset = u32::from(self == Field::Month);
        u32::try_from(at).ok().map(|i| i + offset)
    }
}

impl fmt::Display for FieldError {
    /// The reason, and the whole value when the bad item is one of a list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.contains(',') {
            write!(f, "{} (in `{}`)", self.reason, self.value)
        } else {
            f.write_str(&self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Why a field was rejected. The `Display` text completes "`dow`: ..." in a job error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: Field,
    pub value: String,
    pub reason: String,
}

/// One comma-separated item of the day-of-month or day-of-week field that is not a plain set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Special {
    /// `L` in dom: the last day of the month.
    LastDay,
    /// `Z<n>` in dom: n days before the last day. The library *returns* on this item, so it
    /// decides the whole field on its own (see `Cron::dom_masks`).
    DaysBeforeLast(u32),
    /// `Z<a>-<b>` in dom: any of a..=b days before the last day.
    DaysBeforeLastRange(u32, u32),
    /// `L<d>` / `L<a>-<b>` in dow: those weekdays, in the last seven days of the month.
    LastWeekdays(u8),
}

/// A parsed field: a value set plus the special items in their written order.
#[derive(Clone, Debug, Default)]
pub(super) struct Parsed {
    /// `*` or `?` was one of the items.
    pub any: bool,
    /// Allowed values (years are stored as `year - 1970`).
    pub values: Bits,
    pub specials: Vec<Special>,
}

/// Parses one field's text (already known to have no whitespace).
pub(super) fn field(field: Field, text: &str) -> Result<Parsed, FieldError> {
    let lower = text.to_lowercase();
    let fail = |reason: String| FieldError { field, value: text.to_owned(), reason };
    if lower.is_empty() {
        return Err(fail("is empty".into()));
    }
    let mut parsed = Parsed::default();
    for item in lower.split(',') {
        parsed.any |= item == "*" || item == "?";
        item_into(field, item, &mut parsed).map_err(&fail)?;
    }
    Ok(parsed)
}

fn item_into(field: Field, item: &str, parsed: &mut Parsed) -> Result<(), String> {
    let (min, max) = field.bounds();
    if item == "*" || item == "?" {
        if item == "?" && !matches!(field, Field::DayOfMonth | Field::DayOfWeek) {
            return Err("`?` is only allowed in the dom and dow fields".into());
        }
        return Ok(());
    }
    if item == "l" {
        if field != Field::DayOfMonth {
            return Err("a bare `L` is only allowed in dom (in dow, write `L<day>`, like `L5` for the last Friday)".into());
        }
        parsed.specials.push(Special::LastDay);
        return Ok(());
    }
    if let Some(rest) = item.strip_prefix('z') {
        if field != Field::DayOfMonth {
            return Err(format!("`{item}`: `Z` is only allowed in dom"));
        }
        parsed.specials.push(days_before_last(rest).ok_or_else(|| {
            format!(
                "`{item}`: `Z` needs a day count 0-7 or an ascending range of them (`Z1`, `Z1-3`)"
            )
        })?);
        return Ok(());
    }
    if let Some(rest) = item.strip_prefix('l') {
        if field != Field::DayOfWeek {
            return Err(format!(
                "`{item}`: a leading `L` is only for dow (`L5` = last Friday); dom takes a bare `L`"
            ));
        }
        let days = last_weekdays(rest).ok_or_else(|| {
            format!("`{item}`: `L` needs a weekday number 0-7 or a range of them (`L5`, `L1-5`)")
        })?;
        parsed.specials.push(Special::LastWeekdays(days));
        return Ok(());
    }
    // The day of week accepts 7 (Sunday again) everywhere below.
    let limit = if field == Field::DayOfWeek { 7 } else { max };
    let (body, step) = match item.split_once('/') {
        None => (item, None),
        Some((body, step_text)) => {
            if step_text.contains('/') {
                return Err(format!("`{item}` has more than one `/`"));
            }
            let step = python_int(step_text)
                .ok_or_else(|| format!("`{item}`: the step `{step_text}` is not a number"))?;
            if step <= 0 {
                return Err(format!("`{item}`: the step must be positive"));
            }
            if step > i64::from(limit) {
                return Err(format!("`{item}`: the step {step} is larger than {limit}"));
            }
            (body, u32::try_from(step).ok())
        }
    };
    let value = |text: &str| -> Result<u32, String> {
        if let Some(v) = field.name_value(text) {
            return Ok(v);
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{text}` is neither a number nor a name"));
        }
        match text.parse::<u32>() {
            Ok(v) if (min..=limit).contains(&v) => Ok(v),
            _ => Err(format!("{text} is out of range {min}-{limit} ({})", field.describe())),
        }
    };
    let (start, end) = if body.contains('-') {
        let mut parts = body.split('-');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("`{body}` is a range with more than one `-`"));
        };
        let (start, mut end) = (value(a)?, value(b)?);
        // The library's special case that allows `sat-sun`: an end of 0 means 7.
        if matches!(field, Field::DayOfMonth | Field::DayOfWeek) && end == 0 {
            end = 7;
        }
        (start, end)
    } else if body == "*" {
        (min, max)
    } else {
        let start = value(body)?;
        match step {
            None => {
                set_value(field, parsed, start);
                return Ok(());
            }
            Some(_) => (start, max),
        }
    };
    if start > end {
        return Err(format!(
            "`{item}`: the range starts after it ends ({start} > {end}); ranges do not wrap around"
        ));
    }
    if let Some(step) = step
        && start + step > limit
    {
        return Err(format!(
            "`{item}`: the first step from {start} lands on {}, past {limit} (the original's library rejects this)",
            start + step
        ));
    }
    let mut v = start;
    while v <= end {
        set_value(field, parsed, v);
        v += step.unwrap_or(1);
    }
    Ok(())
}

fn set_value(field: Field, parsed: &mut Parsed, v: u32) {
    let v = match field {
        Field::DayOfWeek if v == 7 => 0,
        Field::Year => v - 1970,
        _ => v,
    };
    parsed.values.insert(v);
}

/// A set of small numbers (0-191): enough for 130 years.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Bits([u64; 3]);

impl Bits {
    pub(super) fn insert(&mut self, v: u32) {
        let (word, bit) = (usize::try_from(v / 64).unwrap_or(2).min(2), v % 64);
        self.0[word] |= 1 << bit;
    }
    pub(super) fn contains(&self, v: u32) -> bool {
        let word = usize::try_from(v / 64).unwrap_or(3);
        word < 3 && self.0[word] & (1 << (v % 64)) != 0
    }
    pub(super) fn range(lo: u32, hi: u32) -> Bits {
        let mut bits = Bits::default();
        (lo..=hi).for_each(|v| bits.insert(v));
        bits
    }
    /// The low 64 values as a mask.
    pub(super) fn low(&self) -> u64 {
        self.0[0]
    }
}

/// `Z` items: `Z<n>` (n in 0-7) or `Z<a>-<b>` (a 0-7, b 1-7, a <= b compared as the library
/// does: as strings).
fn days_before_last(rest: &str) -> Option<Special> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (a, sep, b) = match rest.split_once('-') {
        Some((a, b)) => (a, true, b),
        None => (rest, false, ""),
    };
    if !sep {
        let n = if digits(a) { a.parse::<u32>().ok()? } else { return None };
        return (n <= 7).then_some(Special::DaysBeforeLast(n));
    }
    if !(digits(a) && digits(b)) {
        return None;
    }
    let (na, nb) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
    (na <= 7 && (1..=7).contains(&nb) && a <= b).then_some(Special::DaysBeforeLastRange(na, nb))
}

/// `L` items of the dow field: the set of weekdays (bit 0 = Sunday) they name.
fn last_weekdays(rest: &str) -> Option<u8> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let bit = |d: u32| 1u8 << (d % 7);
    match rest.split_once('-') {
        None => {
            let d = if digits(rest) { rest.parse::<u32>().ok()? } else { return None };
            (d <= 7).then(|| bit(d))
        }
        Some((a, b)) => {
            if !(digits(a) && digits(b)) {
                return None;
            }
            let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
            if a > 7 || b > 7 {
                return None;
            }
            // An inverted range is accepted and matches nothing, as in the library.
            Some((a..=b).fold(0, |set, d| set | bit(d)))
        }
    }
}

/// Python's `int(text, 10)`: optional sign, ASCII digits with single `_` between digits.
fn python_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let n: i64 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -n } else { n })
}
