//! API latency; prints figures for `docs/performance.md` ("HTTP API").
//!
//! A run store with `BENCH_RUNS` runs (default 1,000,000; 3 minion results each for the newest
//! 10,000) spread over `BENCH_JOBS` jobs (default 10,000) loaded from real YAML; then, through the
//! whole router in process (auth included), `BENCH_REQUESTS` (default 100) requests of each of:
//! pages of the jobs list (first, last, searched, by state, 1,000 jobs), the first page of runs, a page deep in the runs (by cursor), one job's runs,
//! runs filtered by status and by minion, one job. Prints p50/p99/max per request kind, and the
//! process's CPU time per request (which the load of a shared machine does not inflate).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::Utc;
use http_body_util::BodyExt as _;
use saltpeter::config::{ApiToken, Role, Settings};
use saltpeter::http::{Access, State, router};
use saltpeter::scheduler::{JobTable, SystemClock};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<u64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    (f[11] + f[12]) as f64 / 100.0
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fill(db: &std::path::Path, jobs: usize, runs: usize) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    let tx = c.transaction().unwrap();
    let t0 = Utc::now().timestamp_millis() - (runs as i64) * 1000;
    {
        let mut run = tx
            .prepare(
                "INSERT INTO runs (instance, job, job_group, scheduled_at, trigger, status, reason,
                 created_at, started_at, finished_at) VALUES (?1, ?2, 'bench', ?3, 'schedule', ?4, '', ?3, ?3, ?5)",
            )
            .unwrap();
        let mut result = tx
            .prepare(
                "INSERT INTO results (instance, minion, phase, retcode, started_at, finished_at)
                 VALUES (?1, ?2, 'done', ?3, ?4, ?4)",
            )
            .unwrap();
        for i in 0..runs {
            let job = format!("job{:05}", i % jobs);
            let at = t0 + (i as i64) * 1000;
            let status = if i % 17 == 0 { "failed" } else { "succeeded" };
            let instance = format!("{job}_{i}");
            run.execute(rusqlite::params![instance, job, at, status, at + 5000]).unwrap();
            if i + 10_000 >= runs {
                for m in 0..3 {
                    let code = i32::from(status == "failed" && m == 2);
                    result.execute(rusqlite::params![instance, format!("m{m}"), code, at]).unwrap();
                }
            }
        }
    }
    tx.commit().unwrap();
}

#[tokio::main]
async fn main() {
    let jobs = env_n("BENCH_JOBS", 10_000);
    let runs = env_n("BENCH_RUNS", 1_000_000);
    let requests = env_n("BENCH_REQUESTS", 100);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    fs_err::create_dir_all(&conf).unwrap();
    let mut yaml = String::new();
    for j in 0..jobs {
        yaml.push_str(&format!(
            "job{j:05}:\n  sec: 0\n  min: '{}'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  targets: 'web*'\n  command: /bin/true\n  env: {{TOKEN: secret}}\n",
            j % 60
        ));
    }
    fs_err::write(conf.join("jobs.yaml"), yaml).unwrap();
    let loaded = saltpeter::config::load_dir(&conf, Utc::now()).unwrap();
    assert_eq!(loaded.jobs.len(), jobs);

    let tasks = TaskTracker::new();
    let state_dir = dir.path().join("state");
    drop(saltpeter::store::spawn(&tasks, &state_dir).unwrap());
    let t = Instant::now();
    fill(&state_dir.join(saltpeter::store::DB_FILE), jobs, runs);
    println!("filled {runs} runs over {jobs} jobs in {:.1?}", t.elapsed());

    let cancel = CancellationToken::new();
    let store = saltpeter::store::spawn(&tasks, &state_dir).unwrap();
    let (due_tx, _due) = mpsc::channel(16);
    let table = JobTable::resume(loaded.jobs.values().cloned(), &HashMap::new(), Utc::now());
    let scheduler = saltpeter::scheduler::spawn(
        &tasks,
        table,
        Arc::new(SystemClock),
        due_tx,
        cancel.child_token(),
    );
    let maintenance = saltpeter::maintenance::spawn(
        &tasks,
        store.clone(),
        None,
        loaded.maintenance.clone(),
        cancel.child_token(),
    )
    .await
    .unwrap();
    let secret = "sp_bench";
    let settings = Settings {
        api_tokens: vec![ApiToken {
            name: "bench".into(),
            sha256: sha2::Sha256::digest(secret.as_bytes()).into(),
            role: Role::Viewer,
        }],
        ..Settings::default()
    };
    let app = router(State {
        runs: saltpeter::runs::RunsHandle::stopped(),
        scheduler,
        store,
        jobs: tokio::sync::watch::channel(Arc::new(loaded.jobs.clone())).1,
        maintenance,
        salt: None,
        access: Access::new(&settings),
        reload: None,
        metrics: None,
    });

    let get = |uri: String| {
        let app = app.clone();
        async move {
            let req = Request::get(&uri)
                .header("authorization", format!("Bearer {secret}"))
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let res = app.oneshot(req).await.unwrap();
            assert!(res.status().is_success(), "{uri}: {}", res.status());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (t.elapsed(), body)
        }
    };
    // A cursor 500 pages deep.
    let mut cursor = String::new();
    for _ in 0..10 {
        let (_, body) = get(format!("/api/v1/runs?limit=1000&cursor={cursor}")).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        cursor = v["next"].as_str().unwrap().to_owned();
    }
    // The first listing fills the jobs summaries (the daemon does it at start).
    let (t, body) = get("/api/v1/jobs".to_owned()).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["total"].as_u64(), Some(jobs as u64));
    println!("first jobs listing (fills the summaries of {jobs} jobs): {t:.1?}");
    let kinds = [
        ("GET /api/v1/jobs (first page of 100)", "/api/v1/jobs".to_owned()),
        ("GET /api/v1/jobs?offset=9900 (last page)", "/api/v1/jobs?offset=9900".to_owned()),
        ("GET /api/v1/jobs?q=job042 (search)", "/api/v1/jobs?q=job042".to_owned()),
        ("GET /api/v1/jobs?state=failing", "/api/v1/jobs?state=failing".to_owned()),
        ("GET /api/v1/jobs?limit=1000", "/api/v1/jobs?limit=1000".to_owned()),
        ("GET /api/v1/runs (first page of 50)", "/api/v1/runs".to_owned()),
        ("GET /api/v1/runs (page 10,000 rows deep)", format!("/api/v1/runs?cursor={cursor}")),
        ("GET /api/v1/runs?job=", "/api/v1/runs?job=job04242".to_owned()),
        ("GET /api/v1/runs?status=failed", "/api/v1/runs?status=failed".to_owned()),
        ("GET /api/v1/runs?minion=m2", "/api/v1/runs?minion=m2".to_owned()),
        ("GET /api/v1/jobs/{job}", "/api/v1/jobs/job04242".to_owned()),
    ];
    println!("{requests} requests each, {jobs} jobs, {runs} runs:");
    for (name, uri) in kinds {
        let mut times: Vec<Duration> = Vec::with_capacity(requests);
        let mut bytes = 0;
        let cpu0 = cpu_seconds();
        for _ in 0..requests {
            let (t, body) = get(uri.clone()).await;
            bytes = body.len();
            times.push(t);
        }
        times.sort();
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        let cpu = (cpu_seconds() - cpu0) / requests as f64 * 1000.0;
        println!(
            "  {name:<42} p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}  cpu {cpu:>6.2}ms/req  ({} KiB)",
            p(0.5),
            p(0.99),
            times[times.len() - 1],
            bytes / 1024
        );
    }
    cancel.cancel();
}
