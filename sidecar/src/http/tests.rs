//! The API in process: a real SQLite store in a temporary directory, jobs loaded from real YAML
//! files, the real scheduler and maintenance tasks; requests go through the whole router (auth,
//! body limit, CORS). The run engine is a stopped handle (no Salt master here): kills of runs in
//! flight are tested end to end against a lab (`tests/tests/e2e/api.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::*;
use crate::config::{ApiToken, Role};
use crate::scheduler::{Due, JobTable, SystemClock, Trigger};
use crate::store::{RunStatus, Stream, Write};

pub(super) const VIEWER: &str = "sp_viewer_secret";
pub(super) const OPERATOR: &str = "sp_operator_secret";
const ADMIN: &str = "sp_admin_secret";

const JOBS: &str = r#"
backup:
  sec: 0
  min: 0
  hour: 3
  dom: '*'
  mon: '*'
  dow: '*'
  targets: 'db*'
  command: /usr/local/bin/backup --all
  description: Nightly database dump
  env:
    DB_PASSWORD: hunter2
    REGION: eu-west
rotate:
  sec: 0
  min: '*/5'
  hour: '*'
  dom: '*'
  mon: '*'
  dow: '*'
  targets: 'web*'
  command: logrotate -f /etc/logrotate.conf
  group: web
"#;

fn token(name: &str, secret: &str, role: Role) -> ApiToken {
    use sha2::Digest as _;
    ApiToken { name: name.into(), sha256: sha2::Sha256::digest(secret.as_bytes()).into(), role }
}

pub(super) struct Api {
    pub(super) app: Router,
    pub(super) store: StoreHandle,
    due: mpsc::Receiver<Due>,
    reload: mpsc::Receiver<ReloadRequest>,
    _dir: tempfile::TempDir,
    _cancel: tokio_util::sync::DropGuard,
}

async fn api_with(tokens: Vec<ApiToken>, cors: Vec<String>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    fs_err::create_dir_all(&conf).unwrap();
    fs_err::write(conf.join("jobs.yaml"), JOBS).unwrap();
    let loaded = crate::config::load_dir(&conf, Utc::now()).unwrap();
    assert!(loaded.report.errors.is_empty(), "{:?}", loaded.report.errors);
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let store = crate::store::spawn(&tasks, &dir.path().join("state")).unwrap();
    let (due_tx, due) = mpsc::channel(16);
    let table = JobTable::resume(loaded.jobs.values().cloned(), &HashMap::new(), Utc::now());
    let scheduler =
        crate::scheduler::spawn(&tasks, table, Arc::new(SystemClock), due_tx, cancel.child_token());
    let maintenance = crate::maintenance::spawn(
        &tasks,
        store.clone(),
        None,
        crate::config::Maintenance { global: false, machines: vec!["db9".into()] },
        cancel.child_token(),
    )
    .await
    .unwrap();
    let settings = crate::config::Settings {
        api_tokens: tokens,
        api_cors_origins: cors,
        ..Default::default()
    };
    let (reload_tx, reload) = mpsc::channel(1);
    let state = State {
        runs: crate::runs::RunsHandle::stopped(),
        scheduler,
        store: store.clone(),
        jobs: tokio::sync::watch::channel(Arc::new(loaded.jobs.clone())).1,
        maintenance,
        salt: None,
        access: Access::new(&settings),
        reload: Some(reload_tx),
        metrics: Some(Arc::new(crate::metrics::Metrics::new(None))),
    };
    Api { app: router(state), store, due, reload, _dir: dir, _cancel: cancel.drop_guard() }
}

pub(super) async fn api() -> Api {
    api_with(
        vec![
            token("viewer-bot", VIEWER, Role::Viewer),
            token("alice", OPERATOR, Role::Operator),
            token("root", ADMIN, Role::Admin),
        ],
        vec!["https://ops.example.com".into()],
    )
    .await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {:?}", self.json()))
            .to_owned()
    }
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Answer { status, headers, body }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => {
                req.header("content-type", "application/json").body(Body::from(b.to_string()))
            }
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, Some(VIEWER), None).await
    }

    pub(super) async fn seed(&self, writes: Vec<Write>) {
        for w in writes {
            self.store.write_durable(w).await.unwrap();
        }
    }

    async fn audit_actions(&self) -> Vec<(String, String, String)> {
        let a = self.get("/api/v1/audit").await;
        a.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("actor"), s("action"), s("detail"))
            })
            .collect()
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-01T03:00:00Z").unwrap().to_utc()
}

pub(super) fn run(instance: &str, job: &str, minutes: i64, status: RunStatus) -> Vec<Write> {
    let scheduled = t0() + Duration::minutes(minutes);
    let mut w = vec![Write::CreateRun {
        instance: instance.into(),
        job: job.into(),
        group: "g".into(),
        scheduled,
        trigger: Trigger::Schedule,
        status: RunStatus::Pending,
        reason: String::new(),
        created: scheduled,
    }];
    if status != RunStatus::Pending {
        w.push(Write::UpdateRun {
            instance: instance.into(),
            status,
            reason: String::new(),
            started: Some(scheduled),
            finished: (!status.is_open()).then_some(scheduled + Duration::seconds(5)),
        });
    }
    w
}

pub(super) fn result(instance: &str, minion: &str, retcode: Option<i32>) -> Write {
    Write::MinionResult {
        instance: instance.into(),
        minion: minion.into(),
        phase: if retcode.is_some() { "done" } else { "running" }.into(),
        retcode,
        reason: String::new(),
        started: Some(t0()),
        finished: retcode.map(|_| t0() + Duration::seconds(5)),
    }
}

#[tokio::test]
async fn every_route_but_the_public_ones_needs_a_valid_token() {
    let api = api().await;
    for (method, uri) in [
        (Method::GET, "/api/v1/version"),
        (Method::GET, "/api/v1/jobs"),
        (Method::GET, "/api/v1/jobs/backup"),
        (Method::GET, "/api/v1/runs"),
        (Method::GET, "/api/v1/maintenance"),
        (Method::GET, "/api/v1/audit"),
        (Method::GET, "/status"),
        (Method::POST, "/kill"),
        (Method::POST, "/api/v1/jobs/backup/run"),
    ] {
        let a = api.call(method.clone(), uri, None, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert!(a.error().contains("Authorization: Bearer"), "{}", a.error());
        let a = api.call(method.clone(), uri, Some("sp_not_a_token"), None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {uri} with a bad token");
    }
    let doc = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let v = api.get("/api/v1/version").await.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // Nothing was done by the refused calls.
    assert!(api.audit_actions().await.is_empty());
}

#[tokio::test]
async fn roles_decide_who_may_run_kill_set_maintenance_and_reload() {
    let mut api = api().await;
    let forbidden = [
        (Method::POST, "/api/v1/jobs/backup/run", VIEWER, None),
        (Method::POST, "/api/v1/runs/r1/kill", VIEWER, None),
        (Method::POST, "/kill", VIEWER, Some(json!({"job": "backup"}))),
        (Method::POST, "/api/v1/maintenance", VIEWER, Some(json!({"scope": "global", "why": "x"}))),
        (Method::DELETE, "/api/v1/maintenance/1", VIEWER, None),
        (Method::POST, "/api/v1/reload", VIEWER, None),
        (Method::POST, "/api/v1/reload", OPERATOR, None),
    ];
    for (method, uri, who, body) in forbidden {
        let a = api.call(method.clone(), uri, Some(who), body).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert!(a.error().contains("role"), "{}", a.error());
    }
    assert!(api.due.try_recv().is_err(), "a refused run-now reached the scheduler");
    assert!(api.audit_actions().await.is_empty());

    // An operator runs a job now: the scheduler emits a manual Due, the audit names the token.
    let a = api.call(Method::POST, "/api/v1/jobs/backup/run", Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["job"], "backup");
    let due = tokio::time::timeout(std::time::Duration::from_secs(5), api.due.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((due.job.name.as_str(), due.trigger), ("backup", Trigger::Manual));
    assert_eq!(api.audit_actions().await, [("alice".into(), "run".into(), "backup".into())]);
    let a = api.call(Method::POST, "/api/v1/jobs/nope/run", Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("nope"));

    // Kill reaches the engine (stopped here: 503, and nothing audited).
    let a = api.call(Method::POST, "/api/v1/runs/r1/kill", Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.audit_actions().await.len(), 1);
}

#[tokio::test]
async fn an_admin_reload_reports_what_changed_and_is_audited() {
    let mut api = api().await;
    let app = api.app.clone();
    let request = tokio::spawn(async move {
        let req = Request::post("/api/v1/reload")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    });
    let reply = api.reload.recv().await.unwrap();
    let mut outcome = ReloadOutcome::default();
    outcome.diff.added.push(JobName::new("fresh"));
    outcome.errors.push("jobs.yaml: job `bad`: `min`: 61 is out of range".into());
    reply.send(Ok(outcome)).unwrap();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["added"], json!(["fresh"]));
    assert_eq!(body["errors"].as_array().unwrap().len(), 1);
    let audit = api.audit_actions().await;
    assert_eq!(audit[0].0, "root");
    assert_eq!(audit[0].1, "reload");
}

#[tokio::test]
async fn without_tokens_only_loopback_is_served() {
    let api = api_with(Vec::new(), Vec::new()).await;
    let from = |ip: &str| {
        let mut req = Request::get("/api/v1/version").body(Body::empty()).unwrap();
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    assert_eq!(api.send(from("127.0.0.1")).await.status, StatusCode::OK);
    assert_eq!(api.send(from("[::1]")).await.status, StatusCode::OK);
    let far = api.send(from("10.1.2.3")).await;
    assert_eq!(far.status, StatusCode::FORBIDDEN);
    assert!(far.error().contains("api_tokens"), "{}", far.error());
    let unknown = api.send(Request::get("/api/v1/version").body(Body::empty()).unwrap()).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn jobs_show_next_runs_last_result_success_rate_and_never_env_values() {
    let api = api().await;
    let mut writes = Vec::new();
    for (i, status) in
        [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Succeeded, RunStatus::Succeeded]
            .into_iter()
            .enumerate()
    {
        writes.extend(run(&format!("b{i}"), "backup", i64::try_from(i).unwrap(), status));
    }
    writes.extend(run("b9", "backup", 10, RunStatus::Skipped));
    api.seed(writes).await;

    let a = api.get("/api/v1/jobs").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&a.body).contains("hunter2"));
    let list = a.json();
    assert_eq!((list["total"].as_u64(), list["groups"].clone()), (Some(2), json!(["jobs", "web"])));
    let jobs = &list["jobs"];
    let names: Vec<&str> =
        jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["backup", "rotate"]);
    let backup = &jobs[0];
    assert_eq!(backup["next_runs"].as_array().unwrap().len(), 3);
    assert_eq!(backup["schedule"], "0 0 3 * * * *");
    assert_eq!(backup["last"]["instance"], "b9");
    assert_eq!(backup["last_result"]["instance"], "b3");
    assert_eq!(backup["success_rate"], 0.75);
    assert_eq!(backup["history"].as_array().unwrap().len(), 5);
    assert_eq!(backup["running"], false);
    assert_eq!(jobs[1]["success_rate"], Value::Null);

    let one = api.get("/api/v1/jobs/backup").await;
    assert!(!String::from_utf8_lossy(&one.body).contains("hunter2"));
    let one = one.json();
    assert_eq!(
        one["definition"]["env"],
        json!({"DB_PASSWORD": "<redacted>", "REGION": "<redacted>"})
    );
    assert_eq!(one["definition"]["command"], "/usr/local/bin/backup --all");
    assert_eq!(one["next_runs"].as_array().unwrap().len(), 10);

    let search = api.get("/api/v1/jobs?q=DATABASE").await.json();
    assert_eq!(search["jobs"].as_array().unwrap().len(), 1);
    let group = api.get("/api/v1/jobs?group=web").await.json();
    assert_eq!(
        (group["jobs"][0]["name"].as_str(), group["total"].as_u64()),
        (Some("rotate"), Some(1))
    );
    let page = api.get("/api/v1/jobs?limit=1&offset=1").await.json();
    assert_eq!(
        (page["jobs"][0]["name"].as_str(), page["total"].as_u64()),
        (Some("rotate"), Some(2))
    );
    let none = api.get("/api/v1/jobs?state=none").await.json();
    assert_eq!(none["jobs"][0]["name"], "rotate");
    assert_eq!(api.get("/api/v1/jobs?state=succeeded").await.json()["jobs"][0]["name"], "backup");
    for bad in ["state=green", "limit=0", "limit=1001", "offset=-1"] {
        assert_eq!(api.get(&format!("/api/v1/jobs?{bad}")).await.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(api.get("/api/v1/jobs/nope").await.status, StatusCode::NOT_FOUND);

    let preview = api.get("/api/v1/jobs/rotate/preview?n=5").await.json();
    let next: Vec<DateTime<Utc>> = serde_json::from_value(preview["next_runs"].clone()).unwrap();
    assert_eq!(next.len(), 5);
    assert!(next.windows(2).all(|w| w[1] - w[0] == Duration::minutes(5)));
    assert!(preview["targets"].is_null());
    assert!(preview["targets_error"].as_str().unwrap().contains("Salt"));
    assert_eq!(api.get("/api/v1/jobs/rotate/preview?n=0").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/v1/jobs/rotate/preview?n=x").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_jobs_list_follows_runs_as_they_start_and_finish() {
    let api = api().await;
    async fn backup(api: &Api) -> Value {
        api.get("/api/v1/jobs?q=backup").await.json()["jobs"][0].clone()
    }
    assert_eq!(backup(&api).await["last"], Value::Null);
    // Started after the first listing: in flight at the next.
    api.seed(run("a", "backup", 0, RunStatus::Running)).await;
    let j = backup(&api).await;
    assert_eq!((j["running"].clone(), j["last"]["instance"].clone()), (json!(true), json!("a")));
    // Finished, stamped long ago: found because it was in flight at the last look.
    api.seed(vec![Write::UpdateRun {
        instance: "a".into(),
        status: RunStatus::Failed,
        reason: String::new(),
        started: Some(t0()),
        finished: Some(t0() + Duration::seconds(5)),
    }])
    .await;
    let j = backup(&api).await;
    assert_eq!(
        (j["running"].clone(), j["last_result"]["status"].clone()),
        (json!(false), json!("failed"))
    );
    // Started and finished between two listings: found by its finish time.
    let mut writes = run("b", "backup", 1, RunStatus::Pending);
    writes.push(Write::UpdateRun {
        instance: "b".into(),
        status: RunStatus::Succeeded,
        reason: String::new(),
        started: Some(Utc::now()),
        finished: Some(Utc::now()),
    });
    api.seed(writes).await;
    let j = backup(&api).await;
    assert_eq!(j["last_result"]["instance"], "b");
    assert_eq!(j["success_rate"], 0.5);
    assert_eq!(j["history"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn runs_are_paginated_without_gaps_or_repeats_and_filtered() {
    let api = api().await;
    let mut writes = Vec::new();
    // Several runs share a slot: the cursor must still move past each exactly once.
    for i in 0..7 {
        let status = if i % 2 == 0 { RunStatus::Succeeded } else { RunStatus::Failed };
        writes.extend(run(
            &format!("r{i}"),
            if i < 5 { "backup" } else { "rotate" },
            i / 3,
            status,
        ));
    }
    writes.push(result("r1", "web1", Some(1)));
    writes.push(result("r2", "web1", Some(0)));
    api.seed(writes).await;

    let mut seen = Vec::new();
    let mut uri = "/api/v1/runs?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = api.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK);
        let page = page.json();
        pages += 1;
        for r in page["runs"].as_array().unwrap() {
            seen.push(r["instance"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/api/v1/runs?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "{seen:?}");
    assert_eq!(&seen[..2], ["r6", "r5"], "newest first");

    let count = |v: Value| v["runs"].as_array().unwrap().len();
    assert_eq!(count(api.get("/api/v1/runs?job=rotate").await.json()), 2);
    assert_eq!(count(api.get("/api/v1/runs?status=failed").await.json()), 3);
    assert_eq!(count(api.get("/api/v1/runs?minion=web1").await.json()), 2);
    let since = (t0() + Duration::minutes(2)).to_rfc3339().replace('+', "%2B");
    assert_eq!(count(api.get(&format!("/api/v1/runs?since={since}")).await.json()), 1);

    for (uri, says) in [
        ("/api/v1/runs?status=exploded", "unknown status"),
        ("/api/v1/runs?cursor=garbage", "cursor"),
        ("/api/v1/runs?limit=0", "limit"),
        ("/api/v1/runs?limit=5000", "limit"),
        ("/api/v1/runs?since=yesterday", "since"),
    ] {
        let a = api.get(uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(a.error().contains(says), "{uri}: {}", a.error());
    }
}

#[tokio::test]
async fn a_run_has_its_results_and_ranged_output() {
    let api = api().await;
    let mut writes = run("r1", "backup", 0, RunStatus::Running);
    writes.push(result("r1", "db1", None));
    writes.push(result("r1", "db2", Some(0)));
    for (offset, data) in [(0u64, &b"hello "[..]), (6, b"world\n"), (12, b"done\n")] {
        writes.push(Write::Output {
            instance: "r1".into(),
            minion: "db1".into(),
            seq: None,
            offset,
            stream: Stream::Stdout,
            data: data.to_vec(),
            cap: 1 << 20,
        });
    }
    api.seed(writes).await;
    let r = api.get("/api/v1/runs/r1").await.json();
    assert_eq!(r["status"], "running");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["minion"], "db1");
    assert_eq!(results[0]["output_bytes"], 17);
    assert_eq!(results[1]["retcode"], 0);

    let all = api.get("/api/v1/runs/r1/output/db1").await;
    assert_eq!(all.body, b"hello world\ndone\n");
    assert_eq!(all.headers["x-next-offset"], "17");
    assert_eq!(all.headers["x-total-bytes"], "17");
    let mid = api.get("/api/v1/runs/r1/output/db1?offset=8").await;
    assert_eq!(mid.body, b"rld\ndone\n");
    let tail = api.get("/api/v1/runs/r1/output/db1?tail=5").await;
    assert_eq!(tail.body, b"done\n");
    let end = api.get("/api/v1/runs/r1/output/db1?offset=17").await;
    assert!(end.body.is_empty());
    assert_eq!(end.headers["x-next-offset"], "17");

    assert_eq!(api.get("/api/v1/runs/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/runs/r1/output/db7").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/api/v1/runs/r1/output/db1?offset=-1").await.status,
        StatusCode::BAD_REQUEST
    );

    let status = api.get("/status").await.json();
    assert_eq!(status["running"]["r1"]["name"], "backup");
    assert_eq!(status["running"]["r1"]["machines"], json!(["db1", "db2"]));
    assert_eq!(status["state"]["backup"]["results"]["db2"]["retcode"], 0);
    assert!(status["state"]["rotate"]["next_run"].is_string());
}

#[tokio::test]
async fn the_matrix_has_a_cell_per_minion_and_run() {
    let api = api().await;
    let mut writes = run("a", "backup", 0, RunStatus::Failed);
    writes.extend(run("b", "backup", 1, RunStatus::Succeeded));
    writes.extend([
        result("a", "db1", Some(2)),
        result("a", "db2", Some(0)),
        result("b", "db1", Some(0)),
    ]);
    api.seed(writes).await;
    let m = api.get("/api/v1/jobs/backup/matrix").await.json();
    assert_eq!(m["minions"], json!(["db1", "db2"]));
    assert_eq!(m["runs"][0]["instance"], "b");
    assert_eq!(m["cells"]["db1"], json!([0, 2]));
    assert_eq!(m["cells"]["db2"], json!([null, 0]));
}

#[tokio::test]
async fn maintenance_is_set_merged_with_the_files_ended_and_audited() {
    let api = api().await;
    let post =
        |body: Value| api.call(Method::POST, "/api/v1/maintenance", Some(OPERATOR), Some(body));
    let a = post(json!({"scope": "minion", "target": "web1", "why": "disk swap"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&a.body));
    let minion_id = a.json()["id"].as_i64().unwrap();
    assert_eq!(a.json()["who"], "alice");
    let until = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let a = post(json!({"scope": "target", "target": "os:Debian", "target_type": "grain", "why": "upgrade", "until": until})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["target_type"], "grain");

    let view = api.get("/api/v1/maintenance").await.json();
    assert_eq!(view["file"]["machines"], json!(["db9"]));
    assert_eq!(view["entries"].as_array().unwrap().len(), 2);
    assert_eq!(view["effective"], json!({"global": false, "machines": ["db9", "web1"]}));

    // Bad input: a clear 4xx, and nothing changed.
    let bad = [
        (json!({"scope": "planet", "why": "x"}), StatusCode::BAD_REQUEST, "unknown scope"),
        (json!({"scope": "minion", "why": "x"}), StatusCode::BAD_REQUEST, "needs a target"),
        (json!({"scope": "global", "why": " "}), StatusCode::BAD_REQUEST, "why"),
        (
            json!({"scope": "global", "why": "x", "until": "2001-01-01T00:00:00Z"}),
            StatusCode::BAD_REQUEST,
            "past",
        ),
        (
            json!({"scope": "target", "target": "x", "target_type": "telepathy", "why": "x"}),
            StatusCode::BAD_REQUEST,
            "target_type",
        ),
        (
            json!({"scope": "global", "why": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (json!({"why": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "scope"),
    ];
    for (body, status, says) in bad {
        let a = post(body.clone()).await;
        assert_eq!(a.status, status, "{body}");
        assert!(a.error().contains(says), "{body}: {}", a.error());
    }
    let malformed = api
        .send(
            Request::post("/api/v1/maintenance")
                .header("authorization", format!("Bearer {OPERATOR}"))
                .header("content-type", "application/json")
                .body(Body::from("{\"scope\": \"global\","))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.error().to_lowercase().contains("json"), "{}", malformed.error());
    let huge = json!({"scope": "global", "why": "x".repeat(BODY_LIMIT + 1)});
    assert_eq!(post(huge).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let view = api.get("/api/v1/maintenance").await.json();
    assert_eq!(view["entries"].as_array().unwrap().len(), 2);

    // Global, then ended. While it is on, a manual run is refused, and nothing is audited for it.
    let g = post(json!({"scope": "global", "why": "freeze"})).await.json();
    assert_eq!(api.get("/api/v1/maintenance").await.json()["effective"]["global"], true);
    let refused = api.call(Method::POST, "/api/v1/jobs/backup/run", Some(OPERATOR), None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.error().contains("global maintenance"), "{}", refused.error());
    let uri = format!("/api/v1/maintenance/{}", g["id"]);
    let a = api.call(Method::DELETE, &uri, Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(api.get("/api/v1/maintenance").await.json()["effective"]["global"], false);
    assert_eq!(
        api.call(Method::DELETE, &uri, Some(OPERATOR), None).await.status,
        StatusCode::NOT_FOUND
    );
    let a = api.call(Method::DELETE, "/api/v1/maintenance/abc", Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let audit = api.audit_actions().await;
    let actions: Vec<&str> = audit.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(
        actions,
        ["maintenance.end", "maintenance.start", "maintenance.start", "maintenance.start"]
    );
    assert!(audit.iter().all(|a| a.0 == "alice"));
    assert!(audit[3].2.contains("web1") && audit[3].2.contains("disk swap"), "{:?}", audit[3]);
    assert!(audit[3].2.contains(&format!("#{minion_id}")));
}

#[tokio::test]
async fn kill_by_job_name_needs_a_run_in_flight() {
    let api = api().await;
    let a = api.call(Method::POST, "/kill", Some(OPERATOR), Some(json!({"job": "backup"}))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("no run in flight"));
    let a = api.call(Method::POST, "/kill", Some(OPERATOR), Some(json!({"name": "backup"}))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("job"), "{}", a.error());
    // As the original README's curl sends it: JSON under the form content type.
    let form = api
        .send(
            Request::post("/kill")
                .header("authorization", format!("Bearer {OPERATOR}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(r#"{"job": "backup"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::NOT_FOUND, "read as JSON: {}", form.error());
}

#[tokio::test]
async fn cors_answers_only_allow_listed_origins() {
    let api = api().await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/jobs")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap()
    };
    let ok = api.send(preflight("https://ops.example.com")).await;
    assert_eq!(ok.headers["access-control-allow-origin"], "https://ops.example.com");
    let other = api.send(preflight("https://evil.example.net")).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let api = api().await;
    let doc = api.call(Method::GET, "/api/v1/openapi.json", None, None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/version",
        "/api/v1/jobs",
        "/api/v1/jobs/{job}",
        "/api/v1/jobs/{job}/preview",
        "/api/v1/jobs/{job}/matrix",
        "/api/v1/jobs/{job}/run",
        "/api/v1/reload",
        "/api/v1/runs",
        "/api/v1/runs/{instance}",
        "/api/v1/runs/{instance}/output/{minion}",
        "/api/v1/runs/{instance}/kill",
        "/api/v1/maintenance",
        "/api/v1/maintenance/{id}",
        "/api/v1/audit",
        "/status",
        "/kill",
    ] {
        assert!(paths.contains_key(p), "{p} is missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["JobSummary"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
}

#[tokio::test]
async fn metrics_need_a_token_and_speak_prometheus() {
    let api = api().await;
    assert_eq!(
        api.call(Method::GET, "/metrics", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = api.get("/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8(a.body).unwrap();
    assert!(text.contains("# TYPE saltpeter_run_start_delay_seconds histogram"), "{text}");
    assert!(text.contains("# TYPE saltpeter_agents_connected gauge"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

/// Waits (with a deadline) until the audit log has `action`.
pub(super) async fn wait_for_audit(api: &Api, action: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if api.audit_actions().await.iter().any(|a| a.1 == action && a.0 == "alice") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {action} by alice in the audit log"));
}
