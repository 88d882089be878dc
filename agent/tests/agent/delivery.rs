//! Output and results arrive whole and once: detaching, bulk output, reconnects, lost acks.

use std::io::Write as _;

use saltpeter_protocol::EndReason;

use crate::server::{Mode, Server};
use crate::{Agent, SECS, alive, wait_until};

#[tokio::test]
async fn detaches_at_once_while_the_job_keeps_running() {
    let server = Server::start(Mode::Normal).await;
    let marker = tempfile::tempdir().unwrap();
    let go = marker.path().join("go");
    let cmd =
        format!("echo started; while [ ! -e {} ]; do sleep 0.05; done; echo done", go.display());
    let agent = Agent::new(&server.url(), "detach", "i1", &cmd);
    let daemon = agent.start();
    // The parent has returned; the job is blocked on the marker, so it cannot have ended.
    assert!(alive(daemon), "the daemon runs on after the parent exits");
    let r = server.wait_for("i1", "first output", SECS(20), |r| r.stdout == b"started\n").await;
    assert!(r.complete.is_none());
    std::fs::write(&go, "").unwrap();
    let r = server.complete("i1", SECS(20)).await;
    assert_eq!(r.stdout, b"started\ndone\n");
    let complete = r.complete.unwrap();
    assert_eq!((complete.retcode, complete.reason), (0, Some(EndReason::Exited)));
    let start = r.start.expect("start arrived");
    assert_eq!(start.version, env!("CARGO_PKG_VERSION"));
    wait_until("the daemon to exit after delivering", SECS(10), || (!alive(daemon)).then_some(()))
        .await;
}

#[tokio::test]
async fn a_hundred_megabytes_arrive_complete_in_order_byte_for_byte() {
    let server = Server::start(Mode::Normal).await;
    let data_dir = tempfile::tempdir().unwrap();
    let file = data_dir.path().join("data");
    // Binary (invalid UTF-8), text with \r and multibyte characters split across reads.
    let mut data = Vec::with_capacity(100_000_000);
    let mut x: u32 = 12345;
    while data.len() < 100_000_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if (x >> 20).is_multiple_of(3) {
            data.extend_from_slice("progress 42%\r€😀 line\n".as_bytes());
        } else {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(100_000_000);
    std::fs::File::create(&file).unwrap().write_all(&data).unwrap();
    let cmd = format!("cat {0}; cat {0} | head -c 1000000 >&2", file.display());
    let agent = Agent::new(&server.url(), "bulk", "i1", &cmd);
    agent.start();
    let r = server.complete("i1", SECS(300)).await;
    assert_eq!(r.stdout.len(), data.len());
    assert!(r.stdout == data, "stdout differs from the file");
    assert_eq!(r.stderr, data[..1_000_000]);
    assert_eq!(r.complete.unwrap().retcode, 0);
}

/// Prints 300 numbered lines over ~3 s.
const COUNTER: &str =
    "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done";

fn counted_lines() -> Vec<u8> {
    (0..300).map(|i| format!("line {i}\n")).collect::<String>().into_bytes()
}

#[tokio::test]
async fn a_server_restart_mid_job_loses_and_duplicates_nothing() {
    let mut server = Server::start(Mode::Normal).await;
    let agent = Agent::new(&server.url(), "restart", "i1", COUNTER);
    agent.start();
    server.wait_for("i1", "some output", SECS(20), |r| r.stdout.len() > 100).await;
    server.stop();
    let before = server.run("i1").stdout.len();
    // Down while the job keeps printing: it is spooled, never blocked, and it ends.
    wait_until("the job to end while the server is down", SECS(30), || {
        let out = agent.control("status", true);
        String::from_utf8_lossy(&out.stdout).contains("\"finished\"").then_some(())
    })
    .await;
    server.restart().await;
    let r = server.complete("i1", SECS(60)).await;
    assert!(before < r.stdout.len());
    assert_eq!(String::from_utf8(r.stdout).unwrap(), String::from_utf8(counted_lines()).unwrap());
    assert_eq!(r.complete.unwrap().retcode, 0);
    assert!(server.state.lock().unwrap().connects.len() >= 2, "the agent reconnected");
}

#[tokio::test]
async fn with_the_server_down_for_the_whole_job_the_result_arrives_when_it_returns() {
    let mut server = Server::down(Mode::Normal).await;
    let agent = Agent::new(&server.url(), "offline", "i1", "echo out; echo err >&2; exit 3");
    agent.start();
    wait_until("the job to end while the server is down", SECS(20), || {
        let out = agent.control("status", true);
        String::from_utf8_lossy(&out.stdout).contains("\"finished\"").then_some(())
    })
    .await;
    server.restart().await;
    let r = server.complete("i1", SECS(60)).await;
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    assert_eq!(r.complete.unwrap().retcode, 3);
    // The agent records the delivery once the ack reaches it.
    wait_until("status to show the result delivered", SECS(10), || {
        let status = String::from_utf8(agent.control("status", true).stdout).unwrap();
        status.contains("\"delivered\":true").then_some(())
    })
    .await;
}

#[tokio::test]
async fn lost_acks_are_recovered_without_duplicates_reaching_the_record() {
    let server = Server::start(Mode::LoseAcks).await;
    let agent = Agent::new(&server.url(), "lossy", "i1", COUNTER);
    agent.start();
    let r = server.complete("i1", SECS(60)).await;
    assert_eq!(r.stdout, counted_lines());
    assert_eq!(r.complete.unwrap().retcode, 0);
}

#[tokio::test]
async fn garbage_from_the_server_never_stops_the_agent() {
    let server = Server::start(Mode::Garbage).await;
    let agent = Agent::new(&server.url(), "garbage", "i1", "printf 'a\\r\\nb'; printf oops >&2");
    agent.start();
    let r = server.complete("i1", SECS(60)).await;
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice()), (&b"a\r\nb"[..], &b"oops"[..]));
    // The agent reads the garbage (queued before the acks) and still takes its result's ack.
    wait_until("the agent to record the delivery", SECS(20), || {
        let status = String::from_utf8(agent.control("status", true).stdout).unwrap();
        status.contains("\"delivered\":true").then_some(())
    })
    .await;
    let log = agent.log();
    assert!(log.matches("Ignoring a bad frame").count() >= 6, "{log}");
}
