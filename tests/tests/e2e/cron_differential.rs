//! Differential test of our cron engine against the original's: the PyPI `crontab` library that
//! Saltpeter 0.9 calls as `CronTab("sec min hour dom mon dow year").next(now=..., default_utc=True)`.
//!
//! Thousands of seeded expressions, valid and invalid, go to ONE Python process (for speed); for
//! each, both sides must agree on rejection, and on the next K instants after a start instant.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use saltpeter::schedule::{Cron, Schedule};

const EXPRESSIONS: usize = 4000;
const NEXT: usize = 5;
const SEED: u64 = 0x5a17_9e7e_2026;

/// Reads JSON lines `{"expr", "start"}`, answers `{"next": [epoch seconds]}` or `{"error"}`.
const ORACLE: &str = r#"
import json, sys
from datetime import datetime, timezone
from crontab import CronTab
for line in sys.stdin:
    q = json.loads(line)
    try:
        ct = CronTab(q["expr"])
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        continue
    now, out = datetime.fromtimestamp(q["start"], timezone.utc), []
    for _ in range(q["k"]):
        now = ct.next(now=now, default_utc=True, return_datetime=True)
        if now is None:
            break
        out.append(int(now.timestamp()))
    print(json.dumps({"next": out}))
"#;

/// The Python with the `crontab` package: `SALTPETER_CRONTAB_PYTHON`, else the lab's venv
/// (`scripts/saltlab venv`, the TEAM.md contract; `saltpeter_tests::venv_python` once that is on
/// main), else a throwaway venv in the temp dir.
fn crontab_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SALTPETER_CRONTAB_PYTHON") {
        return PathBuf::from(p);
    }
    let saltlab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/saltlab");
    if let Ok(out) = Command::new(&saltlab).arg("venv").stderr(Stdio::inherit()).output()
        && out.status.success()
    {
        let venv = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        return PathBuf::from(venv).join("bin/python");
    }
    let venv = std::env::temp_dir().join("crontab-venv");
    let python = venv.join("bin/python");
    let has_crontab = |py: &PathBuf| {
        Command::new(py).args(["-c", "import crontab"]).status().is_ok_and(|s| s.success())
    };
    if !has_crontab(&python) {
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        assert!(ok.is_ok_and(|s| s.success()), "create a venv in {}", venv.display());
        let ok = Command::new(venv.join("bin/pip")).args(["install", "-q", "crontab"]).status();
        assert!(ok.is_ok_and(|s| s.success()), "pip install crontab into {}", venv.display());
    }
    python
}

/// splitmix64: a small seeded generator, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).expect("lo <= hi");
        lo + i64::try_from(self.below(span)).expect("small")
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).expect("small")]
    }
}

/// One comma item for a field with values lo..=hi, now and then out of range or malformed.
fn item(rng: &mut Rng, lo: i64, hi: i64, names: &[&str], specials: &[&str]) -> String {
    let v = |rng: &mut Rng| {
        if rng.below(25) == 0 { rng.range(lo - 2, hi + 2) } else { rng.range(lo, hi) }
    };
    match rng.below(20) {
        0..=3 => "*".into(),
        4..=6 => v(rng).to_string(),
        7..=8 => {
            let (a, b) = (v(rng), v(rng));
            // Mostly ascending, sometimes inverted (rejected: no wrap-around).
            if rng.below(6) == 0 {
                format!("{a}-{b}")
            } else {
                format!("{}-{}", a.min(b), a.max(b))
            }
        }
        9..=10 => format!("*/{}", rng.range(0, hi - lo + 3)),
        11 => format!("{}/{}", v(rng), rng.range(1, (hi - lo) / 2 + 2)),
        12 => {
            let (a, b) = (v(rng), v(rng));
            format!("{}-{}/{}", a.min(b), a.max(b), rng.range(1, (hi - lo) / 3 + 2))
        }
        13..=14 if !names.is_empty() => {
            let name = rng.pick(names);
            if rng.below(3) == 0 { format!("{name}-{}", rng.pick(names)) } else { name.to_string() }
        }
        15..=17 if !specials.is_empty() => rng.pick(specials).to_string(),
        // Never a whole empty field: the original's `"%s %s ..." % fields` would then shift the
        // fields left (we reject an empty field instead, see `Cron::parse`).
        18 => rng.pick(&["?", "L", "Z1", "L5", "W", "1#2", "1,,2", "x", "01", "+5", "*/+2"]).into(),
        _ => v(rng).to_string(),
    }
}

fn field(rng: &mut Rng, lo: i64, hi: i64, names: &[&str], specials: &[&str]) -> String {
    let n = match rng.below(10) {
        0..=6 => 1,
        7..=8 => 2,
        _ => 3,
    };
    (0..n).map(|_| item(rng, lo, hi, names, specials)).collect::<Vec<_>>().join(",")
}

fn expression(rng: &mut Rng) -> String {
    let months = ["jan", "feb", "mar", "Apr", "jun", "DEC", "sep"];
    let days = ["sun", "mon", "tue", "Wed", "thu", "fri", "SAT"];
    let dom_specials =
        ["L", "l", "Z0", "Z1", "Z3", "Z7", "Z8", "Z1-3", "z0-2", "Z3-1", "L,15", "?"];
    let dow_specials = ["L0", "L5", "l7", "L1-5", "L5-2", "L6-7", "L8", "sat-sun", "7", "0-0", "?"];
    // Mostly sparse seconds and minutes (as real jobs are), so the K instants spread out.
    let sec =
        if rng.below(3) == 0 { field(rng, 0, 59, &[], &[]) } else { rng.range(0, 59).to_string() };
    let min =
        if rng.below(2) == 0 { field(rng, 0, 59, &[], &[]) } else { rng.range(0, 59).to_string() };
    let year = match rng.below(4) {
        0 | 1 => "*".to_string(),
        2 => format!("{}-{}", rng.range(2024, 2030), rng.range(2030, 2040)),
        _ => field(rng, 1970, 2099, &[], &[]),
    };
    [
        sec,
        min,
        field(rng, 0, 23, &[], &[]),
        field(rng, 1, 31, &[], &dom_specials),
        field(rng, 1, 12, &months, &[]),
        field(rng, 0, 7, &days, &dow_specials),
        year,
    ]
    .join(" ")
}

fn ours(expr: &str, start: DateTime<Utc>) -> Result<Vec<i64>, String> {
    let fields: Vec<&str> = expr.split(' ').collect();
    let fields: [&str; 7] = fields.try_into().map_err(|_| "not 7 fields".to_string())?;
    let cron = Cron::parse(fields).map_err(|e| e.to_string())?;
    Ok(Schedule::new(cron, Tz::UTC).upcoming(start, NEXT).iter().map(|t| t.timestamp()).collect())
}

#[test]
fn our_cron_engine_agrees_with_the_originals_library() {
    let mut rng = Rng(SEED);
    let cases: Vec<(String, i64)> = (0..EXPRESSIONS)
        .map(|_| {
            let expr = expression(&mut rng);
            // 2020-01-01 .. 2031-01-01, any second.
            (expr, rng.range(1_577_836_800, 1_924_992_000))
        })
        .collect();

    let mut child = Command::new(crontab_python())
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python oracle");
    let mut input = String::new();
    for (expr, start) in &cases {
        input.push_str(&serde_json::json!({"expr": expr, "start": start, "k": NEXT}).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("run the Python oracle");
    writer.join().expect("writer thread").expect("write to the oracle");
    assert!(output.status.success(), "the oracle failed");
    let answers: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), cases.len(), "one answer per expression");

    let (mut rejected, mut never, mut mismatches) = (0, 0, Vec::new());
    for ((expr, start), answer) in cases.iter().zip(&answers) {
        let start_at = DateTime::from_timestamp(*start, 0).expect("in range");
        let theirs: Result<Vec<i64>, String> = match answer.get("next") {
            Some(next) => Ok(next
                .as_array()
                .expect("array")
                .iter()
                .map(|v| v.as_i64().expect("int"))
                .collect()),
            None => Err(answer["error"].as_str().unwrap_or("?").to_string()),
        };
        let mine = ours(expr, start_at);
        match (&mine, &theirs) {
            (Err(_), Err(_)) => rejected += 1,
            (Ok(a), Ok(b)) if a == b => never += usize::from(a.is_empty()),
            _ => mismatches
                .push(format!("{expr:?} from {start_at}: ours {mine:?}, library {theirs:?}")),
        }
    }
    eprintln!(
        "cron differential: {} expressions, {rejected} rejected by both, {never} never firing, {} mismatches",
        cases.len(),
        mismatches.len()
    );
    assert!(rejected > EXPRESSIONS / 20, "the generator must exercise rejections ({rejected})");
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(25)].join("\n")
    );
}
