//! CPU and memory of groups of processes, sampled from `/proc` by a background thread: a
//! scheduler (one process, or every process carrying a marker in its environment) and each
//! minion of a lab (every process whose environment carries the minion's `SALTLAB_NODE` tag:
//! the `salt-minion` tree, the job processes it forks, and the agents and commands those
//! start, which inherit the minion's environment even after they detach).
//!
//! CPU is the sum over every process seen of its last `utime + stime` seen, minus what it had
//! used when sampling began; a process born and gone between two samples (250 ms) is missed, so
//! the figure is a lower bound. Memory is the peak, over samples, of the group's summed RSS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which processes belong to a group.
#[derive(Debug, Clone)]
pub(crate) enum Member {
    /// Exactly this process.
    Pid(u32),
    /// Every process whose environment holds this exact `KEY=value` entry.
    Env(String),
}

#[derive(Debug, Default, Clone)]
struct Usage {
    /// (pid, start time in ticks) → (CPU seconds when first seen, CPU seconds when last seen).
    cpu: HashMap<(u32, u64), (f64, f64)>,
    peak_rss_mib: f64,
    peak_procs: usize,
}

/// What a group used while it was sampled.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) name: String,
    pub(crate) cpu_secs: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) peak_procs: usize,
}

pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    groups: Vec<(String, Member)>,
    usage: Arc<Mutex<Vec<Usage>>>,
    started: Instant,
}

impl Sampler {
    /// Starts sampling `groups` (name, membership) every 250 ms.
    pub(crate) fn start(groups: Vec<(String, Member)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let usage = Arc::new(Mutex::new(vec![Usage::default(); groups.len()]));
        let thread = {
            let (stop, usage, members) =
                (stop.clone(), usage.clone(), groups.iter().map(|g| g.1.clone()).collect());
            std::thread::spawn(move || sample_loop(&stop, &usage, members))
        };
        Sampler { stop, thread: Some(thread), groups, usage, started: Instant::now() }
    }

    /// Stops sampling and returns each group's figures and the time sampled.
    pub(crate) fn finish(mut self) -> (Vec<Figures>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let usage = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let figures = self
            .groups
            .iter()
            .zip(usage.iter())
            .map(|((name, _), u)| Figures {
                name: name.clone(),
                cpu_secs: u.cpu.values().map(|(first, last)| last - first).sum(),
                peak_rss_mib: u.peak_rss_mib,
                peak_procs: u.peak_procs,
            })
            .collect();
        (figures, self.started.elapsed())
    }
}

fn sample_loop(stop: &AtomicBool, usage: &Mutex<Vec<Usage>>, members: Vec<Member>) {
    // pid+starttime → the env markers of that process (read once per process).
    let mut environs: HashMap<(u32, u64), String> = HashMap::new();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let mut rss = vec![0.0; members.len()];
        let mut procs = vec![0usize; members.len()];
        let mut seen: Vec<Vec<(u32, u64, f64)>> = vec![Vec::new(); members.len()];
        for pid in pids() {
            let Some(stat) = Stat::read(pid) else { continue };
            let environ = environs.entry((pid, stat.start)).or_insert_with(|| {
                fs_err::read(format!("/proc/{pid}/environ"))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            });
            for (i, member) in members.iter().enumerate() {
                let ours = match member {
                    Member::Pid(p) => *p == pid,
                    Member::Env(entry) => environ.split('\0').any(|e| e == entry),
                };
                if ours {
                    rss[i] += stat.rss_mib;
                    procs[i] += 1;
                    seen[i].push((pid, stat.start, stat.cpu_secs));
                }
            }
        }
        {
            let mut usage = usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, u) in usage.iter_mut().enumerate() {
                u.peak_rss_mib = u.peak_rss_mib.max(rss[i]);
                u.peak_procs = u.peak_procs.max(procs[i]);
                for &(pid, start, cpu) in &seen[i] {
                    // A process already running when sampling began counts from then on; one
                    // born since, from its start.
                    let base = if first { cpu } else { 0.0 };
                    u.cpu.entry((pid, start)).or_insert((base, cpu)).1 = cpu;
                }
            }
        }
        first = false;
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn pids() -> Vec<u32> {
    fs_err::read_dir("/proc")
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

struct Stat {
    /// Start time after boot, in clock ticks: with the pid, it names one process.
    start: u64,
    cpu_secs: f64,
    rss_mib: f64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        // After the `)`: state is field 0, utime 11, stime 12, starttime 19, rss (pages) 21.
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            start: num(19)?,
            cpu_secs: (num(11)? + num(12)?) as f64 / 100.0,
            rss_mib: num(21)? as f64 * 4096.0 / (1024.0 * 1024.0),
        })
    }
}

/// One line per group: CPU seconds over the time sampled and peak RSS.
pub(crate) fn report(what: &str, figures: &[Figures], over: Duration) {
    for f in figures {
        println!(
            "{what} {}: {:.1} s CPU over {:.0} s, peak RSS {:.0} MiB (peak {} processes)",
            f.name,
            f.cpu_secs,
            over.as_secs_f64(),
            f.peak_rss_mib,
            f.peak_procs
        );
    }
}
