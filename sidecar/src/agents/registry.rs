//! Who may connect, and who is connected: the per-run, per-minion tokens the run engine issues at
//! dispatch, and the outbound queue of every live agent session. The run engine and the agent
//! server share it; neither awaits the other through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use saltpeter_protocol::{KillReason, ServerMessage, Token};
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

#[derive(Default)]
struct Inner {
    tokens: HashMap<RunMinion, Token>,
    sessions: HashMap<RunMinion, mpsc::Sender<ServerMessage>>,
    /// Kills asked for while no session was connected: delivered when the agent connects.
    pending_kills: HashMap<RunMinion, KillReason>,
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
