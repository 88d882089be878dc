//! Kill and timeout stop the whole process group: SIGTERM, then SIGKILL 5 s later, reported
//! as 143 and 124, with nothing of the group left (checked in /proc).

use saltpeter_protocol::{EndReason, KillReason};

use crate::server::{Mode, Server};
use crate::{Agent, SECS, live_in_group, wait_until};

/// Ignores SIGTERM, and leaves a grandchild (also ignoring it) daemonised inside the group.
const STUBBORN: &str = "trap '' TERM; (sleep 1000 &); echo ready; while :; do sleep 0.1; done";

async fn stop_and_check(
    reason: Option<KillReason>,
    timeout: Option<&str>,
) -> (i32, Option<EndReason>, String) {
    let server = Server::start(Mode::Normal).await;
    let mut agent = Agent::new(&server.url(), "stubborn", "i1", STUBBORN);
    if let Some(t) = timeout {
        agent = agent.set("SP_TIMEOUT", t);
    }
    agent.start();
    let r = server.wait_for("i1", "ready", SECS(20), |r| r.stdout.starts_with(b"ready\n")).await;
    let pgid = r.start.expect("start").pid;
    wait_until("the grandchild to be in the group", SECS(10), || {
        (live_in_group(pgid).len() >= 3).then_some(())
    })
    .await;
    if timeout.is_none() {
        server.kill(&agent.key(), reason);
    }
    let r = server.complete("i1", SECS(30)).await;
    wait_until("every process of the group to be gone", SECS(5), || {
        live_in_group(pgid).is_empty().then_some(())
    })
    .await;
    let c = r.complete.unwrap();
    (c.retcode, c.reason, String::from_utf8_lossy(&r.stderr).into_owned())
}

#[tokio::test]
async fn a_kill_escalates_to_sigkill_and_reports_143() {
    let (retcode, reason, notes) = stop_and_check(None, None).await;
    assert_eq!((retcode, reason), (143, Some(EndReason::Killed)));
    assert!(notes.contains("kill requested: SIGTERM sent to process group"), "{notes}");
    assert!(notes.contains("still running 5s after SIGTERM: SIGKILL sent"), "{notes}");
}

#[tokio::test]
async fn a_timeout_escalates_to_sigkill_and_reports_124() {
    let (retcode, reason, notes) = stop_and_check(None, Some("1")).await;
    assert_eq!((retcode, reason), (124, Some(EndReason::Timeout)));
    assert!(notes.contains("timeout of 1s exceeded: SIGTERM sent"), "{notes}");
    assert!(notes.contains("SIGKILL sent"), "{notes}");
}

#[tokio::test]
async fn a_kill_from_the_sidecars_timeout_reports_124() {
    let (retcode, reason, _) = stop_and_check(Some(KillReason::Timeout), None).await;
    assert_eq!((retcode, reason), (124, Some(EndReason::Timeout)));
}

#[tokio::test]
async fn a_job_that_obeys_sigterm_is_not_sigkilled() {
    let server = Server::start(Mode::Normal).await;
    let agent = Agent::new(&server.url(), "polite", "i1", "echo ready; exec sleep 1000");
    agent.start();
    server.wait_for("i1", "ready", SECS(20), |r| r.stdout == b"ready\n").await;
    server.kill(&agent.key(), None);
    let r = server.complete("i1", SECS(30)).await;
    assert_eq!(r.complete.unwrap().retcode, 143);
    let notes = String::from_utf8_lossy(&r.stderr);
    assert!(!notes.contains("SIGKILL"), "{notes}");
}

#[tokio::test]
async fn timeout_zero_means_no_timeout() {
    let server = Server::start(Mode::Normal).await;
    let agent =
        Agent::new(&server.url(), "zero", "i1", "sleep 0.5; echo finished").set("SP_TIMEOUT", "0");
    agent.start();
    let r = server.complete("i1", SECS(30)).await;
    assert_eq!((r.complete.unwrap().retcode, r.stdout.as_slice()), (0, &b"finished\n"[..]));
}
