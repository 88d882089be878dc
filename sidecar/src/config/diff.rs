//! `JobDiff`: what a reload changed, so that only changed jobs are rescheduled and the change can
//! be logged and published.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Job, JobName};

/// Jobs added, removed and changed between two loads (each list sorted by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobDiff {
    pub added: Vec<JobName>,
    pub removed: Vec<JobName>,
    pub changed: Vec<JobName>,
}

impl JobDiff {
    pub fn between(
        old: &BTreeMap<JobName, Arc<Job>>,
        new: &BTreeMap<JobName, Arc<Job>>,
    ) -> JobDiff {
        let mut diff = JobDiff::default();
        for (name, job) in new {
            match old.get(name) {
                None => diff.added.push(name.clone()),
                Some(before) if !Arc::ptr_eq(before, job) && before != job => {
                    diff.changed.push(name.clone())
                }
                Some(_) => {}
            }
        }
        diff.removed = old.keys().filter(|n| !new.contains_key(*n)).cloned().collect();
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}
