//! The run engine: a due slot becomes a run on the right minions, and every minion's part of it
//! ends with exactly one recorded outcome. This is the only place an outcome is decided.
//!
//! `minion` is the pure state machine of one minion's part (the two phases of monitoring, kill
//! escalation); `run` aggregates minions into a run's status.

pub mod minion;
pub mod run;
