//! Protocol version 2: output as binary frames, byte for byte, resent after a reconnect; a
//! sidecar of version 1 gets JSON text from the same agent.

use std::io::Write as _;

use crate::server::{Mode, Server};
use crate::{Agent, SECS, wait_until};

/// Bytes no text encoding would carry as they are: invalid UTF-8, NULs, `\r`, split characters.
fn awkward(len: usize, seed: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x = seed;
    while data.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if (x >> 20).is_multiple_of(4) {
            data.extend_from_slice("y\r\n€😀\0".as_bytes());
        } else {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(len);
    data
}

fn write(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    path
}

#[tokio::test]
async fn binary_output_arrives_byte_for_byte_and_is_resent_after_a_reconnect() {
    // The first connection stores output but acknowledges none of it, then drops.
    let mut server = Server::start(Mode::MuteFirst).await;
    let files = tempfile::tempdir().unwrap();
    // Part one fits the agent's window (4 MiB), so all of it is sent before any ack.
    let (one, two, err) = (awkward(1_000_000, 1), awkward(30_000_000, 2), awkward(300_000, 3));
    let (p1, p2, pe) = (
        write(files.path(), "1", &one),
        write(files.path(), "2", &two),
        write(files.path(), "e", &err),
    );
    let go = files.path().join("go");
    let cmd = format!(
        "cat {}; while [ ! -e {} ]; do sleep 0.02; done; cat {}; cat {} >&2",
        p1.display(),
        go.display(),
        p2.display(),
        pe.display()
    );
    let agent = Agent::new(&server.url(), "binary", "i1", &cmd);
    agent.start();
    // (The agent holds back up to 3 bytes of an unfinished UTF-8 character at a read's end.)
    server.wait_for("i1", "part one", SECS(30), |r| r.stdout.len() + 3 >= one.len()).await;
    server.restart().await;
    std::fs::write(&go, "").unwrap();
    let r = server.complete("i1", SECS(300)).await;
    assert!(r.stdout.len() == one.len() + two.len(), "stdout: {} bytes", r.stdout.len());
    assert!(r.stdout[..one.len()] == one[..] && r.stdout[one.len()..] == two[..]);
    assert!(r.stderr == err, "stderr differs");
    assert!(r.duplicates > 0, "the unacknowledged chunks were sent again");
    assert_eq!(r.text_frames, 0, "every chunk went as a binary frame");
    assert!(r.binary_frames > 0);
    assert_eq!(r.complete.unwrap().retcode, 0);
    let connects = server.state.lock().unwrap().connects.clone();
    assert!(connects.len() >= 2, "the agent reconnected");
    assert!(connects.iter().all(|c| c.protocol == Some(2)));
    wait_until("the agent to record the delivery", SECS(20), || {
        let status = String::from_utf8(agent.control("status", true).stdout).unwrap();
        status.contains("\"delivered\":true").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_version_1_sidecar_gets_the_same_bytes_as_json_text() {
    let server = Server::start(Mode::Version1).await;
    let files = tempfile::tempdir().unwrap();
    let mut data = awkward(3_000_000, 4);
    let path = write(files.path(), "d", &data);
    // Ends inside a character: the held-back bytes still go when the stream ends.
    let cmd = format!("cat {}; printf '\\342\\202'", path.display());
    data.extend_from_slice(b"\xe2\x82");
    let agent = Agent::new(&server.url(), "v1", "i1", &cmd);
    agent.start();
    let r = server.complete("i1", SECS(120)).await;
    assert!(r.stdout == data, "stdout differs ({} bytes)", r.stdout.len());
    assert_eq!(r.binary_frames, 0);
    assert!(r.text_frames > 0);
}
