//! Overlap locking and the local `status` / `kill` commands.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::server::{Mode, Server};
use crate::{Agent, SECS, alive, live_in_group, wait_until};

#[tokio::test]
async fn the_overlap_lock_refuses_a_second_run_and_is_released_even_after_sigkill() {
    let server = Server::start(Mode::Normal).await;
    let locks = tempfile::tempdir().unwrap();
    let lockfile = locks.path().join("nightly.lock").display().to_string();
    let run = |instance: &str, cmd: &str| {
        Agent::new(&server.url(), "nightly", instance, cmd)
            .set("SP_ALLOW_OVERLAP", "false")
            .set("SP_LOCKFILE", &lockfile)
    };
    let first = run("i1", "echo ready; exec sleep 1000");
    let first_daemon = first.start();
    let r = server.wait_for("i1", "first run ready", SECS(20), |r| r.stdout == b"ready\n").await;
    let first_pgid = r.start.unwrap().pid;

    let second = run("i2", "echo should not run");
    second.start();
    let r = server.complete("i2", SECS(20)).await;
    assert_eq!(r.complete.unwrap().retcode, 254);
    assert!(r.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&r.stderr)
            .contains("LOCKFILE ERROR: job nightly is already running")
    );

    // SIGKILL the first agent: the kernel releases its lock.
    kill(Pid::from_raw(first_daemon as i32), Signal::SIGKILL).unwrap();
    wait_until("the first agent to die", SECS(10), || (!alive(first_daemon)).then_some(())).await;
    let third = run("i3", "echo third");
    third.start();
    let r = server.complete("i3", SECS(20)).await;
    assert_eq!((r.complete.unwrap().retcode, r.stdout.as_slice()), (0, &b"third\n"[..]));

    // The first run's agent is gone but its job is not: status says lost, kill stops the group.
    let status = String::from_utf8(first.control("status", true).stdout).unwrap();
    assert!(status.contains("\"state\":\"lost\""), "{status}");
    let out = first.control("kill", true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(live_in_group(first_pgid).is_empty());
}

#[tokio::test]
async fn local_kill_stops_a_run_through_its_agent_and_status_shows_the_result() {
    let server = Server::start(Mode::Normal).await;
    let agent = Agent::new(&server.url(), "local", "i1", "echo ready; exec sleep 1000");
    agent.start();
    server.wait_for("i1", "ready", SECS(20), |r| r.stdout == b"ready\n").await;
    let status = String::from_utf8(agent.control("status", false).stdout).unwrap();
    assert!(status.contains("\"state\":\"running\""), "{status}");
    let out = agent.control("kill", false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = server.complete("i1", SECS(20)).await;
    assert_eq!(r.complete.unwrap().retcode, 143);
    let status = String::from_utf8(agent.control("status", false).stdout).unwrap();
    assert!(status.contains("\"retcode\":143"), "{status}");
    assert!(!agent.control("kill", false).status.success(), "nothing left to kill");
}
