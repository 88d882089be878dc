//! The per-minion state machine, driven by hand-fed inputs and instants.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn limits() -> Limits {
    Limits {
        launch: secs(30),
        connect: secs(20),
        heartbeat: secs(15),
        timeout: Some(secs(60)),
        kill_grace: secs(10),
        salt_kill: secs(30),
    }
}

/// Feeds `steps` (seconds after launch, input) and returns the outcome, if any.
fn check(steps: &[(u64, Input)]) -> (Option<Outcome>, Vec<Effect>) {
    let t0 = Instant::now();
    let mut m = MinionRun::launched(limits(), t0);
    let mut effects = Vec::new();
    for (at, input) in steps {
        effects.extend(m.on(input.clone(), t0 + secs(*at)));
    }
    let outcome = effects.iter().find_map(|e| match e {
        Effect::Finish(o) => Some(o.clone()),
        _ => None,
    });
    assert_eq!(outcome.is_some(), m.is_done());
    (outcome, effects)
}

fn code(steps: &[(u64, Input)]) -> (i32, EndReason) {
    let (outcome, _) = check(steps);
    let o = outcome.expect("the minion finished");
    (o.retcode, o.reason)
}

#[test]
fn a_command_that_exits_keeps_its_code() {
    let steps = [
        (0, Input::LaunchReturned { retcode: 0, output: "pid 42".into() }),
        (1, Input::AgentStarted),
        (5, Input::AgentAlive),
        (7, Input::AgentCompleted { retcode: 3 }),
    ];
    assert_eq!(code(&steps), (3, EndReason::Exited));
}

#[test]
fn the_agent_may_start_before_salt_returns() {
    let steps = [
        (0, Input::AgentStarted),
        (1, Input::LaunchReturned { retcode: 0, output: String::new() }),
        (2, Input::AgentCompleted { retcode: 0 }),
    ];
    assert_eq!(code(&steps), (0, EndReason::Exited));
}

#[test]
fn a_failed_launch_keeps_salts_code_and_output() {
    let (outcome, _) =
        check(&[(1, Input::LaunchReturned { retcode: 127, output: "not found".into() })]);
    let o = outcome.unwrap();
    assert_eq!(
        (o.retcode, o.reason, o.detail.as_str()),
        (127, EndReason::LaunchFailed, "not found")
    );
}

#[test]
fn phase_one_deadlines() {
    assert_eq!(code(&[(29, Input::Tick), (30, Input::Tick)]), (254, EndReason::LaunchTimedOut));
    let never_connected = [
        (25, Input::LaunchReturned { retcode: 0, output: String::new() }),
        (30, Input::Tick),
        (44, Input::Tick),
        (45, Input::Tick),
    ];
    assert_eq!(code(&never_connected), (254, EndReason::NeverConnected));
    assert_eq!(code(&[(3, Input::Unresponsive)]), (255, EndReason::DidNotRespond));
}

#[test]
fn silence_in_phase_two_is_heartbeat_lost() {
    let steps =
        [(0, Input::AgentStarted), (10, Input::AgentAlive), (24, Input::Tick), (25, Input::Tick)];
    assert_eq!(code(&steps), (253, EndReason::HeartbeatLost));
}

#[test]
fn timeout_counts_from_the_start_and_waits_for_the_agent() {
    let (outcome, effects) = check(&[
        (5, Input::AgentStarted),
        (55, Input::AgentAlive),
        (64, Input::Tick),
        (65, Input::Tick),
        (66, Input::AgentCompleted { retcode: 143 }),
    ]);
    assert_eq!(effects[0], Effect::SendKill(StopReason::Timeout));
    let o = outcome.unwrap();
    assert_eq!((o.retcode, o.reason), (124, EndReason::TimedOut));
}

#[test]
fn a_kill_the_agent_ignores_goes_through_salt() {
    let (outcome, effects) = check(&[
        (0, Input::AgentStarted),
        (1, Input::Kill),
        (10, Input::Tick),
        (11, Input::Tick),
        (12, Input::SaltKillReturned { confirmed: true, output: "killed group 42".into() }),
    ]);
    assert_eq!(
        effects[..2],
        [Effect::SendKill(StopReason::Kill), Effect::KillThroughSalt(StopReason::Kill)]
    );
    let o = outcome.unwrap();
    assert_eq!((o.retcode, o.reason), (143, EndReason::Killed));
}

#[test]
fn an_unconfirmed_kill_is_never_reported_as_killed() {
    let failed = [
        (0, Input::AgentStarted),
        (1, Input::Kill),
        (11, Input::Tick),
        (12, Input::SaltKillReturned { confirmed: false, output: "no minion".into() }),
    ];
    assert_eq!(code(&failed), (255, EndReason::KillUnconfirmed));
    let silent = [(0, Input::AgentStarted), (1, Input::Kill), (11, Input::Tick), (41, Input::Tick)];
    assert_eq!(code(&silent), (255, EndReason::KillUnconfirmed));
}

#[test]
fn a_command_that_finishes_before_the_kill_lands_keeps_its_success() {
    let steps =
        [(0, Input::AgentStarted), (1, Input::Kill), (2, Input::AgentCompleted { retcode: 0 })];
    assert_eq!(code(&steps), (0, EndReason::Exited));
}

#[test]
fn a_kill_before_the_agent_connects_kills_through_salt_at_once() {
    let (_, effects) = check(&[(1, Input::Kill)]);
    assert_eq!(
        effects,
        [Effect::SendKill(StopReason::Kill), Effect::KillThroughSalt(StopReason::Kill)]
    );
}

#[test]
fn nothing_changes_after_the_end_and_deadlines_follow_the_phase() {
    let t0 = Instant::now();
    let mut m = MinionRun::launched(limits(), t0);
    assert_eq!(m.next_deadline(), Some(t0 + secs(30)));
    m.on(Input::AgentStarted, t0 + secs(2));
    assert_eq!(m.next_deadline(), Some(t0 + secs(17)), "the heartbeat comes before the timeout");
    m.on(Input::AgentCompleted { retcode: 0 }, t0 + secs(3));
    assert_eq!(m.next_deadline(), None);
    assert!(m.on(Input::Kill, t0 + secs(4)).is_empty());
    assert!(m.on(Input::Tick, t0 + secs(400)).is_empty());
}

#[test]
fn a_resumed_minion_gets_a_full_heartbeat_window_and_keeps_its_timeout() {
    let t0 = Instant::now();
    let mut m = MinionRun::resumed(limits(), t0, secs(50));
    assert!(m.has_started());
    assert_eq!(m.next_deadline(), Some(t0 + secs(10)), "the timeout: 60 s from the start 50 s ago");
    assert_eq!(m.on(Input::Tick, t0 + secs(10)), [Effect::SendKill(StopReason::Timeout)]);
}

#[test]
fn a_kill_while_armed_is_a_cancellation() {
    let start_at = Instant::now() + secs(5);
    let steps = [
        (1, Input::AgentArmed { start_at }),
        (2, Input::Kill),
        (2, Input::AgentCompleted { retcode: 143 }),
    ];
    assert_eq!(code(&steps), (143, EndReason::Cancelled));
}

#[test]
fn an_armed_run_is_not_running_until_it_starts() {
    let t0 = Instant::now();
    let mut m = MinionRun::launched(limits(), t0);
    m.on(Input::AgentArmed { start_at: t0 + secs(3) }, t0 + secs(1));
    m.on(Input::AgentAlive, t0 + secs(2));
    assert!(!m.has_started(), "a heartbeat of an armed run is not its start");
    m.on(Input::AgentStarted, t0 + secs(3));
    assert!(m.has_started());
    // Killed after the start: a kill, not a cancellation.
    m.on(Input::Kill, t0 + secs(4));
    let effects = m.on(Input::AgentCompleted { retcode: 143 }, t0 + secs(5));
    assert!(
        matches!(&effects[..], [Effect::Finish(o)] if o.reason == EndReason::Killed),
        "{effects:?}"
    );
}

#[test]
fn an_armed_agent_that_goes_silent_is_lost() {
    let start_at = Instant::now() + secs(100);
    assert_eq!(
        code(&[(1, Input::AgentArmed { start_at }), (17, Input::Tick)]),
        (253, EndReason::HeartbeatLost)
    );
}

#[test]
fn a_legacy_run_has_no_heartbeat() {
    let (outcome, _) = check(&[(1, Input::LegacyStarted), (100, Input::Tick)]);
    assert!(outcome.is_none(), "Salt runs it: no agent heartbeats");
    assert_eq!(
        code(&[(1, Input::LegacyStarted), (100, Input::AgentCompleted { retcode: 3 })]),
        (3, EndReason::Exited)
    );
}
