//! Event decode throughput: a recorded stream of job returns (1 KB and 100 KB of `cmd.run`
//! output, captured from a 3007.17 master's pub socket) decoded by our reader, side by side with
//! Salt's own Python event code decoding the same bytes.
//!
//! `cargo bench -p saltpeter --bench salt_decode -- [--python PATH]`; PATH is a Python with Salt
//! installed (default: `$SALTPETER_SALT_PYTHON`, else `python3`).
//!
//! Both sides report the best of [`ROUNDS`] by wall clock and by the decoding thread's CPU time
//! (ours from `/proc/thread-self/schedstat`, Python's `time.thread_time()`): on a shared, loaded
//! machine the wall clock also measures the scheduler, the CPU time measures the decoder.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use saltpeter::salt::{EventKind, FrameDecoder};

const RECORDED: &[u8] = include_bytes!("data/returns-3007.17.bin");
const CHUNK: usize = 64 * 1024;
const ROUNDS: usize = 9;

/// The recorded `cmd.run` returns, as (output size, frame bytes).
fn recorded_returns() -> Vec<(usize, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut d = FrameDecoder::new();
    d.extend(RECORDED);
    let mut offset = 0;
    loop {
        let before = d.pending();
        let Some(event) = d.next_event().unwrap() else { break };
        let used = before - d.pending();
        if let EventKind::JobReturn(r) = &event.unwrap().kind
            && r.fun == "cmd.run"
        {
            let size = r.ret.as_text().map_or(0, |t| t.len());
            frames.push((size, RECORDED[offset..offset + used].to_vec()));
        }
        offset += used;
    }
    frames
}

struct Run {
    events: usize,
    bytes: usize,
    /// Best wall-clock time of a round.
    best: Duration,
    /// Best CPU time of a round (the decoding thread).
    best_cpu: Duration,
}

impl Run {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.best.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.best.as_secs_f64()
    }
    fn events_per_cpu_s(&self) -> f64 {
        self.events as f64 / self.best_cpu.as_secs_f64()
    }
}

/// This thread's CPU time so far (the first field of schedstat, in nanoseconds).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Decodes `stream` in 64 KiB reads; `full` also decodes each whole data map to `rmpv::Value`
/// (what Salt's Python does), otherwise the typed fields only, with `return` left packed.
fn decode(stream: &[u8], full: bool) -> Run {
    let (mut best, mut best_cpu) = (Duration::MAX, Duration::MAX);
    let mut events = 0;
    for _ in 0..ROUNDS {
        let cpu = thread_cpu();
        let started = Instant::now();
        let mut d = FrameDecoder::new();
        events = 0;
        for piece in stream.chunks(CHUNK) {
            d.extend(piece);
            while let Some(event) = d.next_event().unwrap() {
                let event = event.unwrap();
                if full {
                    black_box(event.decode_data().unwrap());
                }
                if let EventKind::JobReturn(r) = &event.kind {
                    black_box(r.retcode);
                }
                black_box(&event);
                events += 1;
            }
        }
        best = best.min(started.elapsed());
        best_cpu = best_cpu.min(thread_cpu() - cpu);
    }
    Run { events, bytes: stream.len(), best, best_cpu }
}

fn python_run(python: &str, files: &[std::path::PathBuf]) -> Vec<Option<Run>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/salt_decode.py");
    let out =
        std::process::Command::new(python).arg(script).arg(ROUNDS.to_string()).args(files).output();
    let Ok(out) = out else {
        return files.iter().map(|_| None).collect();
    };
    if !out.status.success() {
        eprintln!("python side failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    files
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let v = lines.get(i)?;
            Some(Run {
                events: usize::try_from(v["events"].as_u64()?).ok()?,
                bytes: usize::try_from(v["bytes"].as_u64()?).ok()?,
                best: Duration::from_secs_f64(v["seconds"].as_f64()?),
                best_cpu: Duration::from_secs_f64(v["cpu_seconds"].as_f64()?),
            })
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let python = args
        .iter()
        .position(|a| a == "--python")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("SALTPETER_SALT_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_owned());

    let returns = recorded_returns();
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (label, size, copies) in [("1 KB returns", 1024, 20_000), ("100 KB returns", 102_400, 400)]
    {
        let (_, frame) = returns.iter().find(|(s, _)| *s == size).expect("a recorded return");
        let stream: Vec<u8> = frame.repeat(copies);
        let file = dir.path().join(format!("{size}.bin"));
        std::fs::write(&file, &stream).unwrap();
        cases.push((label, frame.len(), stream, file));
    }
    let files: Vec<_> = cases.iter().map(|c| c.3.clone()).collect();
    let py = python_run(&python, &files);

    println!("Salt event decode, best of {ROUNDS}, 64 KiB reads (Python: {python})");
    println!(
        "{:<16} {:>7} {:>9} | {:>24} | {:>24} | {:>24} | {:>10} | {:>10}",
        "stream",
        "frame B",
        "events",
        "ours: typed (return lazy)",
        "ours: + full data decode",
        "Salt Python",
        "speedup",
        "CPU-time"
    );
    for ((label, frame_len, stream, _), py) in cases.iter().zip(py) {
        let typed = decode(stream, false);
        let full = decode(stream, true);
        let cell = |r: &Run| format!("{:>9.0} ev/s {:>7.0} MB/s", r.events_per_s(), r.mb_per_s());
        let (py_cell, speedup, cpu_speedup) = match &py {
            Some(p) => (
                cell(p),
                format!(
                    "{:.0}x / {:.0}x",
                    typed.events_per_s() / p.events_per_s(),
                    full.events_per_s() / p.events_per_s()
                ),
                format!(
                    "{:.0}x / {:.0}x",
                    typed.events_per_cpu_s() / p.events_per_cpu_s(),
                    full.events_per_cpu_s() / p.events_per_cpu_s()
                ),
            ),
            None => ("(not run)".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{label:<16} {frame_len:>7} {:>9} | {} | {} | {py_cell} | {speedup:>10} | {cpu_speedup:>10}",
            typed.events,
            cell(&typed),
            cell(&full)
        );
        let per_event = |r: &Run| r.best_cpu.as_secs_f64() * 1e9 / r.events as f64;
        println!(
            "{:<16} CPU per event: ours typed {:.0} ns, ours full {:.0} ns, Salt Python {}",
            "",
            per_event(&typed),
            per_event(&full),
            py.as_ref().map_or("-".to_owned(), |p| format!("{:.0} ns", per_event(p)))
        );
    }
    println!("speedup = ours typed / Salt, ours full / Salt (events per second of wall clock);");
    println!("CPU-time = the same by the decoding thread's CPU time (robust to a loaded machine)");
}
