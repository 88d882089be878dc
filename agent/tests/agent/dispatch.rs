//! Coalesced dispatch: one agent, one connection, many independent runs from a manifest.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use saltpeter_protocol::{DispatchId, EndReason, Manifest, ManifestEntry, RunKey, Timestamp};

use crate::server::{Mode, Server};
use crate::{SECS, bin, live_in_group};

fn entry(instance: &str, command: &str) -> ManifestEntry {
    ManifestEntry {
        job_name: format!("job-{instance}").as_str().into(),
        job_instance: instance.into(),
        command: command.to_owned(),
        user: None,
        cwd: None,
        env: BTreeMap::new(),
        timeout: None,
        scheduled: None,
        allow_overlap: true,
        lockfile: None,
        output_interval_ms: Some(50),
    }
}

fn launch(server: &Server, dispatch: &str, dir: &std::path::Path) {
    let out = Command::new(bin())
        .args(["dispatch", "--url", &server.url(), "--dispatch", dispatch, "--token", "t0ken"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SP_MACHINE_ID", "minion-test")
        .env("SP_STATE_DIR", dir.join("state"))
        .env("SP_WRAPPER_LOGDIR", dir.join("log"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("detached as pid"));
}

fn key(instance: &str) -> RunKey {
    RunKey {
        job_name: format!("job-{instance}").as_str().into(),
        job_instance: instance.into(),
        machine: "minion-test".into(),
    }
}

#[tokio::test]
async fn every_manifest_entry_is_an_independent_run_on_one_connection() {
    let server = Server::start(Mode::Normal).await;
    // Microseconds: the wire's precision.
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let scheduled = chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap();
    let mut env_entry = entry("b", "echo \"$GREETING\" >&2; exit 3");
    env_entry.env.insert("GREETING".into(), "hello from b".into());
    let mut later = entry("d", "date +%s.%N");
    later.scheduled = Some(Timestamp(scheduled));
    let mut timed = entry("e", "trap '' TERM; echo ready; while :; do sleep 0.1; done");
    timed.timeout = Some(Duration::from_secs(1));
    let manifest = Manifest {
        dispatch: DispatchId::new("d1"),
        machine: "minion-test".into(),
        runs: vec![
            entry("a", "echo a"),
            env_entry,
            entry("c", "echo ready; exec sleep 1000"),
            later,
            timed,
        ],
        timestamp: None,
    };
    server.state.lock().unwrap().manifests.insert("d1".into(), manifest);
    let dir = tempfile::tempdir().unwrap();
    launch(&server, "d1", dir.path());

    server.wait_for("c", "c ready", SECS(20), |r| r.stdout == b"ready\n").await;
    server.kill(&key("c"), None);
    let a = server.complete("a", SECS(20)).await;
    let b = server.complete("b", SECS(20)).await;
    let c = server.complete("c", SECS(20)).await;
    let d = server.complete("d", SECS(20)).await;
    let e = server.complete("e", SECS(30)).await;
    assert_eq!((a.stdout.as_slice(), a.complete.unwrap().retcode), (&b"a\n"[..], 0));
    assert_eq!((b.stderr.as_slice(), b.complete.unwrap().retcode), (&b"hello from b\n"[..], 3));
    assert_eq!(c.complete.unwrap().retcode, 143);
    assert_eq!(e.complete.unwrap().reason, Some(EndReason::Timeout));
    assert!(live_in_group(e.start.unwrap().pid).is_empty());
    // d was armed and started at or after its instant, by the job's own clock.
    assert_eq!(d.armed.expect("armed").scheduled, Timestamp(scheduled));
    let started: f64 = String::from_utf8(d.stdout).unwrap().trim().parse().unwrap();
    assert!(started >= scheduled.timestamp_micros() as f64 / 1e6, "{started} before {scheduled}");
    let connects = server.state.lock().unwrap().connects.clone();
    assert_eq!(connects.len(), 1, "one connection for all runs: {connects:?}");
    assert_eq!(connects[0].token.as_ref().unwrap().as_str(), "t0ken");
}

#[tokio::test]
async fn a_kill_during_the_lead_window_cancels_the_armed_run() {
    let server = Server::start(Mode::Normal).await;
    let marker = tempfile::tempdir().unwrap();
    let witness = marker.path().join("ran");
    let mut armed = entry("x", &format!("touch {}", witness.display()));
    armed.scheduled = Some(Timestamp(Utc::now() + chrono::Duration::seconds(30)));
    let manifest = Manifest {
        dispatch: DispatchId::new("d2"),
        machine: "minion-test".into(),
        runs: vec![armed],
        timestamp: None,
    };
    server.state.lock().unwrap().manifests.insert("d2".into(), manifest);
    let dir = tempfile::tempdir().unwrap();
    launch(&server, "d2", dir.path());
    server.wait_for("x", "armed", SECS(20), |r| r.armed.is_some()).await;
    server.kill(&key("x"), None);
    let r = server.complete("x", SECS(20)).await;
    assert_eq!(r.complete.unwrap().retcode, 143);
    assert!(r.start.is_none(), "never started");
    assert!(String::from_utf8_lossy(&r.stderr).contains("never started"));
    assert!(!witness.exists());
}
