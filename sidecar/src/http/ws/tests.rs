//! `/ws` over a real socket: the router served on 127.0.0.1:0, a tokio-tungstenite client with
//! `?token=`. Our typed stream (hello, watch_run → run and output) and the original UI's
//! messages (config on connect, subscribe → output_chunk and details, getTimeline, status).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::http::tests::{OPERATOR, VIEWER, api, result, run};
use crate::store::{RunStatus, Stream, Write};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(token: &str) -> (Client, crate::http::tests::Api) {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (client, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.unwrap();
    (client, api)
}

/// The next message that `accept` takes, within 10 s.
async fn next_where(client: &mut Client, accept: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let Some(Ok(Message::Text(text))) = client.next().await else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if accept(&v) {
                return v;
            }
        }
    })
    .await
    .expect("the expected message within 10 s")
}

fn output(instance: &str, minion: &str, offset: u64, data: &[u8]) -> Write {
    Write::Output {
        instance: instance.into(),
        minion: minion.into(),
        seq: None,
        offset,
        stream: Stream::Stdout,
        data: data.to_vec(),
        cap: 1 << 20,
    }
}

#[tokio::test]
async fn a_watched_run_streams_its_output_and_status() {
    let (mut client, api) = connect(VIEWER).await;
    let mut writes = run("r1", "backup", 0, RunStatus::Running);
    writes.push(result("r1", "db1", None));
    writes.push(output("r1", "db1", 0, b"\x1b[32mfirst\x1b[0m\n"));
    api.seed(writes).await;
    client.send(Message::Text(json!({"type": "hello"}).to_string().into())).await.unwrap();
    client
        .send(Message::Text(json!({"type": "watch_run", "instance": "r1"}).to_string().into()))
        .await
        .unwrap();
    let first = next_where(&mut client, |v| v["type"] == "output").await;
    assert_eq!((first["minion"].as_str(), first["offset"].as_u64()), (Some("db1"), Some(0)));
    assert_eq!(first["data"], "\x1b[32mfirst\x1b[0m\n");
    let run_msg = next_where(&mut client, |v| v["type"] == "run").await;
    assert_eq!(run_msg["run"]["status"], "running");
    // More output arrives as it is stored, from where the last message ended.
    api.seed(vec![output("r1", "db1", 15, b"second\n")]).await;
    let more = next_where(&mut client, |v| v["type"] == "output").await;
    assert_eq!((more["offset"].as_u64(), more["data"].as_str()), (Some(15), Some("second\n")));
    api.seed(vec![
        result("r1", "db1", Some(0)),
        Write::UpdateRun {
            instance: "r1".into(),
            status: RunStatus::Succeeded,
            reason: String::new(),
            started: None,
            finished: Some(chrono::Utc::now()),
        },
    ])
    .await;
    let done =
        next_where(&mut client, |v| v["type"] == "run" && v["run"]["status"] == "succeeded").await;
    assert_eq!(done["run"]["results"][0]["retcode"], 0);
    // Our UI said hello: nothing of the original protocol comes after.
    client.send(Message::Text("{\"nonsense\": 1}".into())).await.unwrap();
    let err = next_where(&mut client, |v| v["type"] == "error" || v["type"] == "status").await;
    assert_eq!(err["type"], "error");
}

#[tokio::test]
async fn the_original_uis_messages_still_work() {
    let (mut client, api) = connect(OPERATOR).await;
    let config = next_where(&mut client, |v| v["type"] == "config").await;
    assert_eq!(config["config"]["crons"]["backup"]["env"]["DB_PASSWORD"], "<redacted>");
    assert!(!config.to_string().contains("hunter2"));
    let status = next_where(&mut client, |v| v["type"] == "status").await;
    assert!(status["running"].is_object());

    let mut writes = run("r1", "backup", 0, RunStatus::Running);
    writes.push(result("r1", "db1", None));
    writes.push(output("r1", "db1", 0, b"hello\n"));
    api.seed(writes).await;
    client.send(Message::Text(json!({"subscribe": "backup"}).to_string().into())).await.unwrap();
    let chunk = next_where(&mut client, |v| v["type"] == "output_chunk").await;
    assert_eq!(chunk["cron"], "backup");
    assert_eq!(chunk["machine"], "db1");
    assert_eq!(chunk["chunk"], "hello\n");
    assert_eq!(chunk["position"], 0);
    assert_eq!(chunk["is_complete"], false);
    let details = next_where(&mut client, |v| v["type"] == "details").await;
    assert_eq!(details["data"]["results"]["db1"]["output_length"], 6);

    let start = (chrono::Utc::now() - chrono::Duration::days(3650)).to_rfc3339();
    let end = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let ask = json!({"getTimeline": {"start_date": start, "end_date": end, "id": 7}});
    client.send(Message::Text(ask.to_string().into())).await.unwrap();
    let timeline = next_where(&mut client, |v| v.get("timeline").is_some()).await;
    assert_eq!(timeline["timeline"]["id"], 7);
    assert_eq!(timeline["timeline"]["content"][0]["job_instance"], "r1");

    // Run now through the original message: audited with the token's name.
    client.send(Message::Text(json!({"run": "backup"}).to_string().into())).await.unwrap();
    crate::http::tests::wait_for_audit(&api, "run").await;
}

/// Output messages of `instance` until `total` bytes, checking each follows on from the last
/// (no gap, no repeat); answers how many messages it took.
async fn read_all(client: &mut Client, total: u64) -> usize {
    let mut at = 0;
    let mut messages = 0;
    while at < total {
        let v = next_where(client, |v| v["type"] == "output").await;
        assert_eq!(v["offset"].as_u64(), Some(at), "a gap or a repeat at {at}");
        at += v["data"].as_str().unwrap().len() as u64;
        messages += 1;
    }
    assert_eq!(at, total);
    messages
}

#[tokio::test]
async fn watchers_share_a_feed_a_stalled_one_holds_nobody_and_a_late_one_catches_up() {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let watch = move || async move {
        let url = format!("ws://{addr}/ws?token={VIEWER}");
        let (mut c, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        c.send(Message::Text(json!({"type": "hello"}).to_string().into())).await.unwrap();
        let w = json!({"type": "watch_run", "instance": "r1"}).to_string();
        c.send(Message::Text(w.into())).await.unwrap();
        c
    };
    let mut writes = run("r1", "backup", 0, RunStatus::Running);
    writes.push(result("r1", "db1", None));
    api.seed(writes).await;
    let (mut reader, _stalled) = (watch().await, watch().await);
    // 6 MiB in 64 KiB chunks, as fast as the store takes them: far more than the stalled
    // client's socket buffers hold.
    let chunk = vec![b'x'; 64 << 10];
    let total = 96 * chunk.len() as u64;
    let store = api.store.clone();
    let producer = tokio::spawn(async move {
        for i in 0..96u64 {
            let mut w = output("r1", "db1", i * chunk.len() as u64, &chunk);
            if let Write::Output { cap, .. } = &mut w {
                *cap = u64::MAX / 2;
            }
            store.write_durable(w).await.unwrap();
        }
    });
    let late = tokio::spawn(async move {
        let mut late = watch().await;
        read_all(&mut late, total).await
    });
    let shared = tokio::time::timeout(Duration::from_secs(60), read_all(&mut reader, total))
        .await
        .expect("the reading client got all the output although another one stalled");
    producer.await.unwrap();
    let caught_up = tokio::time::timeout(Duration::from_secs(60), late).await.unwrap().unwrap();
    assert!(shared >= 3 && caught_up >= 3, "{shared} {caught_up}");
}
