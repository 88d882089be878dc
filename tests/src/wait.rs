//! Waiting for a fact with a deadline: the only way our tests wait. The 50 ms poll is a sampling
//! rate, not a guess at how long something takes; the deadline is the only timing assumption.

use std::time::{Duration, Instant};

/// How often `wait_until` asks again.
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` every 50 ms until it returns `Some`, and returns that value. Panics, naming
/// `what`, when `deadline` has passed without an answer.
pub fn wait_until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if started.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_answer() {
        let mut calls = 0;
        let got = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(got, 30);
    }

    #[test]
    #[should_panic(expected = "waiting for a fact that never comes")]
    fn panics_naming_what_it_waited_for() {
        wait_until("a fact that never comes", Duration::from_millis(120), || None::<()>);
    }
}
