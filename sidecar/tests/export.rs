//! The search-engine export against a recording HTTP server. No Elasticsearch or OpenSearch can
//! run on these machines, so a small axum server stands in for the cluster: it records each bulk
//! request, answers the first ones with 503 (the cluster is down), then accepts. What is checked
//! is what a real cluster would see: the bulk NDJSON format, the original's document fields and
//! `msg_type`s, the daily index, and that nothing written while the cluster was down is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{TimeZone, Utc};
use saltpeter::export::{self, Sink};
use saltpeter::store::{self, RunStatus, Stream, Trigger, Write};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
struct Cluster {
    /// Requests still to refuse with 503.
    refuse: usize,
    /// Every request received: content type and body.
    requests: Vec<(String, String)>,
    /// The Authorization header of each request.
    auth: Vec<String>,
}

async fn bulk(
    State(cluster): State<Arc<Mutex<Cluster>>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let mut c = cluster.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    c.requests.push((content_type, body.clone()));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    c.auth.push(auth.to_owned());
    if c.refuse > 0 {
        c.refuse -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "cluster is down".into());
    }
    let items = body.lines().count() / 2;
    let items: Vec<Value> =
        (0..items).map(|_| serde_json::json!({"index": {"status": 201}})).collect();
    (StatusCode::OK, serde_json::json!({"errors": false, "items": items}).to_string())
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_cluster_in_bulk_after_it_comes_back() {
    let cluster = Arc::new(Mutex::new(Cluster { refuse: 2, ..Default::default() }));
    let app = Router::new().route("/_bulk", post(bulk)).with_state(Arc::clone(&cluster));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let tasks = TaskTracker::new();
    let store = store::spawn(&tasks, dir.path()).unwrap();
    let sink = Sink {
        name: "elasticsearch".into(),
        url: format!("http://elastic:pw@{addr}/"),
        index: "saltpeter".into(),
    };
    // Nothing is queued before a sink is registered.
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 58).unwrap();
    store.write_durable(create("before", at, RunStatus::Pending, "")).await.unwrap();
    export::register(&store, std::slice::from_ref(&sink)).await.unwrap();
    assert_eq!(store.export_pending("elasticsearch", 100).await.unwrap(), Some(vec![]));
    assert_eq!(store.export_pending("opensearch", 100).await.unwrap(), None);

    // One run on one minion, a skipped run (overlap), while the cluster is down.
    let writes = [
        create("r1", at, RunStatus::Pending, ""),
        Write::UpdateRun {
            instance: "r1".into(),
            status: RunStatus::Running,
            reason: String::new(),
            started: Some(at),
            finished: None,
        },
        result("r1", Some(at), None, None),
        Write::Output {
            instance: "r1".into(),
            minion: "m1".into(),
            seq: Some(0),
            offset: 0,
            stream: Stream::Stdout,
            data: b"10%\r100%\ndone\n".to_vec(),
            cap: 1 << 20,
        },
        result("r1", None, Some(3), Some(at + chrono::Duration::seconds(3))),
        Write::UpdateRun {
            instance: "r1".into(),
            status: RunStatus::Failed,
            reason: String::new(),
            started: None,
            finished: Some(at + chrono::Duration::seconds(3)),
        },
        create(
            "r2",
            at,
            RunStatus::Skipped,
            "the previous run of this job is still running (overlap)",
        ),
    ];
    for w in writes {
        store.write_durable(w).await.unwrap();
    }
    let cancel = CancellationToken::new();
    tokio::spawn(export::run(store.clone(), sink, cancel.clone()));
    wait_for("the accepted bulk request", || cluster.lock().unwrap().requests.len() >= 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.export_pending("elasticsearch", 100).await.unwrap() != Some(vec![]) {
        assert!(tokio::time::Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();

    let requests = cluster.lock().unwrap().requests.clone();
    // The URL's user:password became basic authentication ("elastic:pw").
    assert_eq!(cluster.lock().unwrap().auth[0], "Basic ZWxhc3RpYzpwdw==");
    // The refused batches were sent again, whole.
    assert_eq!(requests[0].1, requests[2].1);
    let (content_type, body) = &requests[2];
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() % 2, 0);
    let docs: Vec<&Value> = lines.iter().skip(1).step_by(2).collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["msg_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "machine_start", "machine_result", "end", "overlap"]);
    for (action, doc) in lines.iter().step_by(2).zip(&docs) {
        // The UTC date of the event, not the sidecar's local date.
        let day = doc["@timestamp"].as_str().unwrap()[..10].replace('-', ".");
        assert_eq!(action["index"]["_index"], format!("saltpeter-{day}"));
    }
    assert_eq!(lines[4]["index"]["_index"], "saltpeter-2026.11.24");
    let result = docs[2];
    assert_eq!(result["job_name"], "backup");
    assert_eq!(result["group"], "nightly");
    assert_eq!(result["job_instance"], "r1");
    assert_eq!(result["machine"], "m1");
    assert_eq!(result["return_code"], 3);
    assert_eq!(result["output"], "100%\ndone\n");
    assert_eq!(result["@timestamp"], "2026-11-24T00:00:01.000Z");
    assert_eq!(docs[0]["machine"], "");
    assert_eq!(docs[0]["return_code"], 0);
}

fn create(instance: &str, at: chrono::DateTime<Utc>, status: RunStatus, reason: &str) -> Write {
    Write::CreateRun {
        instance: instance.into(),
        job: "backup".into(),
        group: "nightly".into(),
        scheduled: at,
        trigger: Trigger::Schedule,
        status,
        reason: reason.into(),
        created: at,
    }
}

fn result(
    instance: &str,
    started: Option<chrono::DateTime<Utc>>,
    retcode: Option<i32>,
    finished: Option<chrono::DateTime<Utc>>,
) -> Write {
    Write::MinionResult {
        instance: instance.into(),
        minion: "m1".into(),
        phase: if retcode.is_some() { "done" } else { "running" }.into(),
        retcode,
        reason: String::new(),
        started,
        finished,
    }
}
