//! Runs over several minions and batches, driven by hand-fed inputs.

use super::*;
use crate::runs::minion::{EndReason, StopReason};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("m{i}")).collect()
}

fn plan(batch_size: usize, max_failures: Option<usize>, batch_wait: u64) -> Plan {
    Plan { batch_size, max_failures, batch_wait: secs(batch_wait), limits: Limits::default() }
}

fn launched(effects: &[Effect]) -> Vec<Vec<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn summary(effects: &[Effect]) -> Option<Summary> {
    effects.iter().find_map(|e| match e {
        Effect::Finished(s) => Some(s.clone()),
        _ => None,
    })
}

fn complete(run: &mut Run, minion: &str, retcode: i32, now: Instant) -> Vec<Effect> {
    let mut effects = run.on_minion(minion, Input::AgentStarted, now);
    effects.extend(run.on_minion(minion, Input::AgentCompleted { retcode }, now));
    effects
}

#[test]
fn all_at_once_and_every_minion_succeeds() {
    let t0 = Instant::now();
    let (mut run, effects) = Run::start(plan(0, None, 0), ids(3), t0);
    assert_eq!(launched(&effects), [ids(3)]);
    for id in ids(3) {
        let effects = complete(&mut run, &id, 0, t0 + secs(1));
        if id == "m3" {
            let s = summary(&effects).expect("finished after the last minion");
            assert_eq!((s.status, s.succeeded, s.failed), (Status::Succeeded, 3, 0));
            assert_eq!(s.reason, "3 of 3 minions succeeded");
        } else {
            assert!(summary(&effects).is_none());
        }
    }
    assert!(run.is_finished());
}

#[test]
fn batches_run_one_after_another_with_a_wait() {
    let t0 = Instant::now();
    let (mut run, effects) = Run::start(plan(2, None, 5), ids(3), t0);
    assert_eq!(launched(&effects), [vec!["m1".to_owned(), "m2".to_owned()]]);
    complete(&mut run, "m1", 0, t0 + secs(1));
    let effects = complete(&mut run, "m2", 1, t0 + secs(2));
    assert!(launched(&effects).is_empty(), "the next batch waits batch_wait");
    assert_eq!(run.next_deadline(), Some(t0 + secs(7)));
    assert!(launched(&run.on_tick(t0 + secs(6))).is_empty());
    assert_eq!(launched(&run.on_tick(t0 + secs(7))), [vec!["m3".to_owned()]]);
    let s = summary(&complete(&mut run, "m3", 0, t0 + secs(8))).unwrap();
    assert_eq!((s.status, s.succeeded, s.failed), (Status::Failed, 2, 1));
}

#[test]
fn max_failures_stops_later_batches_and_says_why() {
    let t0 = Instant::now();
    let (mut run, _) = Run::start(plan(1, Some(1), 0), ids(3), t0);
    let effects = complete(&mut run, "m1", 2, t0 + secs(1));
    assert!(effects.contains(&Effect::NotStarted {
        minions: vec!["m2".into(), "m3".into()],
        why: "stopped after 1 failed minions (max_failures 1)".into(),
    }));
    let s = summary(&effects).unwrap();
    assert_eq!((s.status, s.failed, s.not_started), (Status::Failed, 1, 2));
    assert_eq!(
        s.reason,
        "0 of 3 minions succeeded; stopped after 1 failed minions (max_failures 1)"
    );
}

#[test]
fn kill_stops_active_minions_and_cancels_later_batches() {
    let t0 = Instant::now();
    let (mut run, _) = Run::start(plan(1, None, 0), ids(2), t0);
    run.on_minion("m1", Input::AgentStarted, t0);
    let effects = run.kill(t0 + secs(1));
    assert!(
        effects.contains(&Effect::Minion("m1".into(), minion::Effect::SendKill(StopReason::Kill)))
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::NotStarted { minions, .. } if minions == &["m2"]))
    );
    let effects = run.on_minion("m1", Input::AgentCompleted { retcode: 143 }, t0 + secs(2));
    let s = summary(&effects).unwrap();
    assert_eq!(s.status, Status::Killed);
}

#[test]
fn deadlines_of_minions_are_driven_by_ticks() {
    let t0 = Instant::now();
    let (mut run, _) = Run::start(plan(0, None, 0), ids(1), t0);
    assert_eq!(run.next_deadline(), Some(t0 + Limits::default().launch));
    let effects = run.on_tick(t0 + Limits::default().launch);
    let outcome = effects.iter().find_map(|e| match e {
        Effect::Minion(_, minion::Effect::Finish(o)) => Some(o.clone()),
        _ => None,
    });
    assert_eq!(outcome.map(|o| (o.retcode, o.reason)), Some((254, EndReason::LaunchTimedOut)));
    assert_eq!(summary(&effects).map(|s| s.status), Some(Status::Failed));
}

#[test]
fn inputs_for_unknown_or_unlaunched_minions_are_ignored() {
    let t0 = Instant::now();
    let (mut run, _) = Run::start(plan(1, None, 0), ids(2), t0);
    assert!(run.on_minion("m2", Input::AgentCompleted { retcode: 0 }, t0).is_empty());
    assert!(run.on_minion("zz", Input::AgentCompleted { retcode: 0 }, t0).is_empty());
    let effects = complete(&mut run, "m1", 0, t0);
    assert_eq!(launched(&effects), [vec!["m2".to_owned()]]);
    assert!(!run.is_finished());
}

#[test]
fn a_resumed_run_starts_its_queued_batches_when_the_running_one_is_done() {
    let t0 = Instant::now();
    let started = vec![("m2".to_owned(), secs(3))];
    let queued = vec!["m3".to_owned(), "m4".to_owned()];
    let mut run =
        Run::resume(plan(1, None, 0), vec![("m1".into(), 0)], started, vec![], vec![], queued, t0);
    assert!(launched(&run.on_tick(t0)).is_empty(), "m2 still runs");
    let effects = run.on_minion("m2", Input::AgentCompleted { retcode: 0 }, t0 + secs(1));
    assert_eq!(launched(&effects), [vec!["m3".to_owned()]]);
    assert_eq!(launched(&complete(&mut run, "m3", 0, t0 + secs(2))), [vec!["m4".to_owned()]]);
    let s = summary(&complete(&mut run, "m4", 0, t0 + secs(3))).expect("finished after m4");
    assert_eq!(
        (s.status, s.succeeded, s.reason.as_str()),
        (Status::Succeeded, 4, "4 of 4 minions succeeded")
    );
}

#[test]
fn a_resumed_run_with_nothing_in_flight_starts_its_next_batch_at_once() {
    let t0 = Instant::now();
    let mut run = Run::resume(
        plan(1, Some(2), 0),
        vec![("m0".into(), 2)],
        vec![],
        vec![],
        vec![],
        ids(2),
        t0,
    );
    assert_eq!(launched(&run.on_tick(t0)), [vec!["m1".to_owned()]]);
    assert_eq!(launched(&complete(&mut run, "m1", 0, t0 + secs(1))), [vec!["m2".to_owned()]]);
    let s = summary(&complete(&mut run, "m2", 0, t0 + secs(2))).expect("finished after m2");
    assert_eq!((s.status, s.succeeded, s.failed), (Status::Failed, 2, 1));
}

#[test]
fn a_resumed_run_past_its_failure_threshold_starts_no_queued_batch() {
    let t0 = Instant::now();
    let mut run = Run::resume(
        plan(1, Some(1), 0),
        vec![("m0".into(), 2)],
        vec![],
        vec![],
        vec![],
        ids(2),
        t0,
    );
    let effects = run.on_tick(t0);
    assert!(launched(&effects).is_empty(), "{effects:?}");
    let not_started = effects.iter().find_map(|e| match e {
        Effect::NotStarted { minions, .. } => Some(minions.clone()),
        _ => None,
    });
    assert_eq!(not_started, Some(ids(2)));
    let s = summary(&effects).expect("finished at the threshold");
    assert_eq!((s.status, s.failed, s.not_started), (Status::Failed, 1, 2));
    assert!(s.reason.contains("max_failures 1"), "{}", s.reason);
}
