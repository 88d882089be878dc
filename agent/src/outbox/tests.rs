use std::time::{Duration, Instant};

use saltpeter_protocol::{AgentMessage, EndReason, RunKey, Seq, Stream};

use super::*;
use crate::rundir::RunDir;
use crate::spool::Spool;

fn outbox(dir: &std::path::Path) -> Outbox {
    let run = RunKey { job_name: "j".into(), job_instance: "i".into(), machine: "m".into() };
    let rundir = RunDir { path: dir.to_owned() };
    let spool = Spool::create(dir.join("spool"), 64 << 20).unwrap();
    Outbox::new(run, rundir, spool, Duration::from_secs(3600))
}

/// Every message sendable now, as (kind, seq, bytes).
fn drain(o: &mut Outbox) -> Vec<(&'static str, Option<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = o.next_message(Instant::now()).unwrap() {
        out.push(match m {
            Outgoing::Message(AgentMessage::Start(_)) => ("start", None, Vec::new()),
            Outgoing::Output { header, bytes } => ("output", Some(header.seq.0), bytes),
            Outgoing::Message(AgentMessage::Complete(c)) => {
                ("complete", c.seq.map(|s| s.0), Vec::new())
            }
            other @ Outgoing::Message(_) => panic!("{other:?}"),
        });
    }
    out
}

#[test]
fn output_waits_for_the_interval_unless_a_chunk_is_full_or_the_run_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = outbox(dir.path());
    o.started(42);
    o.append(Stream::Stdout, b"partial").unwrap();
    assert_eq!(drain(&mut o), [("start", None, Vec::new())]);
    o.finish(0, EndReason::Exited).unwrap();
    assert_eq!(
        drain(&mut o),
        [("output", Some(0), b"partial".to_vec()), ("complete", Some(1), Vec::new())]
    );
}

#[test]
fn unacknowledged_messages_go_again_identically_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = outbox(dir.path());
    o.started(42);
    for _ in 0..3 {
        o.append(Stream::Stdout, &vec![b'x'; 100 * 1024]).unwrap();
    }
    o.append(Stream::Stderr, b"err").unwrap();
    o.finish(1, EndReason::Exited).unwrap();
    let first = drain(&mut o);
    assert_eq!(
        first.iter().map(|m| m.1).collect::<Vec<_>>(),
        [None, Some(0), Some(1), Some(2), Some(3), Some(4)]
    );
    o.ack_start();
    assert!(!o.ack(Seq(0)).unwrap());
    // New output after the first send must not change what seq 1 and 2 carried.
    o.rewind();
    let again = drain(&mut o);
    assert_eq!(again, first[2..]);
    assert!(o.ack(Seq(4)).unwrap(), "the complete's ack delivers the run");
    assert!(o.is_settled());
    assert!(drain(&mut o).is_empty());
    assert!(!dir.path().join("spool").exists(), "the spool is removed once delivered");
}

#[test]
fn a_nack_resends_from_the_expected_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = outbox(dir.path());
    o.started(1);
    o.append(Stream::Stdout, b"a").unwrap();
    o.append(Stream::Stderr, b"b").unwrap();
    o.append(Stream::Stdout, b"c").unwrap();
    o.finish(0, EndReason::Exited).unwrap();
    let first = drain(&mut o);
    assert_eq!(first.len(), 5);
    o.nack(Seq(1)).unwrap();
    assert_eq!(drain(&mut o), first[2..]);
}

#[test]
fn the_window_bounds_what_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = outbox(dir.path());
    for _ in 0..(WINDOW_MESSAGES + 10) {
        o.append(Stream::Stdout, &vec![b'y'; saltpeter_protocol::MAX_OUTPUT_CHUNK]).unwrap();
    }
    let sent = drain(&mut o);
    assert!(sent.len() <= WINDOW_MESSAGES && !sent.is_empty(), "{}", sent.len());
    assert!(
        sent.iter().map(|m| m.2.len()).sum::<usize>()
            <= WINDOW_BYTES + saltpeter_protocol::MAX_OUTPUT_CHUNK
    );
    o.ack(Seq(sent.len() as u64 - 1)).unwrap();
    assert!(!drain(&mut o).is_empty(), "acks open the window again");
}
