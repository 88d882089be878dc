//! The runner module `salt/_runners/saltpeter.py` against a live sidecar: synced with
//! `saltutil.sync_runners`, configured by `saltpeter_api` in the master config, called with the
//! real `salt-run`.

use std::time::Duration;

use saltpeter_tests::{Sidecar, wait_until};
use serde_json::Value;

use crate::pillar::salt_native_lab;

const LIMIT: Duration = Duration::from_secs(120);

/// `salt-run saltpeter.<fun> ARGS --out json`: the exit status and the answer.
fn runner(fun: &str, args: &[&str]) -> (bool, Value) {
    let lab = &salt_native_lab().lab;
    let fun = format!("saltpeter.{fun}");
    let mut all = vec![fun.as_str()];
    all.extend(args);
    all.extend(["--out", "json"]);
    let out = lab.salt_run(&all);
    let answer = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stdout).into_owned()));
    (out.status.success(), answer)
}

/// The runner finds the sidecar through one file of the shared lab's master config, so the tests
/// that point it at their own sidecar take turns.
static MASTER_CONFIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts a sidecar whose job `manual` never fires by itself, syncs the runner and points the
/// master config's `saltpeter_api` at the sidecar's API. Holds the master config until dropped.
fn sidecar_for_the_runner() -> (std::sync::MutexGuard<'static, ()>, Sidecar) {
    let turn = MASTER_CONFIG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = salt_native_lab();
    let jobs = "saltpeter_config:\n  pillar: false\nmanual:\n  min: 0\n  hour: 0\n  dom: 1\n  mon: 1\n  dow: '*'\n  year: 2099\n  targets: minion-1\n  command: 'echo by-runner; exit 4'\n";
    let sidecar = Sidecar::start(&lab.lab, jobs);
    let log = sidecar.log();
    let api = log
        .split("api=Some(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no API address in the log: {log}"))
        .to_owned();
    let conf = lab
        .lab
        .master_config
        .parent()
        .expect("the master config dir")
        .join("master.d")
        .join("saltpeter-api.conf");
    fs_err::write(conf, format!("saltpeter_api:\n  url: http://{api}\n  timeout: 30\n"))
        .expect("write saltpeter_api into master.d");
    let out = lab.lab.salt_run(&["saltutil.sync_runners"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (turn, sidecar)
}

#[test]
fn run_status_and_history_work_against_a_live_sidecar() {
    let (_turn, _sidecar) = sidecar_for_the_runner();

    let (ok, answer) = runner("run", &["name=manual"]);
    assert!(ok, "{answer}");
    assert_eq!(answer["job"], "manual", "{answer}");

    let history = wait_until("the run in saltpeter.history", LIMIT, || {
        let (ok, answer) = runner("history", &["name=manual"]);
        let done = ok
            && answer.as_array().is_some_and(|runs| {
                runs.iter().any(|r| r["status"] != "running" && r["status"] != "pending")
            });
        done.then_some(answer)
    });
    let last = &history[0];
    assert_eq!(last["job"], "manual", "{history}");
    assert_eq!(last["trigger"], "manual", "{history}");
    assert_eq!(last["status"], "failed", "{history}");
    assert_eq!(last["retcodes"]["minion-1"], 4, "{history}");

    let (ok, answer) = runner("status", &[]);
    assert!(ok && answer["running"].is_array(), "{answer}");

    // An error of the API is an error of the runner, with the reason.
    let (ok, answer) = runner("run", &["name=no-such-job"]);
    assert!(!ok, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("HTTP 404")), "{answer}");
}

#[test]
fn jobs_kill_and_maintenance_work_against_a_live_sidecar() {
    let (_turn, _sidecar) = sidecar_for_the_runner();
    let (ok, answer) = runner("jobs", &[]);
    assert!(ok && answer["manual"].is_object(), "{answer}");

    let (ok, answer) =
        runner("maintenance", &["start", "scope=minion", "target=minion-3", "why=test"]);
    assert!(ok, "{answer}");
    let (ok, shown) = runner("maintenance", &[]);
    assert!(ok && shown.to_string().contains("minion-3"), "{shown}");
    let id = answer["id"].to_string();
    let (ok, answer) = runner("maintenance", &["end", &format!("id={id}")]);
    assert!(ok, "{answer}");

    let (ok, answer) = runner("kill", &["instance=manual_0"]);
    assert!(!ok && answer["error"].as_str().is_some_and(|e| e.contains("HTTP 404")), "{answer}");
}
