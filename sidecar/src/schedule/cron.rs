//! The seven-field expression as bit sets, and the search for the next matching wall-clock time.
//!
//! The search works field by field with carries (year, month, then a whole month's matching days
//! as one bit mask, then hour, minute, second), so a schedule that never fires again is known to be
//! impossible after at most 130 years × 12 months of cheap mask operations, never by scanning.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::parse::{self, Bits, Field, FieldError, Special};

/// The last year the original's library accepts; nothing fires after it.
pub const LAST_YEAR: i32 = 2099;
const FIRST_YEAR: i32 = 1970;
const YEAR_SPAN: u32 = 129;

/// A parsed cron expression with the original's semantics, evaluated on wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Allowed days of the month, one mask per month length (28, 29, 30, 31 days): `L` and `Z`
    /// depend on the month's length.
    dom: [u32; 4],
    /// Bit m (1-12).
    months: u16,
    /// Weekdays (bit 0 = Sunday) allowed on any day, and those allowed only in the month's last
    /// seven days (`L<d>`).
    dow_any_day: u8,
    dow_last_week: u8,
    /// Allowed years, as `year - 1970`.
    years: Bits,
    /// The expression as written, for display.
    text: String,
}

impl Cron {
    /// Parses the seven fields in the original's order: sec, min, hour, dom, mon, dow, year.
    pub fn parse(fields: [&str; 7]) -> Result<Cron, FieldError> {
        Cron::parse_all(fields).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like `parse`, but reports every bad field (never an empty list).
    pub fn parse_all(fields: [&str; 7]) -> Result<Cron, Vec<FieldError>> {
        let mut parsed = Vec::with_capacity(7);
        let mut errors = Vec::new();
        for (field, text) in Field::ALL.into_iter().zip(fields) {
            if text.chars().any(char::is_whitespace) || text.is_empty() {
                errors.push(FieldError {
                    field,
                    value: text.to_owned(),
                    reason: format!("`{text}` must be one non-empty word without spaces"),
                });
                continue;
            }
            match parse::field(field, text) {
                Ok(p) => parsed.push(p),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let full = |p: &parse::Parsed, lo: u32, hi: u32| -> Bits {
            if p.any { Bits::range(lo, hi) } else { p.values }
        };
        let [sec, min, hour, dom, mon, dow, year] = parsed.as_slice() else {
            unreachable!("seven fields were parsed")
        };
        let dow_specials = dow.specials.iter().fold(0u8, |set, s| match s {
            Special::LastWeekdays(days) => set | days,
            _ => set,
        });
        let dow_any_day = low_bits(full(dow, 0, 6));
        Ok(Cron {
            seconds: full(sec, 0, 59).low(),
            minutes: full(min, 0, 59).low(),
            hours: low_bits(full(hour, 0, 23)),
            dom: [28, 29, 30, 31].map(|eom| dom_mask(dom, eom)),
            months: low_bits(full(mon, 1, 12)),
            dow_any_day,
            dow_last_week: dow_any_day | dow_specials,
            years: full(year, 0, YEAR_SPAN),
            text: fields.join(" "),
        })
    }

    /// The expression as the original would format it: `sec min hour dom mon dow year`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a wall-clock time matches every field.
    pub fn matches(&self, t: NaiveDateTime) -> bool {
        self.day_matches(t.date())
            && self.hours & (1 << t.hour()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.seconds & (1 << t.second()) != 0
    }

    /// Checks one day directly, field by field (deliberately not through `days_in`, so that tests
    /// can use it as an independent check of the search).
    fn day_matches(&self, d: NaiveDate) -> bool {
        let eom = month_length(d.year(), d.month());
        let in_last_week = d.day() + 7 > eom;
        let weekdays = if in_last_week { self.dow_last_week } else { self.dow_any_day };
        let eom_index = usize::try_from(eom - 28).unwrap_or(0);
        self.year_allowed(d.year())
            && self.months & (1 << d.month()) != 0
            && self.dom[eom_index] & (1 << d.day()) != 0
            && weekdays & (1 << d.weekday().num_days_from_sunday()) != 0
    }

    /// The first matching wall-clock time strictly after `t` (whole seconds), or `None` when
    /// there is none up to the end of 2099 (or the last year the expression allows).
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let epoch = NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)?.and_time(NaiveTime::MIN);
        let t = (t.with_nanosecond(0)? + chrono::Duration::seconds(1)).max(epoch);
        let (mut year, mut month, mut day) = (t.year(), t.month(), t.day());
        let mut from_time = Some(t.time());
        while year <= LAST_YEAR {
            if !self.year_allowed(year) {
                (year, month, day, from_time) = (year + 1, 1, 1, None);
                continue;
            }
            if self.months & (1 << month) == 0 {
                (month, day, from_time) = (month + 1, 1, None);
                if month > 12 {
                    (year, month) = (year + 1, 1);
                }
                continue;
            }
            let days = self.days_in(year, month) & (u32::MAX << day);
            if days == 0 {
                (month, day, from_time) = (month + 1, 1, None);
                if month > 12 {
                    (year, month) = (year + 1, 1);
                }
                continue;
            }
            let found = days.trailing_zeros();
            if found != day {
                from_time = None;
            }
            let date = NaiveDate::from_ymd_opt(year, month, found)?;
            match self.time_at_or_after(from_time.unwrap_or(NaiveTime::MIN)) {
                Some(time) => return Some(date.and_time(time)),
                None => {
                    // Nothing left today: try the following day.
                    (day, from_time) = (found + 1, None);
                    if day > 31 {
                        (month, day) = (month + 1, 1);
                        if month > 12 {
                            (year, month) = (year + 1, 1);
                        }
                    }
                }
            }
        }
        None
    }

    fn year_allowed(&self, year: i32) -> bool {
        u32::try_from(year - FIRST_YEAR).is_ok_and(|y| y <= YEAR_SPAN && self.years.contains(y))
    }

    /// The matching days of one month as a bit mask (bit d = day d).
    fn days_in(&self, year: i32, month: u32) -> u32 {
        let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else { return 0 };
        let eom = month_length(year, month);
        let first_weekday = first.weekday().num_days_from_sunday();
        // Days of the month falling on weekday w: w - first_weekday (mod 7) + 1, then every 7.
        let weekday_days = |set: u8| -> u32 {
            (0..7).filter(|w| set & (1 << w) != 0).fold(0u32, |mask, w| {
                let first_day = (w + 7 - first_weekday) % 7 + 1;
                mask | (0..5)
                    .map(|k| first_day + 7 * k)
                    .filter(|d| *d <= 31)
                    .fold(0u32, |m, d| m | 1 << d)
            })
        };
        let valid = (u32::MAX >> (31 - eom)) & !1;
        let last_week = valid & !(u32::MAX >> (31 - (eom - 7)));
        let dow = (weekday_days(self.dow_any_day) | (weekday_days(self.dow_last_week) & last_week))
            & valid;
        let eom_index = usize::try_from(eom - 28).unwrap_or(0);
        self.dom[eom_index] & dow
    }

    /// The first matching time of day at or after `from`.
    fn time_at_or_after(&self, from: NaiveTime) -> Option<NaiveTime> {
        let (h0, m0, s0) = (from.hour(), from.minute(), from.second());
        let mut hours = self.hours & (u32::MAX << h0);
        while hours != 0 {
            let h = hours.trailing_zeros();
            let m_from = if h == h0 { m0 } else { 0 };
            let mut minutes = self.minutes & (u64::MAX << m_from);
            while minutes != 0 {
                let m = minutes.trailing_zeros();
                let s_from = if h == h0 && m == m0 { s0 } else { 0 };
                let seconds = self.seconds & (u64::MAX << s_from);
                if seconds != 0 {
                    return NaiveTime::from_hms_opt(h, m, seconds.trailing_zeros());
                }
                minutes &= minutes - 1;
            }
            hours &= hours - 1;
        }
        None
    }
}

/// The day-of-month mask for a month of `eom` days, evaluating the items exactly as the
/// library's matcher does: `L` and `Z<a>-<b>` items can only add days; the first `Z<n>` item
/// decides alone (the library returns there, ignoring every later item and the plain values).
fn dom_mask(dom: &parse::Parsed, eom: u32) -> u32 {
    let mut mask = 0u32;
    for day in 1..=eom {
        let mut decided = None;
        for special in &dom.specials {
            match *special {
                Special::LastDay if day == eom => {
                    decided = Some(true);
                    break;
                }
                Special::DaysBeforeLast(n) => {
                    decided = Some(eom.checked_sub(n) == Some(day));
                    break;
                }
                Special::DaysBeforeLastRange(a, b)
                    if (a..=b).any(|i| eom.checked_sub(i) == Some(day)) =>
                {
                    decided = Some(true);
                    break;
                }
                _ => {}
            }
        }
        let matched = decided.unwrap_or(dom.any || dom.values.contains(day));
        if matched {
            mask |= 1 << day;
        }
    }
    mask
}

fn month_length(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|next| next.pred_opt())
        .map_or(28, |last| last.day())
}

/// The low bits of a small set (the caller knows its values fit).
fn low_bits<T: TryFrom<u64> + Default>(bits: Bits) -> T {
    let width = 8 * u32::try_from(std::mem::size_of::<T>()).unwrap_or(8);
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    T::try_from(bits.low() & mask).unwrap_or_default()
}
