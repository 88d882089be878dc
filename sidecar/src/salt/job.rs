//! Following a published job: its returns as they arrive, then who did not return in time.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::bus::{BusItem, Subscription};
use super::client::Published;
use super::event::{EventKind, Jid, JobReturn, MinionId};

/// What a followed job yields.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// A minion returned (also one the master did not predict).
    Return(Arc<JobReturn>),
    /// The event bus dropped and came back: returns in the gap may be lost.
    BusGap,
    /// We fell behind the bus and missed this many items.
    Lagged(u64),
    /// The deadline passed: these expected minions did not return. Always the last update.
    NotReturned(Vec<MinionId>),
}

/// A published job being followed; see [`SaltClient::run_job`](super::SaltClient::run_job).
pub struct JobRun {
    sub: Subscription,
    published: Published,
    expected: BTreeSet<MinionId>,
    returned: BTreeSet<MinionId>,
    deadline: Instant,
    done: bool,
}

impl JobRun {
    pub(crate) fn new(sub: Subscription, published: Published, deadline: Instant) -> Self {
        Self {
            sub,
            expected: published.minions.iter().cloned().collect(),
            returned: BTreeSet::new(),
            deadline,
            published,
            done: false,
        }
    }

    pub fn jid(&self) -> &Jid {
        &self.published.jid
    }
    /// The master's prediction of who will answer.
    pub fn expected(&self) -> &[MinionId] {
        &self.published.minions
    }
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Counts `id` as returned, from elsewhere than the bus (the master's job cache): its return
    /// on the bus is then not yielded. False if it had returned already.
    pub fn mark_returned(&mut self, id: MinionId) -> bool {
        self.returned.insert(id)
    }

    /// The next update; `None` once every expected minion returned or after `NotReturned`.
    pub async fn next(&mut self) -> Option<JobUpdate> {
        loop {
            if self.done || (!self.expected.is_empty() && self.expected.is_subset(&self.returned)) {
                self.done = true;
                return None;
            }
            let item = tokio::select! {
                item = self.sub.recv() => item,
                () = tokio::time::sleep_until(self.deadline) => None,
            };
            match item {
                Some(BusItem::Event(e)) => {
                    if let EventKind::JobReturn(r) = &e.kind
                        && r.jid == self.published.jid
                        && self.returned.insert(r.id.clone())
                    {
                        return Some(JobUpdate::Return(Arc::new(r.clone())));
                    }
                }
                Some(BusItem::Disconnected) => return Some(JobUpdate::BusGap),
                Some(BusItem::Lagged(n)) => return Some(JobUpdate::Lagged(n)),
                Some(BusItem::Reconnected) => {}
                None => {
                    self.done = true;
                    let missing = self.expected.difference(&self.returned).cloned().collect();
                    return Some(JobUpdate::NotReturned(missing));
                }
            }
        }
    }
}
