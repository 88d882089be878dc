//! Hot reload: follow the config directory with `notify` (inotify on Linux), plus a slow rescan
//! of file sizes and modification times for filesystems that send no events (NFS, some bind
//! mounts). Events are debounced; each settled change reloads the directory and, if anything
//! changed, sends the new configuration and its `JobDiff`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use notify::Watcher as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{JobDiff, Loaded, reload};

#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Quiet time after the last event before reloading (editors write in several steps).
    pub debounce: Duration,
    /// How often to compare file sizes and times when no event came.
    pub rescan: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { debounce: Duration::from_millis(200), rescan: Duration::from_secs(30) }
    }
}

/// A reload that changed something.
#[derive(Clone, Debug)]
pub struct Reloaded {
    pub loaded: Loaded,
    pub diff: JobDiff,
}

/// Follows `dir` until `cancel`, starting from `current`; sends each effective reload on `out`.
pub async fn watch(
    dir: PathBuf,
    mut current: Loaded,
    options: WatchOptions,
    out: mpsc::Sender<Reloaded>,
    cancel: CancellationToken,
) {
    let (poke, mut events) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files (our own reload included) raises access events: only changes count,
        // or every reload would trigger the next.
        let change = |kind: &notify::EventKind| match kind {
            notify::EventKind::Access(access) => {
                matches!(access, notify::event::AccessKind::Close(notify::event::AccessMode::Write))
            }
            _ => true,
        };
        if event.is_ok_and(|e| change(&e.kind)) {
            // One pending wake-up is enough: the reload reads everything.
            let _ = poke.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "Cannot watch the config directory; relying on the periodic rescan.");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "No file watcher; relying on the periodic rescan.");
            None
        }
    };
    // Files changed between the load and the watcher's start are caught by comparing with the
    // fingerprint taken at load time.
    let mut stamp = current.stamp.clone();
    let mut changed_since_load = fingerprint(&dir) != stamp;
    let mut rescan = tokio::time::interval(options.rescan);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    loop {
        if std::mem::take(&mut changed_since_load) {
            // Reload at once, below.
        } else {
            tokio::select! {
                () = cancel.cancelled() => return,
                Some(()) = events.recv() => {
                    // Debounce: wait for a quiet period.
                    loop {
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            Some(()) = events.recv() => continue,
                            () = tokio::time::sleep(options.debounce) => break,
                        }
                    }
                }
                _ = rescan.tick() => {
                    let now_stamp = fingerprint(&dir);
                    if now_stamp == stamp {
                        continue;
                    }
                }
            }
        }
        stamp = fingerprint(&dir);
        let (dir2, previous) = (dir.clone(), current.clone());
        let loaded = match tokio::task::spawn_blocking(move || reload(&dir2, &previous, Utc::now()))
            .await
        {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                warn!(dir = %dir.display(), error = %e, "Cannot read the config directory; keeping the current jobs.");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "The reload task failed; keeping the current jobs.");
                continue;
            }
        };
        let diff = JobDiff::between(&current.jobs, &loaded.jobs);
        let same = diff.is_empty()
            && loaded.report == current.report
            && loaded.settings == current.settings
            && loaded.maintenance == current.maintenance;
        if same {
            continue;
        }
        for d in loaded.report.errors.iter().filter(|d| !current.report.errors.contains(d)) {
            warn!("{d}");
        }
        info!(added = ?names(&diff.added), removed = ?names(&diff.removed), changed = ?names(&diff.changed), "Reloaded the job definitions.");
        current = loaded.clone();
        if out.send(Reloaded { loaded, diff }).await.is_err() {
            return;
        }
    }
}

fn names(list: &[super::JobName]) -> Vec<&str> {
    list.iter().map(|n| n.as_str()).collect()
}

/// Names, sizes and modification times of the directory's entries.
pub(super) fn fingerprint(dir: &Path) -> super::load::Fingerprint {
    let Ok(entries) = fs_err::read_dir(dir) else { return Vec::new() };
    let mut stamp: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    stamp.sort();
    stamp
}
