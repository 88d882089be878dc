//! Tests of the run store on a real SQLite file in a temporary directory.

use chrono::{Duration, TimeZone, Utc};
use tokio_util::task::TaskTracker;

use super::*;

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
}

fn create(instance: &str, job: &str, scheduled: DateTime<Utc>) -> Write {
    Write::CreateRun {
        instance: instance.into(),
        job: job.into(),
        group: "g".into(),
        scheduled,
        trigger: Trigger::Schedule,
        status: RunStatus::Pending,
        reason: String::new(),
        created: scheduled,
    }
}

fn output(instance: &str, offset: u64, data: &[u8], cap: u64) -> Write {
    Write::Output {
        instance: instance.into(),
        minion: "m1".into(),
        seq: None,
        offset,
        stream: Stream::Stdout,
        data: data.to_vec(),
        cap,
    }
}

async fn store() -> (tempfile::TempDir, StoreHandle, TaskTracker) {
    let dir = tempfile::tempdir().unwrap();
    let tasks = TaskTracker::new();
    let store = spawn(&tasks, dir.path()).unwrap();
    (dir, store, tasks)
}

#[tokio::test]
async fn a_run_and_its_results_survive_a_reopen() {
    let (dir, store, tasks) = store().await;
    store.write_durable(create("r1", "backup", at(0))).await.unwrap();
    store
        .write(Write::MinionResult {
            instance: "r1".into(),
            minion: "m1".into(),
            phase: "done".into(),
            retcode: Some(3),
            reason: "exit 3".into(),
            started: Some(at(1)),
            finished: Some(at(2)),
        })
        .await
        .unwrap();
    store.write(output("r1", 0, b"hello ", 1 << 20)).await.unwrap();
    store.write(output("r1", 6, b"world\n", 1 << 20)).await.unwrap();
    store
        .write_durable(Write::UpdateRun {
            instance: "r1".into(),
            status: RunStatus::Failed,
            reason: "1 of 1 failed".into(),
            started: Some(at(1)),
            finished: Some(at(2)),
        })
        .await
        .unwrap();
    drop(store);
    tasks.close();
    tasks.wait().await;

    let store = spawn(&TaskTracker::new(), dir.path()).unwrap();
    let run = store.run("r1").await.unwrap().unwrap();
    assert_eq!((run.status, run.finished), (RunStatus::Failed, Some(at(2))));
    let results = store.results("r1").await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].retcode, results[0].output_bytes), (Some(3), 12));
    let out: Vec<u8> = store
        .output("r1", "m1", 0, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|c| c.data)
        .collect();
    assert_eq!(out, b"hello world\n");
}

#[tokio::test]
async fn a_resent_chunk_is_stored_once_and_a_final_retcode_stays() {
    let (_dir, store, _tasks) = store().await;
    store.write(create("r1", "j", at(0))).await.unwrap();
    for _ in 0..2 {
        store.write(output("r1", 0, b"abc", 100)).await.unwrap();
    }
    for retcode in [Some(0), Some(143), None] {
        store
            .write(Write::MinionResult {
                instance: "r1".into(),
                minion: "m1".into(),
                phase: "done".into(),
                retcode,
                reason: String::new(),
                started: None,
                finished: None,
            })
            .await
            .unwrap();
    }
    store
        .write_durable(Write::Audit {
            at: at(0),
            actor: "t".into(),
            action: "x".into(),
            detail: String::new(),
        })
        .await
        .unwrap();
    let r = &store.results("r1").await.unwrap()[0];
    assert_eq!((r.retcode, r.output_bytes), (Some(0), 3));
}

#[tokio::test]
async fn output_past_the_cap_keeps_head_and_tail() {
    let (_dir, store, _tasks) = store().await;
    store.write(create("r1", "j", at(0))).await.unwrap();
    let mut offset = 0;
    for i in 0..100u8 {
        let chunk = [b'a' + i % 26; 10];
        store.write(output("r1", offset, &chunk, 200)).await.unwrap();
        offset += 10;
    }
    store.write_durable(create("r2", "j", at(1))).await.unwrap();
    let chunks = store.output("r1", "m1", 0, u64::MAX).await.unwrap();
    let kept: u64 = chunks.iter().map(|c| c.data.len() as u64).sum();
    assert_eq!(kept, 200);
    assert_eq!(chunks.first().unwrap().offset, 0, "the head is kept");
    assert_eq!(chunks.last().unwrap().offset, 990, "the newest output is kept");
    let r = &store.results("r1").await.unwrap()[0];
    assert_eq!((r.output_bytes, r.output_dropped), (1000, 800));
}

#[tokio::test]
async fn a_failing_write_does_not_take_its_batch_down() {
    let (_dir, store, _tasks) = store().await;
    let update_missing = Write::UpdateRun {
        instance: "nope".into(),
        status: RunStatus::Failed,
        reason: String::new(),
        started: None,
        finished: None,
    };
    let (a, b) = tokio::join!(
        store.write_durable(update_missing),
        store.write_durable(create("r1", "j", at(0)))
    );
    assert!(a.is_err());
    b.unwrap();
    assert!(store.run("r1").await.unwrap().is_some());
}

#[tokio::test]
async fn filters_pages_open_runs_last_slot_and_pruning() {
    let (_dir, store, _tasks) = store().await;
    for i in 0..10 {
        store.write(create(&format!("a{i}"), "a", at(i * 60))).await.unwrap();
        store.write(create(&format!("b{i}"), "b", at(i * 60 + 1))).await.unwrap();
    }
    for i in 0..9 {
        let status = if i % 2 == 0 { RunStatus::Succeeded } else { RunStatus::Failed };
        store
            .write(Write::UpdateRun {
                instance: format!("a{i}"),
                status,
                reason: String::new(),
                started: None,
                finished: Some(at(i * 60 + 5)),
            })
            .await
            .unwrap();
    }
    for i in 0..5 {
        store.write(create(&format!("c{i}"), "c", at(i * 60 + 2))).await.unwrap();
        store
            .write(Write::UpdateRun {
                instance: format!("c{i}"),
                status: RunStatus::Succeeded,
                reason: String::new(),
                started: None,
                finished: Some(at(i * 60 + 3)),
            })
            .await
            .unwrap();
    }
    store.write_durable(output("b3", 0, b"x", 10)).await.unwrap();

    let page = store
        .runs(RunFilter { job: Some("a".into()), limit: 3, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>(), ["a9", "a8", "a7"]);
    let next = store
        .runs(RunFilter {
            job: Some("a".into()),
            limit: 3,
            before: Some(page[2].scheduled),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next[0].instance, "a6");
    let failed = store
        .runs(RunFilter { status: Some(RunStatus::Failed), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed.len(), 4);
    let on_m1 = store
        .runs(RunFilter { minion: Some("m1".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(on_m1.len(), 1);
    assert_eq!(store.open_runs().await.unwrap().len(), 11);
    assert_eq!(store.last_slot("b").await.unwrap(), Some(at(9 * 60 + 1)));
    assert_eq!(store.last_slot("zzz").await.unwrap(), None);

    store
        .write_durable(Write::Prune {
            default: Retention { before: at(0) + Duration::minutes(4), keep: Some(2) },
            jobs: vec![("c".into(), Retention { before: at(0), keep: Some(1) })],
        })
        .await
        .unwrap();
    let left = store
        .runs(RunFilter { job: Some("a".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    // a0..a3 are older than the cutoff; of the finished rest (a4..a8) the newest two stay, and a9
    // is still open.
    assert_eq!(left.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>(), ["a9", "a8", "a7"]);
    // Open runs are never pruned.
    assert_eq!(
        store
            .runs(RunFilter { job: Some("b".into()), limit: 100, ..Default::default() })
            .await
            .unwrap()
            .len(),
        10
    );
    // Job c has its own rule: nothing is too old, but only its newest run stays.
    let c = store
        .runs(RunFilter { job: Some("c".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(c.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>(), ["c4"]);
}
