//! Unit tests on recorded frames: a capture of a 3007.17 master's pub socket (test.ping, 1 KB,
//! 100 KB and 1.5 MB `cmd.run` outputs, a binary `file.read`), and frames packed by Salt's own
//! Python encoder (datetime, constants, an old encoder's raw bytes in str).

use std::collections::BTreeMap;

use bytes::Bytes;
use rmpv::Value;

use super::frame::{Decoded, drain};
use super::*;

const LAB_PUB: &[u8] = include_bytes!("testdata/lab-3007.17-pub.bin");
const SALT_ENCODED: &[u8] = include_bytes!("testdata/salt-encoded-3007.17.bin");

/// Feeds `stream` in chunks of `chunk` bytes; returns events and the number of bad frames.
fn decode(stream: &[u8], chunk: usize) -> (Vec<Event>, usize) {
    let mut decoder = FrameDecoder::new();
    let (mut events, mut bad) = (Vec::new(), 0);
    for piece in stream.chunks(chunk.max(1)) {
        decoder.extend(piece);
        for d in drain(&mut decoder).expect("in sync") {
            match d {
                Decoded::Body(body) => events.push(Event::from_body(body).expect("event decodes")),
                Decoded::Bad(_) => bad += 1,
            }
        }
    }
    assert_eq!(decoder.pending(), 0, "bytes left over");
    (events, bad)
}

/// The frames of a plain stream, one `Vec` each (to rebuild it with prefixes or garbage).
fn split_plain(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let mut w = super::msgpack::Walker::new(rest);
        w.skip().expect("whole frames");
        frames.push(rest[..w.position()].to_vec());
        rest = &rest[w.position()..];
    }
    frames
}

fn prefixed(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn returns(events: &[Event]) -> Vec<&JobReturn> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::JobReturn(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn text(p: &Packed) -> String {
    p.as_text().expect("text").into_owned()
}

#[test]
fn the_lab_capture_decodes_into_typed_events() {
    let (events, bad) = decode(LAB_PUB, 64 * 1024);
    assert_eq!(bad, 0);
    assert!(events.iter().all(|e| e.stamp.is_some()), "every event has a _stamp");
    let new = events.iter().find_map(|e| match &e.kind {
        EventKind::JobNew(n) if n.fun == "test.ping" => Some(n),
        _ => None,
    });
    let new = new.expect("a salt/job/<jid>/new of test.ping");
    assert_eq!(new.minions, vec![MinionId::from("minion-1")]);
    assert_eq!(new.jid.as_str().len(), 20);

    let rets = returns(&events);
    let ping = rets.iter().find(|r| r.fun == "test.ping").expect("ping return");
    assert_eq!((ping.id.as_str(), ping.retcode, ping.success), ("minion-1", Some(0), Some(true)));
    assert_eq!(ping.jid, new.jid);
    assert_eq!(ping.ret.decode().unwrap(), Value::Boolean(true));

    let outputs: Vec<(String, usize)> = rets
        .iter()
        .filter(|r| r.fun == "cmd.run")
        .map(|r| (r.id.to_string(), text(&r.ret).len()))
        .collect();
    assert!(outputs.contains(&("minion-1".into(), 768)), "{outputs:?}");
    assert!(outputs.contains(&("minion-2".into(), 102_400)), "{outputs:?}");

    let trimmed = rets.iter().find(|r| r.id.as_str() == "minion-3").expect("1.5 MB return");
    assert!(trimmed.ret.is_trimmed(), "Salt trims events over max_event_size");
    assert!(!rets.iter().find(|r| r.id.as_str() == "minion-2").unwrap().ret.is_trimmed());

    let binary = rets.iter().find(|r| r.fun == "file.read").expect("binary return");
    match binary.ret.decode().unwrap() {
        Value::Binary(b) => assert!(b.starts_with(b"\x7fELF")),
        other => panic!("expected bin, got {other:?}"),
    }
}

#[test]
fn partial_reads_give_the_same_events() {
    let (whole, _) = decode(LAB_PUB, LAB_PUB.len());
    for chunk in [1, 3, 7, 4096] {
        let (events, bad) = decode(LAB_PUB, chunk);
        assert_eq!(bad, 0);
        let tags: Vec<&str> = events.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, whole.iter().map(|e| e.tag.as_str()).collect::<Vec<_>>(), "chunk {chunk}");
    }
}

#[test]
fn both_framings_are_detected_and_give_the_same_events() {
    let frames = split_plain(LAB_PUB);
    let mut plain = FrameDecoder::new();
    plain.extend(LAB_PUB);
    let _ = drain(&mut plain).unwrap();
    assert_eq!(plain.framing(), Some(Framing::Plain));

    let stream = prefixed(&frames);
    let mut pre = FrameDecoder::new();
    pre.extend(&stream);
    let _ = drain(&mut pre).unwrap();
    assert_eq!(pre.framing(), Some(Framing::Prefixed));

    let (a, _) = decode(LAB_PUB, 5000);
    let (b, bad) = decode(&stream, 5);
    assert_eq!(bad, 0);
    assert_eq!(a.len(), frames.len());
    assert_eq!(
        a.iter().map(|e| &e.tag).collect::<Vec<_>>(),
        b.iter().map(|e| &e.tag).collect::<Vec<_>>()
    );
}

#[test]
fn what_we_fire_decodes_back_in_both_framings() {
    let data = Value::Map(vec![("job".into(), "backup".into()), ("retcode".into(), 0.into())]);
    for framing in [Framing::Plain, Framing::Prefixed] {
        let wire = encode_frame("saltpeter/job/backup/finished", &data, framing);
        let (events, bad) = decode(&wire, 2);
        assert_eq!((events.len(), bad), (1, 0));
        assert_eq!(events[0].tag, "saltpeter/job/backup/finished");
        assert_eq!(events[0].decode_data().unwrap(), data);
        // The body is msgpack bin, as the 3007 puller requires.
        let body_marker = if framing == Framing::Plain { wire[12] } else { wire[16] };
        assert_eq!(body_marker, 0xc4);
    }
}

#[test]
fn salt_ext_types_and_raw_str_bytes_decode() {
    let (events, bad) = decode(SALT_ENCODED, 13);
    assert_eq!((events.len(), bad), (3, 0));

    let dt = events[0].decode_data().unwrap();
    let when = super::request::field(&dt, "when").unwrap();
    assert_eq!(
        ext_datetime(when).unwrap().to_string(),
        "2026-11-22 18:47:29.535071",
        "ext 78 is Salt's datetime"
    );
    assert_eq!(to_json(when), serde_json::json!("2026-11-22T18:47:29.535071"));

    let constant = events[1].decode_data().unwrap();
    let json = to_json(&constant);
    assert_eq!(json["unset"]["__salt_constant__"], "NOT_SET", "ext 79: {json}");
    assert_eq!(events[1].stamp.unwrap().to_rfc3339(), "2026-11-22T18:58:19.617265+00:00");

    let EventKind::JobReturn(r) = &events[2].kind else { panic!("a job return") };
    assert_eq!((r.id.as_str(), r.retcode), ("minion-9", Some(0)));
    match r.ret.decode().unwrap() {
        Value::String(s) => assert_eq!(s.as_bytes(), b"caf\xe9 \xff"),
        other => panic!("expected a str with raw bytes, got {other:?}"),
    }
    assert_eq!(text(&r.ret), "caf\u{fffd} \u{fffd}");
}

#[test]
fn malformed_frames_are_skipped_and_the_stream_goes_on() {
    let frames = split_plain(LAB_PUB);
    let good = |i: usize| frames[i].clone();
    let no_body = vec![0x81, 0xa4, b'h', b'e', b'a', b'd', 0x80];
    let not_a_map = vec![0x05];
    let garbage = vec![0xc1, 0xc1, 0x00, 0x13];
    let not_map_data = encode_frame("x", &Value::Nil, Framing::Plain);

    let plain = [good(0), no_body.clone(), good(1), not_a_map, garbage, good(2)].concat();
    let (events, bad) = decode(&plain, 3);
    assert_eq!(events.len(), 3, "the three good frames");
    assert!(bad >= 3, "bad frames reported: {bad}");

    let stream = prefixed(&[good(0), no_body, vec![0xc1; 9], good(1)]);
    let (events, bad) = decode(&stream, 1);
    assert_eq!((events.len(), bad), (2, 2));

    // A body whose data is not a map, or with no `\n\n`, is refused by the event decoder.
    let mut d = FrameDecoder::new();
    d.extend(&not_map_data);
    let Decoded::Body(body) = d.next().unwrap().unwrap() else { panic!("a body") };
    assert!(matches!(Event::from_body(body), Err(EventError::BadData { .. })));
    assert_eq!(
        Event::from_body(Bytes::from_static(b"no tag end")).unwrap_err(),
        EventError::NoTagEnd
    );
}

#[test]
fn an_absurd_length_prefix_is_a_desync() {
    let mut d = FrameDecoder::new();
    d.extend(&[0x7f, 0xff, 0xff, 0xff, 0x82]);
    assert!(d.next().is_err());
}

#[test]
fn tags_become_typed_events() {
    let check = |tag: &str, data: Value| {
        let mut body = format!("{tag}\n\n").into_bytes();
        rmpv::encode::write_value(&mut body, &data).unwrap();
        Event::from_body(Bytes::from(body)).unwrap().kind
    };
    let map = |pairs: &[(&str, Value)]| {
        Value::Map(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
    };
    let ids = |v: &[&str]| Value::Array(v.iter().map(|s| Value::from(*s)).collect());
    assert!(matches!(
        check("salt/run/20261122190954866944/ret", map(&[("return", ids(&["m1"])), ("success", true.into())])),
        EventKind::RunReturn(r) if r.jid.as_str() == "20261122190954866944" && r.success == Some(true)
    ));
    assert!(matches!(
        check("salt/auth", map(&[("id", "m1".into()), ("act", "accept".into()), ("result", true.into())])),
        EventKind::Auth(a) if a.id.as_str() == "m1" && a.act == "accept"
    ));
    assert!(matches!(
        check("minion_start", map(&[("id", "m2".into())])),
        EventKind::MinionStart { id } if id.as_str() == "m2"
    ));
    assert!(matches!(
        check("salt/presence/change", map(&[("new", ids(&["a"])), ("lost", ids(&["b", "c"]))])),
        EventKind::Presence(p) if p.new.len() == 1 && p.lost.len() == 2
    ));
    // A minion id with a slash, and a big jid that stays a string.
    assert!(matches!(
        check("salt/job/20261122190935152817/ret/web/1", map(&[("retcode", (-1).into())])),
        EventKind::JobReturn(r) if r.id.as_str() == "web/1" && r.retcode == Some(-1) && r.failed()
    ));
    assert!(matches!(check("salt/key", map(&[])), EventKind::Other));
}

#[test]
fn nodegroups_expand_like_salts_cli() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(
        "web: 'G@role:web'\nids: [m1, m2]\nre: ['m[12]']\nboth: 'N@web or N@ids'\nloop: 'N@loop and m1'",
    )
    .unwrap();
    let groups: BTreeMap<String, Nodegroup> = yaml
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), Nodegroup::from_yaml(v).unwrap()))
        .collect();
    let cases = [
        ("web", "G@role:web"),
        ("ids", "L@m1,m2"),
        ("re", "E@m[12]"),
        ("both", "( G@role:web ) or ( L@m1,m2 )"),
    ];
    for (name, want) in cases {
        assert_eq!(expand_nodegroup(name, &groups).unwrap(), want, "{name}");
    }
    assert!(matches!(expand_nodegroup("loop", &groups), Err(NodegroupError::Cycle(_))));
    assert!(matches!(expand_nodegroup("nope", &groups), Err(NodegroupError::Unknown(_))));
    assert_eq!(expand_compound("N@web and not m3", &groups).unwrap(), "( G@role:web ) and not m3");
}

#[test]
fn the_master_config_is_read_with_its_includes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("master.d")).unwrap();
    let main = root.join("master");
    std::fs::write(&main, format!("root_dir: {}\nuser: salt\nret_port: 5506\n", root.display()))
        .unwrap();
    std::fs::write(root.join("master.d/10-a.conf"), "nodegroups:\n  web: 'G@role:web'\n").unwrap();
    std::fs::write(root.join("master.d/20-b.conf"), "nodegroups:\n  db: [m2]\ninterface: '::'\n")
        .unwrap();
    std::fs::write(root.join("master.d/ignored.txt"), "ret_port: 1\n").unwrap();
    let c = MasterConfig::load(&main).unwrap();
    assert_eq!(c.sock_dir, root.join("var/run/salt/master"), "root_dir-relative default");
    assert_eq!(
        c.event_pub,
        IpcEndpoint::Unix(root.join("var/run/salt/master/master_event_pub.ipc"))
    );
    assert_eq!(c.cachedir, root.join("var/cache/salt/master"));
    assert_eq!(c.request_endpoint, "tcp://[::1]:5506");
    assert_eq!(c.user.as_deref(), Some("salt"));
    assert_eq!(c.nodegroups.keys().collect::<Vec<_>>(), ["db", "web"], "dicts merge across files");

    std::fs::write(
        root.join("master.d/30-tcp.conf"),
        "ipc_mode: tcp\ntcp_master_pub_port: 4600\nsock_dir: /s\n",
    )
    .unwrap();
    let c = MasterConfig::load(&main).unwrap();
    assert_eq!(c.event_pub, IpcEndpoint::Tcp("127.0.0.1:4600".into()));
    assert_eq!(c.event_pull, IpcEndpoint::Tcp("127.0.0.1:4513".into()));
    assert_eq!(c.sock_dir, root.join("s"), "absolute paths go under root_dir too, as in Salt");

    let missing = root.join("nope/master");
    let err = MasterConfig::load(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()) && err.contains("master's user"), "{err}");
}

#[test]
fn globs_match_tags_like_fnmatch() {
    for (glob, tag, want) in [
        ("salt/job/*/ret/*", "salt/job/1/ret/m1", true),
        ("salt/job/*", "salt/run/1/ret", false),
        ("saltpeter/?ob", "saltpeter/job", true),
        ("*", "", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXbY", false),
    ] {
        assert_eq!(glob_match(glob, tag), want, "{glob} vs {tag}");
    }
}

#[test]
fn the_walker_reads_every_integer_width() {
    for n in [0i64, 127, 128, 65_535, 1 << 40, -1, -32, -33, -129, -40_000, i64::MIN] {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &Value::from(n)).unwrap();
        let mut w = super::msgpack::Walker::new(&buf);
        assert_eq!(w.opt_int().unwrap(), Some(n));
    }
    let mut deep = vec![0x91; 600];
    deep.push(0xc0);
    assert!(super::msgpack::Walker::new(&deep).skip().is_err(), "nesting is bounded");
}
