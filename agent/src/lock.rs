//! `flock`-based locks. The kernel drops an `flock` when its holder dies, however it dies, so a
//! lock never goes stale (the original wrote a PID into a file in /tmp: racy, fooled by PID
//! reuse, and open to symlink tricks). Files are opened close-on-exec, so the job never
//! inherits a lock, and without following symlinks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// A held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct Held {
    _lock: Flock<File>,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is held by another process", path.display())]
    Busy { path: PathBuf },
    #[error("open lock file {}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Takes an exclusive lock on `path` without waiting, creating it and its directory (0755).
pub fn try_exclusive(path: &Path) -> Result<Held, LockError> {
    let io_err = |source| LockError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io_err)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(io_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Held { _lock: lock, path: path.to_owned() }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy { path: path.to_owned() }),
        Err((_, errno)) => Err(io_err(io::Error::from(errno))),
    }
}

/// Whether some process holds `path` locked (probing takes and drops a shared lock).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path)
    else {
        return false;
    };
    matches!(Flock::lock(file, FlockArg::LockSharedNonblock), Err((_, Errno::EWOULDBLOCK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/job.lock");
        let first = try_exclusive(&path).unwrap();
        assert!(is_held(&path));
        assert!(matches!(try_exclusive(&path), Err(LockError::Busy { .. })));
        drop(first);
        assert!(!is_held(&path));
        try_exclusive(&path).unwrap();
    }
}
