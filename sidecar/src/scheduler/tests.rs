//! The job table on fed instants (late wake-ups, clock steps, reloads, catch-up), and the timer
//! task on tokio's paused clock with a fake wall clock: nothing waits for real time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::config::{self, Job, JobName};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").with_timezone(&Utc)
}

/// Jobs from YAML, through the real loader.
fn jobs(yaml: &str) -> BTreeMap<JobName, Arc<Job>> {
    let dir = tempfile::tempdir().expect("dir");
    fs_err::write(dir.path().join("t.yaml"), yaml).expect("write");
    let loaded = config::load_dir(dir.path(), at("2026-01-01T00:00:00Z")).expect("load");
    assert!(loaded.report.errors.is_empty(), "{:?}", loaded.report.errors);
    loaded.jobs
}

fn job(name: &str, sec: &str, extra: &str) -> String {
    format!(
        "{name}:\n  sec: '{sec}'\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: x\n  targets: y\n{extra}"
    )
}

fn slots(due: &[Due]) -> Vec<(String, String, Trigger, u64)> {
    due.iter()
        .map(|d| {
            (
                d.job.name.to_string(),
                d.scheduled.format("%H:%M:%S").to_string(),
                d.trigger,
                d.late_by.as_secs(),
            )
        })
        .collect()
}

#[test]
fn each_slot_fires_once_and_a_late_wake_marks_it_late() {
    let mut t =
        JobTable::new(jobs(&job("a", "*/10", "")).into_values(), at("2026-01-01T00:00:00Z"));
    assert_eq!(t.next_deadline(), Some(at("2026-01-01T00:00:10Z")));
    assert!(t.take_due(at("2026-01-01T00:00:09Z")).is_empty());
    assert_eq!(
        slots(&t.take_due(at("2026-01-01T00:00:10Z"))),
        [("a".into(), "00:00:10".into(), Trigger::Schedule, 0)]
    );
    assert!(t.take_due(at("2026-01-01T00:00:10Z")).is_empty(), "never twice");
    // Woke 25 s late: both passed slots fire, marked with their lateness.
    assert_eq!(
        slots(&t.take_due(at("2026-01-01T00:00:45Z"))),
        [
            ("a".into(), "00:00:20".into(), Trigger::Schedule, 25),
            ("a".into(), "00:00:30".into(), Trigger::Schedule, 15),
            ("a".into(), "00:00:40".into(), Trigger::Schedule, 5),
        ]
    );
}

#[test]
fn a_wall_clock_step_back_repeats_nothing() {
    let mut t = JobTable::new(jobs(&job("a", "0", "")).into_values(), at("2026-01-01T00:00:30Z"));
    assert_eq!(t.take_due(at("2026-01-01T00:01:00Z")).len(), 1);
    // The clock steps back an hour: the 00:01 slot is not emitted again, nor anything before it.
    assert!(t.take_due(at("2025-12-31T23:01:00Z")).is_empty());
    assert!(t.take_due(at("2026-01-01T00:01:30Z")).is_empty());
    assert_eq!(t.take_due(at("2026-01-01T00:02:00Z")).len(), 1);
}

#[test]
fn slots_older_than_the_window_follow_catch_up() {
    let yaml = [
        job("skip", "0", ""),
        job("latest", "0", "  catch_up: latest\n"),
        job("all", "0", "  catch_up: all\n  catch_up_window: 0\n"),
    ]
    .concat();
    let mut t = JobTable::new(jobs(&yaml).into_values(), at("2026-01-01T00:00:00Z"));
    // Asleep for three and a half minutes: 00:01, 00:02, 00:03 were missed by more than 60 s
    // except 00:03 (30 s late), which fires normally for the default window.
    let due = slots(&t.take_due(at("2026-01-01T00:03:30Z")));
    let s = |j: &str, t: &str, tr, l| (j.to_string(), t.to_string(), tr, l);
    assert_eq!(
        due,
        [
            s("all", "00:01:00", Trigger::CatchUp, 150),
            s("all", "00:02:00", Trigger::CatchUp, 90),
            s("latest", "00:02:00", Trigger::CatchUp, 90),
            s("all", "00:03:00", Trigger::CatchUp, 30),
            s("latest", "00:03:00", Trigger::Schedule, 30),
            s("skip", "00:03:00", Trigger::Schedule, 30),
        ]
    );
}

#[test]
fn resume_replays_missed_slots_by_policy() {
    let yaml = [job("skip", "0", ""), job("latest", "0", "  catch_up: latest\n")].concat();
    let last = [
        (JobName::new("skip"), at("2026-01-01T00:00:00Z")),
        (JobName::new("latest"), at("2026-01-01T00:00:00Z")),
    ]
    .into_iter()
    .collect();
    let mut t = JobTable::resume(jobs(&yaml).into_values(), &last, at("2026-01-01T01:00:00Z"));
    let due = slots(&t.take_due(at("2026-01-01T01:00:00Z")));
    let s = |j: &str, t: &str, tr, l| (j.to_string(), t.to_string(), tr, l);
    assert_eq!(
        due,
        [
            s("latest", "00:58:00", Trigger::CatchUp, 120),
            s("latest", "00:59:00", Trigger::Schedule, 60),
            s("skip", "00:59:00", Trigger::Schedule, 60),
            s("latest", "01:00:00", Trigger::Schedule, 0),
            s("skip", "01:00:00", Trigger::Schedule, 0),
        ]
    );
}

#[test]
fn a_slot_of_the_lead_window_at_resume_is_on_time_whatever_the_window() {
    // The daemon's clock runs 3 s ahead (lead time); the job's window is 1 s. Resumed at
    // 00:00:09 (wall), the timer takes the 00:00:10 slot at 00:00:12 by its clock (00:00:09
    // by the wall): on time, not missed; the 00:00:05 slot passed while down is caught up.
    let yaml = job("j", "*/5", "  catch_up: latest\n  catch_up_window: 1\n");
    let last = [(JobName::new("j"), at("2026-01-01T00:00:00Z"))].into_iter().collect();
    let mut t = JobTable::resume(jobs(&yaml).into_values(), &last, at("2026-01-01T00:00:09Z"));
    t.set_ahead(chrono::Duration::seconds(3));
    let due = slots(&t.take_due(at("2026-01-01T00:00:12Z")));
    let s = |t: &str, tr, l| ("j".to_string(), t.to_string(), tr, l);
    assert_eq!(due, [s("00:00:05", Trigger::CatchUp, 4), s("00:00:10", Trigger::Schedule, 0)]);
}

#[test]
fn reload_reschedules_only_what_changed_and_never_repeats_a_slot() {
    let mut t = JobTable::new(
        jobs(&[job("a", "0", ""), job("b", "30", "")].concat()).into_values(),
        at("2026-01-01T00:00:00Z"),
    );
    let next_a = t.next_slot(&JobName::new("a"));
    let diff = t.reload(
        &jobs(&[job("a", "0", "  description: edited\n"), job("c", "15", "")].concat()),
        at("2026-01-01T00:00:05Z"),
    );
    assert_eq!(
        (diff.added, diff.removed, diff.changed),
        (vec![JobName::new("c")], vec![JobName::new("b")], vec![JobName::new("a")])
    );
    assert_eq!(t.next_slot(&JobName::new("a")), next_a, "same schedule: same pending slot");
    assert_eq!(t.next_slot(&JobName::new("c")), Some(at("2026-01-01T00:00:15Z")));
    assert_eq!(t.len(), 2);
}

#[test]
fn disabled_and_never_firing_jobs_are_never_due_but_can_run_now() {
    let yaml = [job("off", "*", "  enabled: false\n"), "never:\n  min: 0\n  hour: 0\n  dom: 30\n  mon: 2\n  dow: '*'\n  command: x\n  targets: y\n".into()].concat();
    let t = JobTable::new(jobs(&yaml).into_values(), at("2026-01-01T00:00:00Z"));
    assert_eq!(t.next_deadline(), None);
    let manual = t.run_now(&JobName::new("off"), at("2026-01-01T00:00:01Z")).expect("known job");
    assert_eq!(manual.trigger, Trigger::Manual);
    assert!(t.run_now(&JobName::new("nope"), at("2026-01-01T00:00:01Z")).is_none());
}

/// Wall time = a start instant + tokio's (paused, auto-advancing) time + a settable step.
struct FakeClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
    step: Mutex<chrono::Duration>,
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed()).expect("small");
        self.start + elapsed + *self.step.lock().expect("lock")
    }
}

#[tokio::test(start_paused = true)]
async fn the_timer_task_emits_due_events_on_time_and_answers_its_handle() {
    let clock = Arc::new(FakeClock {
        start: at("2026-01-01T00:00:00.500Z"),
        origin: tokio::time::Instant::now(),
        step: Mutex::new(chrono::Duration::zero()),
    });
    let defs = jobs(&job("tick", "*/5", ""));
    let table = JobTable::new(defs.clone().into_values(), clock.now());
    let (tx, mut rx) = mpsc::channel(16);
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let handle = spawn(&tasks, table, clock.clone(), tx, cancel.clone());

    for expected in ["00:00:05", "00:00:10", "00:00:15"] {
        let due = rx.recv().await.expect("a due event");
        assert_eq!(due.scheduled.format("%H:%M:%S").to_string(), expected);
        assert_eq!((due.trigger, due.late_by), (Trigger::Schedule, Duration::ZERO));
        assert_eq!(clock.now(), due.scheduled, "emitted at the slot's instant");
    }
    let upcoming = handle.upcoming(JobName::new("tick"), 2).await.expect("known");
    assert_eq!(upcoming, [at("2026-01-01T00:00:20Z"), at("2026-01-01T00:00:25Z")]);
    let when = handle.run_now(JobName::new("tick")).await.expect("known");
    let manual = rx.recv().await.expect("the manual run");
    assert_eq!((manual.trigger, manual.scheduled), (Trigger::Manual, when));
    assert_eq!(
        handle.run_now(JobName::new("nope")).await,
        Err(SchedulerError::UnknownJob(JobName::new("nope")))
    );

    // The wall clock jumps 12 s ahead: the slots passed fire at once, marked late.
    *clock.step.lock().expect("lock") = chrono::Duration::seconds(12);
    let diff = handle.reload(defs).await.expect("reload");
    assert!(diff.is_empty());
    let late = rx.recv().await.expect("a late slot");
    assert_eq!(late.scheduled, at("2026-01-01T00:00:20Z"));
    assert!(late.late_by >= Duration::from_secs(7), "{:?}", late.late_by);

    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

#[test]
fn through_both_dst_changes_each_wall_clock_slot_fires_once() {
    let yaml = job("berlin", "0", "  timezone: Europe/Berlin\n").replace("min: '*'", "min: '*/30'");
    for (from, expected) in [
        // Fall back, 2026-10-25: 02:00-03:00 local happens twice; its slots fire in the first pass.
        ("2026-10-24T23:45:00Z", &["00:00", "00:30", "02:00"][..]),
        // Spring forward, 2026-03-29: 02:00-03:00 local does not exist; its slots fire once at 03:00.
        ("2026-03-29T00:15:00Z", &["00:30", "01:00", "01:30", "02:00", "02:30"][..]),
    ] {
        let mut t = JobTable::new(jobs(&yaml).into_values(), at(from));
        let mut fired = Vec::new();
        let mut now = at(from);
        // Feed every 10 s for 2 h 30 min: each slot is emitted once, on time.
        for _ in 0..(150 * 6) {
            now += chrono::Duration::seconds(10);
            for d in t.take_due(now) {
                assert_eq!(d.late_by, Duration::ZERO);
                fired.push(d.scheduled.format("%H:%M").to_string());
            }
        }
        assert_eq!(fired, expected, "from {from}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_prepared_batch_fires_each_slot_once() {
    let clock = Arc::new(FakeClock {
        start: at("2026-01-01T00:00:00.500Z"),
        origin: tokio::time::Instant::now(),
        step: Mutex::new(chrono::Duration::zero()),
    });
    let table = JobTable::new(jobs(&job("tick", "*/5", "")).into_values(), clock.now());
    let (tx, mut rx) = mpsc::channel(16);
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let handle = spawn(&tasks, table, clock.clone(), tx, cancel.clone());
    assert_eq!(rx.recv().await.expect("due").scheduled, at("2026-01-01T00:00:05Z"));
    // The batch for 00:00:10 is prepared by now; the reload must put it back and reschedule.
    let diff = handle.reload(jobs(&job("tick", "*/10", ""))).await.expect("reload");
    assert_eq!(diff.changed, [JobName::new("tick")]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(rx.recv().await.expect("due").scheduled.format("%H:%M:%S").to_string());
    }
    assert_eq!(seen, ["00:00:10", "00:00:20", "00:00:30"]);
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}
