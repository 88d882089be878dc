//! Round trips for every message, and the original wrapper's and server's exact frames (as
//! `saltpeter==0.9.30` writes them) parsing into the same types: version 0 is a subset.
#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use std::collections::BTreeMap;
use std::time::Duration;

use saltpeter_protocol::*;

fn run() -> RunKey {
    RunKey {
        job_name: "backup".into(),
        job_instance: "backup_1699000000".into(),
        machine: "web1".into(),
    }
}

fn ts() -> Timestamp {
    Timestamp::parse("2025-11-04T10:00:00.250000+00:00").unwrap()
}

fn agent_round_trip(msg: AgentMessage) {
    let text = msg.encode();
    assert_eq!(AgentMessage::decode(&text).unwrap(), msg, "{text}");
}

fn server_round_trip(msg: ServerMessage) {
    let text = msg.encode();
    assert_eq!(ServerMessage::decode(&text).unwrap(), msg, "{text}");
}

#[test]
fn every_agent_message_round_trips() {
    let connect = Connect {
        target: HelloTarget::Run { job_name: "backup".into(), job_instance: "i1".into() },
        machine: "web1".into(),
        timestamp: ts(),
        protocol: Some(PROTOCOL_VERSION),
        agent_version: Some("0.1.0".into()),
        token: Some(Token::new("s3cret")),
    };
    agent_round_trip(AgentMessage::Connect(connect.clone()));
    agent_round_trip(AgentMessage::Connect(Connect {
        target: HelloTarget::Dispatch { dispatch: DispatchId::new("d-42") },
        ..connect
    }));
    agent_round_trip(AgentMessage::Start(Start {
        run: run(),
        timestamp: ts(),
        pid: 4242,
        version: "0.1.0".into(),
    }));
    agent_round_trip(AgentMessage::Heartbeat(Heartbeat { run: run(), timestamp: ts() }));
    let mut out = Output::new(run(), Stream::Stderr, Seq(7), b"\xffbinary\r\n");
    out.timestamp = ts();
    assert_eq!(out.encoding, Some(Encoding::Base64));
    assert_eq!(out.payload().to_bytes().unwrap(), b"\xffbinary\r\n");
    agent_round_trip(AgentMessage::Output(out));
    agent_round_trip(AgentMessage::Complete(Complete {
        run: run(),
        timestamp: ts(),
        retcode: 143,
        seq: Some(Seq(8)),
        reason: Some(EndReason::Killed),
        dropped_bytes: Some(10),
    }));
    agent_round_trip(AgentMessage::Error(AgentError {
        run: run(),
        timestamp: ts(),
        error: "boom".into(),
    }));
    agent_round_trip(AgentMessage::Killed(Killed { run: run(), timestamp: ts() }));
    agent_round_trip(AgentMessage::SyncRequest(SyncRequest {
        run: run(),
        timestamp: ts(),
        last_acked_seq: LastSeq(None),
        next_seq: Seq(0),
    }));
    agent_round_trip(AgentMessage::Armed(Armed {
        run: run(),
        timestamp: ts(),
        dispatch: DispatchId::new("d-42"),
        scheduled: ts(),
    }));
}

#[test]
fn every_server_message_round_trips() {
    server_round_trip(ServerMessage::Ack(Ack {
        ack_type: AckType::Output,
        seq: Some(Seq(3)),
        job_name: Some("backup".into()),
        job_instance: Some("i1".into()),
        machine: Some("web1".into()),
        protocol: None,
        timestamp: Some(ts()),
    }));
    server_round_trip(ServerMessage::Nack(Nack {
        nack_type: NackType::OutOfOrder,
        expected_seq: Seq(2),
        received_seq: Some(Seq(5)),
        job_instance: None,
        timestamp: None,
    }));
    server_round_trip(ServerMessage::SyncResponse(SyncResponse {
        last_seq: LastSeq(Some(Seq(4))),
        job_instance: Some("i1".into()),
        timestamp: None,
    }));
    server_round_trip(ServerMessage::Kill(Kill {
        run: run(),
        timestamp: Some(ts()),
        reason: Some(KillReason::Timeout),
    }));
    server_round_trip(ServerMessage::Error(ServerError {
        code: Some(ServerErrorCode::Unauthorized),
        message: Some("bad token".into()),
        job_instance: None,
        timestamp: None,
    }));
    server_round_trip(ServerMessage::Manifest(Manifest {
        dispatch: DispatchId::new("d-42"),
        machine: "web1".into(),
        runs: vec![ManifestEntry {
            job_name: "backup".into(),
            job_instance: "i1".into(),
            command: "echo hi".into(),
            user: Some("nobody".into()),
            cwd: Some("/tmp".into()),
            env: BTreeMap::from([("A".into(), "1".into())]),
            timeout: Some(Duration::from_secs(60)),
            scheduled: Some(ts()),
            allow_overlap: false,
            lockfile: None,
            output_interval_ms: Some(100),
        }],
        timestamp: Some(ts()),
    }));
}

/// Frames exactly as the original wrapper (`saltpeter/wrapper.py`, 0.9.30) builds them.
#[test]
fn the_original_wrappers_frames_parse() {
    let base = r#""job_name": "backup", "job_instance": "backup_1699000000", "machine": "web1", "timestamp": "2025-11-04T10:00:00.250000+00:00""#;
    let frames = [
        format!(r#"{{"type": "connect", {base}}}"#),
        format!(r#"{{"type": "start", {base}, "pid": 12345, "version": "0.9.30"}}"#),
        format!(r#"{{"type": "heartbeat", {base}}}"#),
        format!(
            r#"{{"type": "output", {base}, "stream": "stdout", "data": "line\r\n", "seq": 0}}"#
        ),
        format!(r#"{{"type": "sync_request", {base}, "last_acked_seq": -1, "next_seq": 1}}"#),
        format!(r#"{{"type": "complete", {base}, "retcode": -15, "seq": 1}}"#),
        format!(r#"{{"type": "error", {base}, "error": "Connection failed"}}"#),
        format!(r#"{{"type": "killed", {base}}}"#),
    ];
    let parsed: Vec<AgentMessage> = frames
        .iter()
        .map(|f| AgentMessage::decode(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    let AgentMessage::Connect(c) = &parsed[0] else { panic!("{:?}", parsed[0]) };
    assert_eq!(c.protocol, None);
    assert_eq!(
        c.target,
        HelloTarget::Run { job_name: "backup".into(), job_instance: "backup_1699000000".into() }
    );
    let AgentMessage::Output(o) = &parsed[3] else { panic!() };
    assert_eq!(o.payload().to_bytes().unwrap(), b"line\r\n");
    let AgentMessage::SyncRequest(s) = &parsed[4] else { panic!() };
    assert_eq!(s.last_acked_seq, LastSeq(None));
    let AgentMessage::Complete(c) = &parsed[5] else { panic!() };
    assert_eq!((c.retcode, c.seq, c.reason), (-15, Some(Seq(1)), None));
}

/// Frames exactly as the original server (`machines_endpoint.py`, 0.9.30) sends them.
#[test]
fn the_original_servers_frames_parse() {
    let t = r#""timestamp": "2025-11-04T10:00:00.250000+00:00""#;
    let frames = [
        format!(r#"{{"type": "ack", "ack_type": "connect", {t}}}"#),
        format!(r#"{{"type": "ack", "ack_type": "output", "seq": 4, {t}}}"#),
        format!(r#"{{"type": "nack", "nack_type": "out_of_order", "expected_seq": 2, "received_seq": 5, {t}}}"#),
        format!(r#"{{"type": "sync_response", "last_seq": -1, {t}}}"#),
        r#"{"type": "error", "code": "JOB_NOT_FOUND", "message": "Job no longer exists on server (stopped or restarted)"}"#.to_owned(),
        format!(r#"{{"type": "kill", "job_name": "backup", "job_instance": "i1", "machine": "web1", {t}}}"#),
    ];
    for f in &frames {
        ServerMessage::decode(f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let ServerMessage::Error(e) = ServerMessage::decode(&frames[4]).unwrap() else { panic!() };
    assert_eq!(e.code, Some(ServerErrorCode::JobNotFound));
}

/// What we send is readable by the original server: the fields it reads keep their names.
#[test]
fn our_frames_carry_the_originals_fields() {
    let out = Output::new(run(), Stream::Stdout, Seq(0), b"hi\n");
    let v: serde_json::Value = serde_json::from_str(&AgentMessage::Output(out).encode()).unwrap();
    for key in ["type", "job_name", "job_instance", "machine", "timestamp", "stream", "data", "seq"]
    {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["data"], "hi\n");
    assert!(v.get("encoding").is_none());
    assert!(v["timestamp"].as_str().unwrap().ends_with("+00:00"));
}

#[test]
fn garbage_and_oversized_frames_are_errors() {
    for bad in
        ["", "null", "[]", "{}", r#"{"type":"nope"}"#, r#"{"type":"kill"}"#, r#"{"type":"ack"}"#]
    {
        assert!(ServerMessage::decode(bad).is_err(), "{bad}");
    }
    let huge =
        format!(r#"{{"type":"ack","ack_type":"connect","pad":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
    assert!(matches!(ServerMessage::decode(&huge), Err(DecodeError::TooLarge { .. })));
    // Unknown fields and unknown ack kinds are tolerated, for newer sidecars.
    let newer = r#"{"type":"ack","ack_type":"something_new","extra":1}"#;
    let ServerMessage::Ack(a) = ServerMessage::decode(newer).unwrap() else { panic!() };
    assert_eq!(a.ack_type, AckType::Unknown);
}

#[test]
fn timestamps_accept_python_forms() {
    for text in
        ["2025-11-04T10:00:00+00:00", "2025-11-04T10:00:00.5Z", "2025-11-04T10:00:00.123456"]
    {
        assert!(Timestamp::parse(text).is_some(), "{text}");
    }
    assert!(Timestamp::parse("yesterday").is_none());
    assert_eq!(ts().to_string(), "2025-11-04T10:00:00.250000+00:00");
}

#[test]
fn manifest_defaults_match_the_environment_contract() {
    let m = r#"{"type":"manifest","dispatch":"d","machine":"m","runs":[{"job_name":"j","job_instance":"i","command":"true","timeout":0}]}"#;
    let ServerMessage::Manifest(m) = ServerMessage::decode(m).unwrap() else { panic!() };
    let e = &m.runs[0];
    assert!(e.allow_overlap);
    assert_eq!(e.timeout, None);
    assert!(e.env.is_empty());
}

#[test]
fn the_documented_binary_frame_decodes_and_encodes_identically() {
    // docs/protocol.md, "Binary output frames".
    let header = br#"{"job_name":"backup","job_instance":"backup_1763892000","machine":"web1","timestamp":"2026-11-23T10:00:01.000000+00:00","stream":"stdout","seq":3}"#;
    let mut frame = vec![0x01, 0x00, 0x00, 0x00, 0x92];
    frame.extend_from_slice(header);
    frame.extend_from_slice(b"y\ny\n");
    assert_eq!(frame.len(), 155);
    let decoded = BinaryOutput::decode(&frame).unwrap();
    assert_eq!(decoded.data, b"y\ny\n");
    assert_eq!((decoded.header.seq, decoded.header.stream), (Seq(3), Stream::Stdout));
    assert_eq!(decoded.header.run.job_instance.as_str(), "backup_1763892000");
    assert_eq!(decoded.header.encode_frame(b"y\ny\n"), frame);
}
