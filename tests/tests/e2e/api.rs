//! The API and its command line against a real daemon on the shared lab, with tokens: a viewer
//! may read but not act; maintenance set through the API (`saltpeter maintenance start`) is
//! merged with the files' and reaches the engine (the minion is skipped, not failed); run now and
//! the audit log through `saltpeter run --now` and the API; `saltpeter runs` lists and shows runs
//! through the API; `/metrics` counts the runs.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use saltpeter_tests::{Lab, Sidecar, bin, wait_until};

const LIMIT: Duration = Duration::from_secs(120);

/// A fresh API token (secret, sha256) from `saltpeter token new`.
pub(crate) fn token(name: &str, role: &str) -> (String, String) {
    let out = Command::new(bin("saltpeter"))
        .args(["token", "new", "--name", name, "--role", role, "--plain"])
        .output()
        .expect("run saltpeter token new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let (secret, sha) = line.trim().split_once(' ').expect("SECRET SHA256");
    (secret.to_owned(), sha.to_owned())
}

fn cli(sidecar: &Sidecar, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("saltpeter"))
        .args(args)
        .args(["--api", &sidecar.api_url(), "--token", token])
        .output()
        .expect("run saltpeter");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn maintenance_set_through_the_api_reaches_runs_and_every_action_is_audited() {
    let lab = Lab::shared();
    let (operator, operator_sha) = token("ops-bot", "operator");
    let (viewer, viewer_sha) = token("dashboard", "viewer");
    let jobs = "report:\n  sec: 0\n  min: 17\n  hour: 3\n  dom: 29\n  mon: 2\n  dow: '*'\n  targets: '*'\n  command: echo report\n";
    let extra = format!(
        "saltpeter_config:\n  api_tokens:\n    - {{name: ops-bot, sha256: {operator_sha}, role: operator}}\n    - {{name: dashboard, sha256: {viewer_sha}, role: viewer}}\n"
    );
    let sidecar = Sidecar::start_with_config(lab, jobs, &extra, &[]);

    // Tokens: none, a viewer acting, a viewer reading.
    let (ok, text) = cli(&sidecar, "sp_nonsense", &["jobs"]);
    assert!(!ok && text.contains("401"), "{text}");
    let (ok, text) = cli(&sidecar, &viewer, &["run", "report", "--now"]);
    assert!(!ok && text.contains("403") && text.contains("viewer"), "{text}");
    let (ok, text) = cli(&sidecar, &viewer, &["jobs"]);
    assert!(ok && text.contains("report") && text.contains("0 17 3 29 2 * *"), "{text}");

    // Maintenance through the API; the engine skips the minion.
    let (ok, text) = cli(
        &sidecar,
        &operator,
        &["maintenance", "start", "--minion", "minion-3", "--why", "disk swap"],
    );
    assert!(ok && text.contains("maintenance #1 started"), "{text}");
    let (ok, text) = cli(&sidecar, &viewer, &["maintenance"]);
    assert!(ok && text.contains("machines: minion-3") && text.contains("ops-bot"), "{text}");
    let (ok, text) = cli(&sidecar, &operator, &["run", "report", "--now"]);
    assert!(ok, "{text}");
    let run = sidecar.wait_for_run("report", LIMIT, |_| true);
    assert_eq!(run.status, "succeeded", "{run:#?}");
    let phases: Vec<(&str, &str, Option<i32>)> =
        run.results.iter().map(|r| (r.minion.as_str(), r.phase.as_str(), r.retcode)).collect();
    assert_eq!(phases[2], ("minion-3", "maintenance", None), "{run:#?}");
    assert_eq!(phases[0].2, Some(0), "{run:#?}");

    // Ended: the next run reaches minion-3 again.
    let (ok, text) = cli(&sidecar, &operator, &["maintenance", "end", "1"]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&sidecar, &operator, &["run", "report", "--now"]);
    assert!(ok, "{text}");
    let second = wait_until("a second run of report", LIMIT, || {
        let runs = sidecar.finished_runs("report");
        (runs.len() == 2).then(|| runs[1].clone())
    });
    assert!(second.results.iter().all(|r| r.retcode == Some(0)), "{second:#?}");

    // `saltpeter runs` asks the API too: a table, one run with its output, JSON.
    let (ok, text) = cli(&sidecar, &viewer, &["runs", "--job", "report", "--status", "succeeded"]);
    assert!(ok && text.contains(&second.instance) && text.contains("manual"), "{text}");
    let (ok, text) = cli(&sidecar, &viewer, &["runs", &second.instance]);
    assert!(
        ok && text.contains("== minion-1 (")
            && text.contains(", exit 0, ")
            && text.contains("report\n"),
        "{text}"
    );
    let (ok, text) = cli(&sidecar, &viewer, &["runs", "--json", "--limit", "1", "--job", "report"]);
    assert!(ok && text.contains(&format!("\"instance\":\"{}\"", second.instance)), "{text}");
    let (ok, text) = cli(&sidecar, "sp_nonsense", &["runs"]);
    assert!(!ok && text.contains("401"), "{text}");

    // The audit log names the token of each action.
    let (ok, text) = cli(&sidecar, &viewer, &["maintenance", "--json"]);
    assert!(ok && text.contains("\"entries\":[]"), "{text}");
    let db = rusqlite::Connection::open_with_flags(
        sidecar.state_dir.join("saltpeter.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store");
    let audit: Vec<(String, String)> = db
        .prepare("SELECT actor, action FROM audit ORDER BY id")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("audit");
    let want = ["maintenance.start", "run", "maintenance.end", "run"]
        .map(|a| ("ops-bot".to_owned(), a.to_owned()));
    assert_eq!(audit, want);

    // /metrics counts both runs (the metrics task follows the store every 2 s).
    let (ok, _) = cli(&sidecar, &viewer, &["jobs", "--json"]);
    assert!(ok);
    wait_until("the runs in /metrics", LIMIT, || {
        let text = get(&sidecar, "/metrics", &viewer)?;
        text.contains("saltpeter_runs_total{job=\"report\",status=\"succeeded\"} 2").then_some(())
    });
}

/// A plain HTTP/1.0 GET (the tests crate has no HTTP client); the body when the status is 200.
fn get(sidecar: &Sidecar, path: &str, token: &str) -> Option<String> {
    let addr = sidecar.api_url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}
