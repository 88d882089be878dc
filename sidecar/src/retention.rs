//! Retention: at start and then every hour, deletes the finished runs (with their results and
//! output) that their job's rule no longer keeps. A job's `history_days` and `max_runs` win over
//! the same keys of `saltpeter_config` (defaults: 30 days, no count limit); `history_days: 0`
//! keeps runs for ever. Runs of jobs since removed follow the global rule. Open runs are never
//! deleted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{Job, Settings};
use crate::store::{Retention, StoreHandle, Write};

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(3600);

/// A retention rule before it is pinned to an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// 0: no age limit.
    pub days: u32,
    pub keep: Option<u32>,
}

impl Rule {
    fn at(self, now: DateTime<Utc>) -> Retention {
        let before = match self.days {
            0 => DateTime::<Utc>::MIN_UTC,
            days => now - chrono::Duration::days(i64::from(days)),
        };
        Retention { before, keep: self.keep }
    }
}

/// The rules in force: the global one and each job's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Rule,
    pub jobs: Vec<(String, Rule)>,
}

impl Policy {
    pub fn new<'a>(settings: &Settings, jobs: impl IntoIterator<Item = &'a Arc<Job>>) -> Policy {
        let default = Rule { days: settings.history_days, keep: settings.max_runs };
        let jobs = jobs
            .into_iter()
            .map(|job| {
                let rule = Rule {
                    days: job.history_days.unwrap_or(default.days),
                    keep: job.max_runs.or(default.keep),
                };
                (job.name.as_str().to_owned(), rule)
            })
            .collect();
        Policy { default, jobs }
    }

    /// The store write that applies the policy as of `now`.
    pub fn write(&self, now: DateTime<Utc>) -> Write {
        Write::Prune {
            default: self.default.at(now),
            jobs: self.jobs.iter().map(|(job, rule)| (job.clone(), rule.at(now))).collect(),
        }
    }
}

/// Applies the current policy now and then every `every` until cancelled.
pub async fn run(
    store: StoreHandle,
    policy: watch::Receiver<Policy>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let write = policy.borrow().write(Utc::now());
        match store.write_durable(write).await {
            Ok(()) => debug!("Retention applied."),
            Err(e) => warn!(error = %e, "Cannot apply retention; trying again in an hour."),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::config;

    #[test]
    fn a_jobs_own_keys_win_and_zero_days_keeps_for_ever() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jobs.yaml"),
            "saltpeter_config: {history_days: 7, max_runs: 100}\n\
             own: {min: '*', hour: '*', dom: '*', mon: '*', dow: '*', command: 'true', targets: '*', history_days: 0, max_runs: 3}\n\
             inherits: {min: '*', hour: '*', dom: '*', mon: '*', dow: '*', command: 'true', targets: '*'}\n",
        )
        .unwrap();
        let loaded = config::load_dir(dir.path(), Utc::now()).unwrap();
        assert!(loaded.report.errors.is_empty(), "{:?}", loaded.report.errors);
        let mut policy = Policy::new(&loaded.settings, loaded.jobs.values());
        policy.jobs.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(policy.default, Rule { days: 7, keep: Some(100) });
        assert_eq!(
            policy.jobs,
            [
                ("inherits".to_owned(), Rule { days: 7, keep: Some(100) }),
                ("own".to_owned(), Rule { days: 0, keep: Some(3) }),
            ]
        );
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let Write::Prune { default, jobs } = policy.write(now) else { panic!("not a prune") };
        assert_eq!(default.before, Utc.with_ymd_and_hms(2026, 11, 16, 12, 0, 0).unwrap());
        assert_eq!(jobs[1].1.before, DateTime::<Utc>::MIN_UTC);
    }
}
