//! Tables of expressions, start instants and expected firings, through one `check` helper; the
//! DST cases of Europe/Berlin and America/New_York; rejections; and a property test against a
//! brute-force search.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::{Cron, Field, Schedule};

fn cron(expr: &str) -> Cron {
    let fields: Vec<&str> = expr.split(' ').collect();
    let fields: [&str; 7] = fields.try_into().expect("seven fields");
    Cron::parse(fields).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&Utc)
}

/// The next firings of `expr` (`sec min hour dom mon dow year`) in `zone` after `from`.
fn check(expr: &str, zone: &str, from: &str, expected: &[&str]) {
    let zone: Tz = zone.parse().expect("zone");
    let schedule = Schedule::new(cron(expr), zone);
    let got: Vec<String> = schedule
        .upcoming(utc(from), expected.len() + 1)
        .iter()
        .take(expected.len())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    assert_eq!(got, expected, "{expr} in {zone} after {from}");
}

fn rejects(expr: &str, field: Field, reason_part: &str) {
    let fields: Vec<&str> = expr.split(' ').collect();
    let err = Cron::parse(fields.try_into().expect("seven fields")).expect_err(expr);
    assert_eq!(err.field, field, "{expr}: {err}");
    assert!(err.reason.contains(reason_part), "{expr}: `{}` lacks `{reason_part}`", err.reason);
}

#[test]
fn plain_fields_lists_ranges_and_steps() {
    check(
        "0 */15 * * * * *",
        "UTC",
        "2026-01-01T00:07:00Z",
        &[
            "2026-01-01T00:15:00Z",
            "2026-01-01T00:30:00Z",
            "2026-01-01T00:45:00Z",
            "2026-01-01T01:00:00Z",
        ],
    );
    check(
        "0,30 5-6/1 1 * * * *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T01:05:00Z",
            "2026-01-01T01:05:30Z",
            "2026-01-01T01:06:00Z",
            "2026-01-01T01:06:30Z",
            "2026-01-02T01:05:00Z",
        ],
    );
    // `a/n` means a..max step n.
    check(
        "0 40/10 12 1 1 * 2030",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2030-01-01T12:40:00Z", "2030-01-01T12:50:00Z"],
    );
    // Strictly after: a start on a firing second is not returned again, fractions are dropped.
    check("0 0 0 * * * *", "UTC", "2026-01-01T00:00:00.5Z", &["2026-01-02T00:00:00Z"]);
    check("* * * * * * *", "UTC", "2026-01-01T00:00:00.5Z", &["2026-01-01T00:00:01Z"]);
}

#[test]
fn names_and_both_sundays() {
    // 2026-03-01 is a Sunday.
    check(
        "0 0 0 * mar sun *",
        "UTC",
        "2026-02-01T00:00:00Z",
        &["2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z"],
    );
    check("0 0 0 * 3 7 *", "UTC", "2026-02-01T00:00:00Z", &["2026-03-01T00:00:00Z"]);
    // `sat-sun` is the library's special case: Saturday and Sunday.
    check(
        "0 0 0 * 3 sat-sun *",
        "UTC",
        "2026-03-01T00:00:00Z",
        &["2026-03-07T00:00:00Z", "2026-03-08T00:00:00Z", "2026-03-14T00:00:00Z"],
    );
    check("0 0 0 ? * MON-FRI *", "UTC", "2026-03-06T00:00:00Z", &["2026-03-09T00:00:00Z"]);
}

#[test]
fn day_of_month_and_day_of_week_combine_with_and() {
    // The original's documented case: from 2025-03-10 the next Monday the 1st is 2025-09-01.
    check("0 0 0 1 * 1 *", "UTC", "2025-03-10T00:00:00Z", &["2025-09-01T00:00:00Z"]);
    // Friday the 13th.
    check(
        "0 0 9 13 * fri *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-02-13T09:00:00Z", "2026-03-13T09:00:00Z", "2026-11-13T09:00:00Z"],
    );
}

#[test]
fn last_day_z_and_last_weekday() {
    check(
        "0 0 0 L * * *",
        "UTC",
        "2024-01-31T00:00:00Z",
        &["2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z"],
    );
    check(
        "0 0 0 Z1 2 * *",
        "UTC",
        "2025-01-01T00:00:00Z",
        &[
            "2025-02-27T00:00:00Z",
            "2026-02-27T00:00:00Z",
            "2027-02-27T00:00:00Z",
            "2028-02-28T00:00:00Z",
        ],
    );
    check(
        "0 0 0 z0-1 4 * 2026",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-04-29T00:00:00Z", "2026-04-30T00:00:00Z"],
    );
    // The library returns on a `Z<n>` item: the plain 5 beside it never matches.
    check("0 0 0 5,Z2 5 * 2026", "UTC", "2026-01-01T00:00:00Z", &["2026-05-29T00:00:00Z"]);
    // `L,15`: the 15th and the last day.
    check(
        "0 0 0 L,15 6 * 2026",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-06-15T00:00:00Z", "2026-06-30T00:00:00Z"],
    );
    // Last Friday of the month; `L7` and `L0` are both the last Sunday.
    check(
        "0 0 0 * * L5 *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"],
    );
    check("0 0 0 * 5 L7 2026", "UTC", "2026-01-01T00:00:00Z", &["2026-05-31T00:00:00Z"]);
    // `L<d>` adds to the plain days: every Monday plus the last Friday.
    check(
        "0 0 0 * 1 1,L5 2026",
        "UTC",
        "2026-01-20T00:00:00Z",
        &["2026-01-26T00:00:00Z", "2026-01-30T00:00:00Z"],
    );
}

#[test]
fn leap_years() {
    check(
        "0 0 0 29 2 * *",
        "UTC",
        "2025-01-01T00:00:00Z",
        &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
    );
    check("0 0 12 29 feb * *", "UTC", "2096-03-01T00:00:00Z", &[]); // 2100 is past the end
}

#[test]
fn never_firing_schedules_return_none_quickly() {
    let start = std::time::Instant::now();
    for expr in [
        "0 0 0 * * * 2024",
        "0 0 0 30 2 * *",
        "0 0 0 31 4,6,9,11 * *",
        "0 0 0 1 * L5 *",
        "59 59 23 31 12 * 2025",
    ] {
        let s = Schedule::new(cron(expr), Tz::UTC);
        assert_eq!(s.next_after(utc("2026-01-01T00:00:00Z")), None, "{expr}");
    }
    // Far above any real cost; the point is that it is not a scan over seconds.
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn berlin_spring_forward_fires_once_after_the_gap() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z). 02:30 does not exist.
    check(
        "0 30 2 * * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
    );
    // Every 15 minutes: the four slots of the missing hour collapse into one firing at 03:00.
    check(
        "0 */15 * * * * *",
        "Europe/Berlin",
        "2026-03-29T00:40:00Z",
        &["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"],
    );
}

#[test]
fn berlin_fall_back_fires_once_at_the_first_occurrence() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:30 happens twice.
    check(
        "0 30 2 * * * *",
        "Europe/Berlin",
        "2026-10-25T00:00:00Z",
        &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    );
    // From inside the second pass, the slots of the first pass are not repeated.
    check(
        "0 */30 * * * * *",
        "Europe/Berlin",
        "2026-10-25T01:10:00Z",
        &["2026-10-25T02:00:00Z", "2026-10-25T02:30:00Z"],
    );
    check(
        "0 */30 * * * * *",
        "Europe/Berlin",
        "2026-10-24T23:50:00Z",
        &["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z"],
    );
}

#[test]
fn new_york_spring_and_fall() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
    check(
        "0 30 2 * * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
    );
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice (05:30Z, 06:30Z).
    check(
        "0 30 1 * * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
    );
}

#[test]
fn rejections_follow_the_library() {
    rejects("0 45/30 * * * * *", Field::Minute, "past 59");
    rejects("0 */61 * * * * *", Field::Minute, "larger than 59");
    rejects("0 */0 * * * * *", Field::Minute, "positive");
    rejects("0 55-5 * * * * *", Field::Minute, "do not wrap");
    rejects("0 60 * * * * *", Field::Minute, "out of range 0-59");
    rejects("0 0 0 * * 8 *", Field::DayOfWeek, "out of range 0-7");
    rejects("0 ? * * * * *", Field::Minute, "allowed in the dom and dow");
    rejects("0 0 0 15W * * *", Field::DayOfMonth, "neither a number");
    rejects("0 0 0 * * 5#3 *", Field::DayOfWeek, "neither a number");
    rejects("0 0 0 * * L *", Field::DayOfWeek, "bare `L`");
    rejects("0 0 0 L5 * * *", Field::DayOfMonth, "leading `L`");
    rejects("0 0 0 Z8 * * *", Field::DayOfMonth, "0-7");
    rejects("0 0 0 * * Lfri *", Field::DayOfWeek, "weekday number");
    rejects("0 0 0 * * * 1969", Field::Year, "out of range 1970-2099");
    rejects("0 0 0 * * * 2100", Field::Year, "out of range");
    rejects("0 1-2-3 * * * * *", Field::Minute, "more than one `-`");
    rejects("0 1,,2 * * * * *", Field::Minute, "neither a number");
    rejects("0 */2/2 * * * * *", Field::Minute, "more than one `/`");
}

#[test]
fn accepted_oddities_of_the_library() {
    // `0-0` in dow becomes 0-7 (the `sat-sun` rule): every day.
    check("0 0 0 * 6 0-0 2026", "UTC", "2026-06-01T00:00:00Z", &["2026-06-02T00:00:00Z"]);
    // An inverted `L` range is accepted and matches nothing.
    check("0 0 0 * * L5-2 *", "UTC", "2026-01-01T00:00:00Z", &[]);
    // The step check is on the first step only: `0-10/20` is just 0.
    check("0 0-10/20 0 1 1 * 2027", "UTC", "2026-01-01T00:00:00Z", &["2027-01-01T00:00:00Z"]);
}

/// An independent, slow matcher: seconds, one by one.
fn brute_force_next(c: &Cron, t: NaiveDateTime, limit: Duration) -> Option<NaiveDateTime> {
    let mut at = t.with_nanosecond_zero() + Duration::seconds(1);
    let end = t + limit;
    while at <= end {
        if c.matches(at) {
            return Some(at);
        }
        at += Duration::seconds(1);
    }
    None
}

trait WithNanosZero {
    fn with_nanosecond_zero(self) -> Self;
}
impl WithNanosZero for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).expect("zero nanoseconds")
    }
}

fn field_strategy(lo: u32, hi: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
    let value = move || (lo..=hi).prop_map(|v| v.to_string());
    prop_oneof![
        3 => Just("*".to_string()),
        2 => value(),
        1 => (value(), value()).prop_map(|(a, b)| format!("{a},{b}")),
        1 => (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (1..=(hi - lo).max(1) / 2 + 1).prop_map(|n| format!("*/{n}")),
        1 => proptest::sample::select(if names.is_empty() { &["*"][..] } else { names })
            .prop_map(str::to_string),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]
    #[test]
    fn next_after_is_the_first_match(
        sec in field_strategy(0, 59, &[]),
        min in field_strategy(0, 59, &[]),
        hour in field_strategy(0, 23, &[]),
        dom in prop_oneof![field_strategy(1, 31, &[]), Just("L".into()), (0u32..=7).prop_map(|n| format!("Z{n}"))],
        mon in field_strategy(1, 12, &["jan", "feb", "jun", "dec"]),
        dow in prop_oneof![field_strategy(0, 7, &["mon", "sat-sun", "fri"]), (0u32..=7).prop_map(|n| format!("L{n}"))],
        secs in 0i64..(4_000_000_000 - 1_000_000_000),
    ) {
        let fields = [sec.as_str(), min.as_str(), hour.as_str(), dom.as_str(), mon.as_str(), dow.as_str(), "*"];
        let Ok(c) = Cron::parse(fields) else { return Ok(()) };
        let t = DateTime::from_timestamp(1_000_000_000 + secs, 0).expect("in range").naive_utc();
        let next = c.next_after(t);
        if let Some(n) = next {
            prop_assert!(n > t);
            prop_assert!(c.matches(n), "{n} does not match {}", c.as_str());
        }
        // Brute force over at most a day (longer gaps are checked up to that point).
        let limit = Duration::days(1);
        let brute = brute_force_next(&c, t, limit);
        match next {
            Some(n) if n <= t + limit => prop_assert_eq!(brute, Some(n)),
            _ => prop_assert_eq!(brute, None),
        }
    }
}
