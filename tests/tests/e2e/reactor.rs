//! The reactor of `states/reactor/` on the lab's master (configured by `salt_native_lab`): a
//! failed run's `saltpeter/job/<job>/complete` event sets the grain `saltpeter_last_failure` on
//! the minions that failed; a successful run sets nothing.

use std::time::Duration;

use saltpeter_tests::{Sidecar, wait_until};
use serde_json::Value;

use crate::pillar::salt_native_lab;

const LIMIT: Duration = Duration::from_secs(120);

fn grain(minion: &str) -> Value {
    let lab = &salt_native_lab().lab;
    let out = lab.salt(&[minion, "grains.get", "saltpeter_last_failure", "--out", "json"]);
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    parsed[minion].clone()
}

#[test]
fn a_failed_run_sets_the_failure_grain_on_the_failed_minions_through_the_reactor() {
    let lab = salt_native_lab();
    let every = "sec: '*/5'\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'";
    let jobs = format!(
        "saltpeter_config:\n  pillar: false\nfails:\n  {every}\n  targets: minion-1\n  command: 'exit 3'\nworks:\n  {every}\n  targets: minion-3\n  command: 'true'\n"
    );
    let sidecar = Sidecar::start(&lab.lab, &jobs);
    let failed = sidecar.wait_for_run("fails", LIMIT, |r| r.status != "skipped");
    assert_eq!(failed.status, "failed", "{failed:#?}");
    let worked = sidecar.wait_for_run("works", LIMIT, |r| r.status != "skipped");
    assert_eq!(worked.status, "succeeded", "{worked:#?}");

    // The reactor ran on the master and set the grain on minion-1 (a later failed run may
    // have replaced it: any run of `fails`).
    let set = wait_until("the reactor to set the failure grain on minion-1", LIMIT, || {
        let g = grain("minion-1");
        (g["job"] == "fails").then_some(g)
    });
    assert_eq!(set["retcode"], 3, "{set}");
    let instance = set["instance"].as_str().unwrap_or_default();
    assert!(instance.starts_with("fails_"), "{set}");
    assert!(sidecar.all_runs("fails").iter().any(|r| r.instance == instance), "{set}");
    assert_eq!(grain("minion-3"), Value::String(String::new()), "a success sets nothing");
}
