//! The web UI in a real browser: Debian's chromium driven by `playwright-core`
//! (`tests/browser/ui.mjs`) against a real sidecar on the shared lab, signed in with an operator
//! token made by `saltpeter token new`. The script signs in, sees the jobs table, runs a job now
//! and watches its coloured output arrive live, kills a long job and sees 143, checks the heatmap
//! and the timeline, sets maintenance and reads the audit log; it saves screenshots under
//! `docs/screenshots/`.
//! This test then checks the same facts in the run store and the audit table.
//!
//! Needs `node` and `chromium` (`scripts/setup-system`) and `npm ci` in `tests/browser`
//! (done here when `node_modules` is missing).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use saltpeter_tests::{Lab, Sidecar, bin, repo_root};

const CHROMIUM: &str = "/usr/bin/chromium";

fn job(name: &str, body: &str) -> String {
    // 03:17:00 on the 29th of February: never during a test.
    let mut yaml =
        format!("{name}:\n  sec: 0\n  min: 17\n  hour: 3\n  dom: 29\n  mon: 2\n  dow: '*'\n");
    for line in body.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn token() -> (String, String) {
    let out = Command::new(bin("saltpeter"))
        .args(["token", "new", "--name", "e2e-operator", "--role", "operator", "--plain"])
        .output()
        .expect("run saltpeter token new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let mut parts = line.split_whitespace();
    let secret = parts.next().expect("a secret").to_owned();
    let sha256 = parts.next().expect("a digest").to_owned();
    (secret, sha256)
}

fn npm_ci(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("run npm ci in tests/browser");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[test]
fn the_ui_signs_in_runs_watches_live_output_and_kills() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: run scripts/setup-system");
    let lab = Lab::shared();
    let (secret, sha256) = token();
    let mut jobs = job(
        "colors",
        "targets: minion-1\ndescription: ANSI colours and a progress bar\n\
         command: \"printf '\\\\033[1;32mgreen bold\\\\033[0m plain \\\\033[31mred\\\\033[0m\\\\n'; \
         for i in 1 2 3; do printf '\\\\rprogress %s/3' $i; sleep 0.4; done; echo; echo done\"",
    );
    jobs.push_str(&job(
        "long",
        "targets: minion-2\ndescription: Runs for ten minutes unless killed\n\
         command: 'echo started; i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick $i; sleep 1; done'",
    ));
    jobs.push_str(&job(
        "nightly-backup",
        "targets: 'minion-*'\ngroup: storage\ndescription: Database dump to object storage\n\
         command: 'echo \"dumping $SP_MACHINE_ID\"; if [ \"$SP_MACHINE_ID\" = minion-3 ]; then echo \"disk full\" >&2; exit 2; fi; echo ok'\n\
         env: {DB_PASSWORD: hunter2, BUCKET: s3://backups}",
    ));
    let extra = format!(
        "saltpeter_config:\n  api_tokens:\n    - {{name: e2e-operator, sha256: {sha256}, role: operator}}\n"
    );
    let sidecar = Sidecar::start_with_config(lab, &jobs, &extra, &[]);

    let browser = repo_root().join("tests").join("browser");
    npm_ci(&browser);
    let shots = repo_root().join("docs").join("screenshots");
    fs_err::create_dir_all(&shots).expect("create docs/screenshots");
    let out = Command::new("node")
        .arg("ui.mjs")
        .current_dir(&browser)
        .env("SP_URL", sidecar.api_url())
        .env("SP_TOKEN", &secret)
        .env("SP_SCREENSHOTS", &shots)
        .env("SP_CHROMIUM", CHROMIUM)
        .output()
        .expect("run node tests/browser/ui.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{stderr}\n--- sidecar log ---\n{}",
        sidecar.log()
    );
    assert!(stdout.contains("ALL STEPS PASSED"), "{stdout}\n{stderr}");
    eprintln!("{stdout}");

    // The same facts, from the run store.
    let colors = sidecar.wait_for_run("colors", Duration::from_secs(60), |_| true);
    assert_eq!(colors.status, "succeeded", "{colors:#?}");
    assert_eq!(colors.trigger, "manual");
    assert!(colors.results[0].output.contains("\x1b[1;32mgreen bold"), "{colors:#?}");
    let long = sidecar.wait_for_run("long", Duration::from_secs(60), |_| true);
    assert_eq!(long.status, "killed", "{long:#?}");
    assert_eq!(long.results[0].retcode, Some(143), "{long:#?}");
    let audit = audit(&sidecar.state_dir);
    for action in ["run", "kill", "maintenance.start"] {
        assert!(
            audit.iter().any(|(actor, a)| actor == "e2e-operator" && a == action),
            "no {action} by e2e-operator in the audit log: {audit:?}"
        );
    }
    let backups = sidecar.finished_runs("nightly-backup");
    assert_eq!(backups.len(), 2, "{backups:#?}");
    assert!(backups.iter().all(|r| r.status == "failed"), "{backups:#?}");
    for name in [
        "login",
        "jobs",
        "run-colors",
        "run-live",
        "run-killed",
        "job",
        "timeline",
        "maintenance",
        "audit",
        "runs",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "no screenshot {name}.png");
    }
}

fn audit(state_dir: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        state_dir.join("saltpeter.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the run store");
    let mut stmt = db.prepare("SELECT actor, action FROM audit ORDER BY id").expect("query audit");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("read audit")
        .collect::<Result<_, _>>()
        .expect("audit rows")
}
