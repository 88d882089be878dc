//! The only module with `unsafe`: hooks that run in the child between `fork` and `exec`. Only
//! async-signal-safe calls happen there (plain system calls on values prepared before the
//! fork); nothing allocates or takes a lock.

use std::os::unix::process::CommandExt as _;

use nix::unistd::{Gid, Uid, setgid, setgroups, setsid, setuid};

/// The identity the job switches to, prepared before the fork.
#[derive(Clone, Debug)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// The child starts a new session, so it leads its own process group and has no controlling
/// terminal: the agent's detached daemon, and every job (so `killpg` reaches all it starts).
pub fn new_session(cmd: &mut std::process::Command) {
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent; the closure
    // captures nothing.
    unsafe {
        cmd.pre_exec(|| {
            setsid()?;
            Ok(())
        });
    }
}

/// Like [`new_session`], then drops to `identity` the way `login` does: supplementary groups
/// first, then the primary group, then the user (after `setuid` the others are refused).
pub fn new_session_as(cmd: &mut std::process::Command, identity: Identity) {
    // SAFETY: setsid, setgroups, setgid and setuid are single system calls on values built
    // before the fork (the Vec is allocated already; nix passes its pointer and length
    // without allocating). After a fork only this thread exists, so glibc's cross-thread
    // set*id broadcast has no one to signal.
    unsafe {
        cmd.pre_exec(move || {
            setsid()?;
            setgroups(&identity.groups)?;
            setgid(identity.gid)?;
            setuid(identity.uid)?;
            Ok(())
        });
    }
}
