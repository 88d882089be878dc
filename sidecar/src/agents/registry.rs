//! Who may connect, and who is connected: the per-run, per-minion tokens the run engine issues at
//! dispatch, and the outbound queue of every live agent session. The run engine and the agent
//! server share it; neither awaits the other through it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use saltpeter_protocol::{DispatchId, KillReason, ManifestEntry, ServerMessage, Token};
use tokio::sync::mpsc;

/// A minion's part of a run: (instance, minion id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunMinion {
    pub instance: String,
    pub minion: String,
}

impl RunMinion {
    pub fn new(instance: impl Into<String>, minion: impl Into<String>) -> Self {
        RunMinion { instance: instance.into(), minion: minion.into() }
    }
}

/// A minion clock further off than this is warned about.
pub(crate) const SKEW_WARNING: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Default)]
struct Inner {
    tokens: HashMap<RunMinion, Token>,
    sessions: HashMap<RunMinion, mpsc::Sender<ServerMessage>>,
    /// Kills asked for while no session was connected: delivered when the agent connects.
    pending_kills: HashMap<RunMinion, KillReason>,
    /// Coalesced dispatches whose runs are not all final, and the dispatch of each run-minion.
    dispatches: HashMap<DispatchId, Dispatch>,
    dispatch_of: HashMap<RunMinion, DispatchId>,
    /// Each minion's clock minus ours, in milliseconds, from its agent's last hello.
    skews: HashMap<String, i64>,
}

/// One coalesced dispatch: its token and the manifest of each minion.
struct Dispatch {
    token: Token,
    manifests: HashMap<String, Vec<ManifestEntry>>,
    /// Minions whose agent fetched its manifest.
    served: HashSet<String>,
    /// Run-minions not final yet; the dispatch is forgotten with the last.
    open: usize,
}

/// Why a manifest is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRefused {
    /// No such dispatch (it ended, or this sidecar restarted since).
    Unknown,
    /// The token is not the dispatch's.
    Unauthorized,
}

/// Cheap to clone; every clone sees the same registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section is a map insert or lookup: a panic cannot leave it half done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets the agent for `key` connect with `token`.
    pub fn expect(&self, key: RunMinion, token: Token) {
        self.lock().tokens.insert(key, token);
    }

    /// Whether `token` is the one issued for `key`. Comparison takes the same time wherever
    /// the tokens differ.
    pub fn token_ok(&self, key: &RunMinion, token: &str) -> bool {
        self.lock().tokens.get(key).is_some_and(|t| constant_time_eq(t.as_str(), token))
    }

    /// Forgets `key` once its result is final.
    pub fn forget(&self, key: &RunMinion) {
        let mut inner = self.lock();
        inner.tokens.remove(key);
        inner.pending_kills.remove(key);
        if let Some(id) = inner.dispatch_of.remove(key)
            && let Some(d) = inner.dispatches.get_mut(&id)
        {
            d.open = d.open.saturating_sub(1);
            if d.open == 0 {
                inner.dispatches.remove(&id);
            }
        }
    }

    /// Lets the agents of dispatch `id` fetch their minion's manifest with `token`; every run
    /// of it may then connect with that token too.
    pub fn expect_dispatch(
        &self,
        id: DispatchId,
        token: Token,
        manifests: HashMap<String, Vec<ManifestEntry>>,
    ) {
        let mut inner = self.lock();
        let mut open = 0;
        for (minion, entries) in &manifests {
            for entry in entries {
                let key = RunMinion::new(entry.job_instance.as_str(), minion.as_str());
                inner.tokens.insert(key.clone(), token.clone());
                inner.dispatch_of.insert(key, id.clone());
                open += 1;
            }
        }
        inner.dispatches.insert(id, Dispatch { token, manifests, served: HashSet::new(), open });
    }

    /// The manifest of `minion` in dispatch `id`, if `token` is the dispatch's: its entries
    /// whose runs are not final yet. Marks the minion as served.
    pub fn manifest(
        &self,
        id: &DispatchId,
        minion: &str,
        token: &str,
    ) -> Result<Vec<ManifestEntry>, ManifestRefused> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(d) = inner.dispatches.get_mut(id) else {
            return Err(ManifestRefused::Unknown);
        };
        if !constant_time_eq(d.token.as_str(), token) {
            return Err(ManifestRefused::Unauthorized);
        }
        d.served.insert(minion.to_owned());
        let entries = d.manifests.get(minion).cloned().unwrap_or_default();
        Ok(entries
            .into_iter()
            .filter(|e| inner.tokens.contains_key(&RunMinion::new(e.job_instance.as_str(), minion)))
            .collect())
    }

    /// Takes `minion`'s manifest out of dispatch `id` unless its agent already fetched it:
    /// the runs it names are then dispatched another way, and the late agent gets none.
    /// Returns the instances withdrawn.
    pub fn withdraw(&self, id: &DispatchId, minion: &str) -> Option<Vec<String>> {
        let mut inner = self.lock();
        let d = inner.dispatches.get_mut(id)?;
        if d.served.contains(minion) {
            return None;
        }
        let entries = d.manifests.remove(minion)?;
        d.open = d.open.saturating_sub(entries.len());
        if d.open == 0 {
            inner.dispatches.remove(id);
        }
        Some(entries.into_iter().map(|e| e.job_instance.as_str().to_owned()).collect())
    }

    /// Whether the agent of `minion` fetched its manifest of dispatch `id`.
    pub fn served(&self, id: &DispatchId, minion: &str) -> bool {
        self.lock().dispatches.get(id).is_some_and(|d| d.served.contains(minion))
    }

    /// Registers a live session; returns a kill asked for before it connected, if any.
    pub fn attach(&self, key: RunMinion, tx: mpsc::Sender<ServerMessage>) -> Option<KillReason> {
        let mut inner = self.lock();
        inner.sessions.insert(key.clone(), tx);
        inner.pending_kills.remove(&key)
    }

    /// Removes a session, unless a newer one for the same key replaced it.
    pub fn detach(&self, key: &RunMinion, tx: &mpsc::Sender<ServerMessage>) {
        let mut inner = self.lock();
        if inner.sessions.get(key).is_some_and(|t| t.same_channel(tx)) {
            inner.sessions.remove(key);
        }
    }

    /// Queues `kill` for the agent of `key`. Returns false when no session could take it now
    /// (not connected, or its queue is full); it is then delivered if the agent connects.
    pub fn kill(&self, key: &RunMinion, reason: KillReason, message: ServerMessage) -> bool {
        let mut inner = self.lock();
        let sent = inner.sessions.get(key).is_some_and(|tx| tx.try_send(message).is_ok());
        if !sent {
            inner.pending_kills.insert(key.clone(), reason);
        }
        sent
    }

    /// Records the clock skew of `minion` from the timestamp of its agent's hello (sent just
    /// now: the transit time counts as skew, milliseconds on a LAN), and warns past
    /// [`SKEW_WARNING`].
    pub fn note_skew(&self, minion: &str, hello: &saltpeter_protocol::Timestamp) {
        let skew = (hello.0 - chrono::Utc::now()).num_milliseconds();
        if u128::from(skew.unsigned_abs()) > SKEW_WARNING.as_millis() {
            tracing::warn!(
                minion,
                skew_ms = skew,
                "The minion's clock is off; pre-armed runs start off by as much."
            );
        }
        self.lock().skews.insert(minion.to_owned(), skew);
    }

    /// The clock skew of `minion` in milliseconds, if its agent said hello.
    pub fn skew(&self, minion: &str) -> Option<i64> {
        self.lock().skews.get(minion).copied()
    }

    /// The clock skew of every minion whose agent said hello, in milliseconds (minion minus
    /// sidecar).
    pub fn skews(&self) -> Vec<(String, i64)> {
        let mut all: Vec<_> = self.lock().skews.iter().map(|(m, s)| (m.clone(), *s)).collect();
        all.sort();
        all
    }

    /// How many agent sessions are connected.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_run_and_minion() {
        let r = Registry::default();
        let key = RunMinion::new("j_1", "m1");
        r.expect(key.clone(), Token::new("s3cret"));
        assert!(r.token_ok(&key, "s3cret"));
        assert!(!r.token_ok(&key, "s3cre"));
        assert!(!r.token_ok(&RunMinion::new("j_1", "m2"), "s3cret"));
        r.forget(&key);
        assert!(!r.token_ok(&key, "s3cret"));
    }
}
