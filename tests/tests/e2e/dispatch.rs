//! Fleet-scale firing: coalesced dispatch (every run due at one instant reaches each minion in
//! one Salt publish, the agent fetching its manifest over its WebSocket), job content kept off
//! the Salt bus, pre-armed starts, and the paths that run beside it (the `SP_*` wrapper,
//! `use_wrapper: false`).

use std::io::Read as _;
use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use saltpeter_tests::{Lab, LabConfig, RunRecord, Sidecar, wait_until};

const LIMIT: Duration = Duration::from_secs(240);

/// A job firing once, at `at` (UTC).
fn once(name: &str, at: DateTime<Utc>, body: &str) -> String {
    let mut yaml = format!(
        "{name}:\n  sec: {}\n  min: {}\n  hour: {}\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  utc: true\n",
        at.second(),
        at.minute(),
        at.hour()
    );
    for line in body.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// A job every `every` seconds.
fn every(name: &str, every: u32, body: &str) -> String {
    saltpeter_tests::job_every(name, every, body)
}

/// `salt-run state.event` printing every event of the lab's master bus, one `tag\tjson` line
/// each, into a pipe; live once it has seen a `test.ping` we publish.
struct BusWatcher {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BusWatcher {
    fn start(lab: &Lab) -> BusWatcher {
        let mut child = lab
            .salt_command("salt-run")
            .args(["state.event", "pretty=False"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salt-run state.event");
        let mut stdout = child.stdout.take().expect("piped");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let watcher = BusWatcher { child, out };
        wait_until("state.event to see our test.ping", Duration::from_secs(60), || {
            let out = lab.salt(&["minion-1", "test.ping", "--timeout=5"]);
            assert!(out.status.success(), "{out:?}");
            watcher.text().contains("\"fun\": \"test.ping\"").then_some(())
        });
        watcher
    }

    fn text(&self) -> String {
        self.out.lock().expect("lock").clone()
    }
}

impl Drop for BusWatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `salt/job/<jid>/new` lines of `bus`, each with its function.
fn publishes(bus: &str) -> Vec<String> {
    bus.lines()
        .filter(|l| {
            l.starts_with("salt/job/") && l.split('\t').next().is_some_and(|t| t.ends_with("/new"))
        })
        .map(|l| {
            let fun =
                l.split("\"fun\": \"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
            let tag = l.split('\t').next().unwrap_or_default();
            format!("{tag} {fun}")
        })
        .collect()
}

/// Every file under `dir`, as bytes, with its path.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, bytes));
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The first run of each `burst-NNN` job, once all have finished.
fn all_finished(sidecar: &Sidecar, n: usize) -> Vec<RunRecord> {
    wait_until(&format!("{n} finished runs"), LIMIT, || {
        let mut runs = Vec::with_capacity(n);
        for i in 0..n {
            let run = sidecar.finished_runs(&format!("burst-{i:03}")).into_iter().next()?;
            runs.push(run);
        }
        Some(runs)
    })
}

#[test]
fn two_hundred_jobs_due_at_once_are_a_handful_of_publishes_with_every_result() {
    // Its own lab: the publishes on its bus are this test's alone.
    let lab = Lab::start(LabConfig::default()).expect("a lab");
    // Built before the instant is chosen: a build takes long on a busy machine.
    saltpeter_tests::bin("saltpeter");
    saltpeter_tests::bin("saltpeter-agent");
    let bus = BusWatcher::start(&lab);
    let already = publishes(&bus.text()).len();
    let at = Utc::now() + chrono::Duration::seconds(25);
    let n = 200;
    let mut jobs = String::new();
    for i in 0..n {
        let body = format!(
            "targets: '*'\nenv:\n  SECRET: envmark-{i}\ncommand: ': cmdmark; test \"$SECRET\" = envmark-{i} && echo ok-{i}; exit {}'",
            i % 4
        );
        jobs.push_str(&once(&format!("burst-{i:03}"), at, &body));
    }
    let sidecar = Sidecar::start(&lab, &jobs);
    let runs = all_finished(&sidecar, n);
    let mut results = 0;
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.results.len(), 3, "{run:#?}");
        for r in &run.results {
            assert_eq!(r.retcode, Some(i32::try_from(i % 4).expect("small")), "{run:#?}");
            assert_eq!(r.output, format!("ok-{i}\n"), "{run:#?}");
            results += 1;
        }
    }
    assert_eq!(results, 3 * n);
    let text = bus.text();
    let ours: Vec<String> = publishes(&text).into_iter().skip(already).collect();
    eprintln!("publishes for {n} jobs x 3 minions: {ours:#?}");
    assert!(ours.len() <= 5, "a handful of publishes, not one per run: {ours:#?}");
    assert!(ours.iter().any(|p| p.ends_with("cmd.run")), "{ours:#?}");
    // Job content stays off the bus and out of the master's job cache.
    for marker in ["cmdmark", "envmark"] {
        assert!(!text.contains(marker), "`{marker}` is on the master bus");
        let cache = lab.cachedir.join("jobs");
        for (path, bytes) in files_under(&cache) {
            assert!(
                !contains(&bytes, marker),
                "`{marker}` is in the job cache: {}",
                path.display()
            );
        }
    }
    assert!(sidecar.log().contains("Coalesced dispatch"), "the coalesced path was taken");
}

#[test]
fn a_failed_launch_gives_every_run_of_the_dispatch_salts_code() {
    let lab = Lab::shared();
    let mut jobs = every(
        "nowhere-a",
        5,
        "targets: minion-2\nwrapper_path: /nonexistent/saltpeter-agent\ndispatch: coalesced\ncommand: 'echo a'",
    );
    jobs.push_str(&every("nowhere-b", 5, "targets: minion-2\nwrapper_path: /nonexistent/saltpeter-agent\ndispatch: coalesced\ncommand: 'echo b'"));
    let sidecar = Sidecar::start(lab, &jobs);
    for job in ["nowhere-a", "nowhere-b"] {
        let run = sidecar.wait_for_run(job, LIMIT, |r| r.status != "skipped");
        assert_eq!(run.status, "failed", "{run:#?}");
        assert_eq!(run.results[0].retcode, Some(127), "{run:#?}");
        let reason = &run.results[0].reason;
        assert!(reason.contains("/nonexistent/saltpeter-agent"), "Salt's output is kept: {run:#?}");
    }
}

/// `(minion, path, phase)` of each minion of `instance`, from the run store.
fn paths(sidecar: &Sidecar, instance: &str) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        sidecar.state_dir.join("saltpeter.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the run store");
    db.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let mut q = db
        .prepare("SELECT minion, path, phase FROM results WHERE instance = ?1 ORDER BY minion")
        .expect("prepare");
    q.query_map([instance], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The instant of a run, from its instance id (`<job>_<unix seconds>`).
fn instant_of(instance: &str) -> i64 {
    instance.rsplit('_').next().and_then(|s| s.parse().ok()).expect("an instance id")
}

/// The value of the `/metrics` series `series` (name and labels, as printed), if present.
fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    let url = format!("{}/metrics", sidecar.api_url());
    let text = ureq::get(&url).call().ok()?.into_body().read_to_string().ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn build_binaries() {
    saltpeter_tests::bin("saltpeter");
    saltpeter_tests::bin("saltpeter-agent");
}

#[test]
fn pre_armed_runs_start_at_their_instant_never_before() {
    let lab = Lab::shared();
    build_binaries();
    let at = Utc::now() + chrono::Duration::seconds(20);
    let jobs = once("armed", at, "targets: '*'\nlead_time: 5\ncommand: 'date +%s.%N'");
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("armed", LIMIT, |_| true);
    assert_eq!(run.status, "succeeded", "{run:#?}");
    assert_eq!(instant_of(&run.instance), at.timestamp());
    for r in &run.results {
        let started: f64 = r.output.trim().parse().expect("the command printed its start time");
        assert!(
            started >= at.timestamp() as f64,
            "{} started at {started}, before its instant {}",
            r.minion,
            at.timestamp()
        );
    }
    for (minion, path, _) in paths(&sidecar, &run.instance) {
        assert_eq!(path, "armed", "{minion} was armed before the instant");
    }
    // One firing, one coalesced publish for the 3 minions, 3 minion runs armed in time, and
    // each minion's clock skew (the lab's minions share this host's clock: well under 1 s).
    let coalesced = "saltpeter_dispatch_publishes_total{mode=\"coalesced\"}";
    assert_eq!(metric(&sidecar, coalesced), Some(1.0));
    assert_eq!(metric(&sidecar, "saltpeter_dispatch_publishes_per_firing_sum"), Some(1.0));
    let armed = "saltpeter_prearmed_minion_runs_total{outcome=\"armed\"}";
    assert_eq!(metric(&sidecar, armed), Some(3.0));
    for minion in ["minion-1", "minion-2", "minion-3"] {
        let skew = format!("saltpeter_minion_clock_skew_seconds{{minion=\"{minion}\"}}");
        let value = metric(&sidecar, &skew).unwrap_or(f64::NAN);
        assert!(value.abs() < 1.0, "{skew} = {value}");
    }
}

#[test]
fn a_kill_during_the_lead_window_cancels_the_armed_run() {
    let lab = Lab::shared();
    build_binaries();
    let marker = format!("/tmp/sp-cancelled-{}", std::process::id());
    let at = Utc::now() + chrono::Duration::seconds(40);
    let jobs = once(
        "cancelme",
        at,
        &format!("targets: minion-1\nlead_time: 25\ncommand: 'touch {marker}; sleep 100'"),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    let armed = wait_until("the run to be armed", LIMIT, || {
        sidecar
            .all_runs("cancelme")
            .into_iter()
            .find(|r| paths(&sidecar, &r.instance).iter().any(|(_, _, phase)| phase == "armed"))
    });
    assert!(Utc::now() < at, "armed before the instant");
    let out = sidecar.cli(&["kill", &armed.instance]);
    assert!(out.status.success(), "{out:?}");
    let run = sidecar.wait_for_run("cancelme", LIMIT, |r| r.instance == armed.instance);
    assert!(Utc::now() < at + chrono::Duration::seconds(5), "cancelled, not run and killed");
    assert_eq!(run.results[0].retcode, Some(143), "{run:#?}");
    assert!(run.results[0].reason.contains("cancelled"), "{run:#?}");
    assert!(!std::path::Path::new(&marker).exists(), "the command never ran");
    let survivors: Vec<_> = fs_err::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(survivors.is_empty(), "{survivors:?}");
}

#[test]
fn a_minion_that_cannot_arm_falls_back_and_still_runs() {
    let lab = Lab::shared();
    build_binaries();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wrapper = dir.path().join("saltpeter-agent");
    let at = Utc::now() + chrono::Duration::seconds(40);
    let jobs = once(
        "latecomer",
        at,
        &format!(
            "targets: minion-3\nlead_time: 20\nwrapper_path: {}\ncommand: 'echo fell back'",
            wrapper.display()
        ),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    // The pre-armed launch fails (no agent there yet); then the agent appears.
    wait_until("the pre-armed launch to fail", LIMIT, || {
        sidecar.log().contains("A pre-armed launch failed").then_some(())
    });
    assert!(Utc::now() < at, "the launch failed in the lead window");
    std::os::unix::fs::symlink(saltpeter_tests::bin("saltpeter-agent"), &wrapper)
        .expect("install the agent");
    let run = sidecar.wait_for_run("latecomer", LIMIT, |_| true);
    assert_eq!(
        (run.status.as_str(), run.results[0].output.as_str()),
        ("succeeded", "fell back\n"),
        "{run:#?}"
    );
    let recorded = paths(&sidecar, &run.instance);
    assert_eq!(recorded[0].1, "fallback", "{recorded:?}");
    // Two coalesced publishes (the pre-armed one, then the fallback) and one fallen back.
    let coalesced = "saltpeter_dispatch_publishes_total{mode=\"coalesced\"}";
    assert_eq!(metric(&sidecar, coalesced), Some(2.0));
    let fell_back = "saltpeter_prearmed_minion_runs_total{outcome=\"fallback\"}";
    assert_eq!(metric(&sidecar, fell_back), Some(1.0));
    assert_eq!(metric(&sidecar, "saltpeter_prearmed_minion_runs_total{outcome=\"armed\"}"), None);
}

#[test]
fn the_original_wrapper_and_use_wrapper_false_run_beside_coalesced_jobs_in_the_same_second() {
    let lab = Lab::shared();
    build_binaries();
    // The wrapper of the PyPI `saltpeter` 0.9.30 package, installed in the lab's venv.
    let python = lab.venv.join("bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", "import saltpeter.wrapper as w; print(w.__file__)"])
        .output()
        .expect("run the venv's python");
    let wrapper_py = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && !wrapper_py.is_empty(), "saltpeter 0.9.30 is in the venv");
    let dir = tempfile::tempdir().expect("a temp dir");
    let shim = dir.path().join("sp_wrapper.py");
    fs_err::write(&shim, format!("#!/bin/sh\nexec {} {} \"$@\"\n", python.display(), wrapper_py))
        .expect("write the shim");
    fs_err::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make it executable");
    let at = Utc::now() + chrono::Duration::seconds(25);
    let mut jobs = String::new();
    for i in 0..5 {
        jobs.push_str(&once(
            &format!("mixed-c{i}"),
            at,
            &format!("targets: '*'\ncommand: 'echo coalesced {i}'"),
        ));
    }
    // allow_overlap: the original wrapper's lock file is per host, and the lab's minions share
    // one host.
    jobs.push_str(&once(
        "mixed-python",
        at,
        &format!(
            "targets: '*'\nwrapper_path: {}\nallow_overlap: true\ncommand: 'echo python wrapper; exit 2'",
            shim.display()
        ),
    ));
    jobs.push_str(&once(
        "mixed-legacy",
        at,
        "targets: '*'\nuse_wrapper: false\nenv:\n  WHO: salt\ncommand: 'echo legacy $WHO; exit 3'",
    ));
    jobs.push_str(&once(
        "mixed-legacy-slow",
        at,
        "targets: minion-2\nuse_wrapper: false\ntimeout: 3\ncommand: 'sleep 60'",
    ));
    let sidecar = Sidecar::start(lab, &jobs);
    let expect = |job: &str, code: i32, output: &str, path: &str| {
        let run = sidecar.wait_for_run(job, LIMIT, |_| true);
        assert_eq!(instant_of(&run.instance), at.timestamp(), "{run:#?}");
        for r in &run.results {
            assert_eq!(r.retcode, Some(code), "{job}: {run:#?}");
            assert!(r.output.contains(output), "{job}: {run:#?}");
        }
        for (minion, p, _) in paths(&sidecar, &run.instance) {
            assert_eq!(p, path, "{job} on {minion}");
        }
        run
    };
    for i in 0..5 {
        let run = expect(&format!("mixed-c{i}"), 0, &format!("coalesced {i}\n"), "armed");
        assert_eq!(run.results.len(), 3);
    }
    assert_eq!(expect("mixed-python", 2, "python wrapper", "single").results.len(), 3);
    assert_eq!(expect("mixed-legacy", 3, "legacy salt", "legacy").results.len(), 3);
    let slow = expect("mixed-legacy-slow", 124, "timed out", "legacy");
    assert_eq!(slow.results.len(), 1);
}

#[test]
fn removing_a_job_during_the_lead_window_cancels_its_armed_run() {
    let lab = Lab::shared();
    build_binaries();
    let marker = format!("/tmp/sp-removed-{}", std::process::id());
    let at = Utc::now() + chrono::Duration::seconds(40);
    let jobs = once(
        "removeme",
        at,
        &format!("targets: minion-2\nlead_time: 25\ncommand: 'touch {marker}'"),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    let armed = wait_until("the run to be armed", LIMIT, || {
        sidecar
            .all_runs("removeme")
            .into_iter()
            .find(|r| paths(&sidecar, &r.instance).iter().any(|(_, _, phase)| phase == "armed"))
    });
    assert!(Utc::now() < at, "armed before the instant");
    let other =
        once("stays", at + chrono::Duration::hours(1), "targets: minion-2\ncommand: 'true'");
    fs_err::write(sidecar.config_dir.join("jobs.yaml"), other).expect("remove the job");
    let run = sidecar.wait_for_run("removeme", LIMIT, |r| r.instance == armed.instance);
    assert!(Utc::now() < at + chrono::Duration::seconds(5), "cancelled, not run and killed");
    assert_eq!(run.results[0].retcode, Some(143), "{run:#?}");
    assert!(run.results[0].reason.contains("cancelled"), "{run:#?}");
    assert!(!std::path::Path::new(&marker).exists(), "the command never ran");
}

/// `/proc` command lines that mention `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    fs_err::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

#[test]
fn minion_dispatch_splits_one_run_between_coalesced_single_and_legacy_minions() {
    let lab = Lab::shared();
    build_binaries();
    // minion-2 has no agent (legacy), minion-3 the `SP_*` contract only (single); minion-1
    // takes the job's own mode (coalesced, pre-armed).
    let extra = "saltpeter_config:\n  minion_dispatch:\n    minion-2: legacy\n    'minion-[3]':\n      dispatch: single\n";
    let at = Utc::now() + chrono::Duration::seconds(20);
    let jobs = once("split", at, "targets: '*'\ncommand: 'echo split; exit 4'");
    let sidecar = Sidecar::start_with_config(lab, &jobs, extra, &[]);
    let run = sidecar.wait_for_run("split", LIMIT, |_| true);
    assert_eq!(run.results.len(), 3, "{run:#?}");
    for r in &run.results {
        // (Salt's return of the legacy `cmd.run` drops the last newline.)
        assert_eq!((r.retcode, r.output.trim_end()), (Some(4), "split"), "{run:#?}");
    }
    let recorded: Vec<(String, String)> =
        paths(&sidecar, &run.instance).into_iter().map(|(m, p, _)| (m, p)).collect();
    let want = [("minion-1", "armed"), ("minion-2", "legacy"), ("minion-3", "single")];
    assert_eq!(recorded, want.map(|(m, p)| (m.to_owned(), p.to_owned())));
    for (mode, n) in [("coalesced", 1.0), ("single", 1.0), ("legacy", 1.0)] {
        let series = format!("saltpeter_dispatch_publishes_total{{mode=\"{mode}\"}}");
        assert_eq!(metric(&sidecar, &series), Some(n), "{series}");
    }
    // `saltpeter check` rejects a mode it does not know, naming the key and the minion.
    let bad = "saltpeter_config:\n  minion_dispatch:\n    minion-2: fast\n";
    fs_err::write(sidecar.config_dir.join("01-extra.yaml"), bad).expect("write the bad setting");
    let out = std::process::Command::new(saltpeter_tests::bin("saltpeter"))
        .arg("-c")
        .arg(&sidecar.config_dir)
        .arg("check")
        .output()
        .expect("run saltpeter check");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && text.contains("minion_dispatch") && text.contains("minion-2"),
        "{out:?}"
    );
}

#[test]
fn a_kill_of_a_use_wrapper_false_run_goes_through_saltutil_kill_job_143() {
    let lab = Lab::shared();
    build_binaries();
    let marker = format!("sp-legacy-kill-{}", std::process::id());
    let jobs = once(
        "legacykill",
        Utc::now() + chrono::Duration::seconds(8),
        &format!("targets: minion-2\nuse_wrapper: false\ncommand: 'sleep 120; echo {marker}'"),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    wait_until("the legacy command to run on minion-2", LIMIT, || {
        (!processes_with(&marker).is_empty()).then_some(())
    });
    let running = wait_until("its run in flight", LIMIT, || {
        sidecar.all_runs("legacykill").into_iter().find(|r| r.status == "running")
    });
    let out = sidecar.cli(&["kill", &running.instance]);
    assert!(out.status.success(), "{out:?}");
    let run = sidecar.wait_for_run("legacykill", LIMIT, |r| r.instance == running.instance);
    let r = &run.results[0];
    assert_eq!((run.status.as_str(), r.retcode), ("killed", Some(143)), "{run:#?}");
    assert!(r.reason.contains("saltutil.kill_job"), "{run:#?}");
    assert!(!sidecar.log().contains("saltpeter-agent kill"), "no agent kill was tried");
    wait_until("the command to be gone", Duration::from_secs(30), || {
        processes_with(&marker).is_empty().then_some(())
    });
}

#[test]
fn a_use_wrapper_false_run_keeps_its_results_across_a_sigkill_of_the_sidecar() {
    let lab = Lab::shared();
    build_binaries();
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path().display().to_string();
    // Each minion's command (the lab tags every minion's processes with `SALTLAB_NODE`) waits
    // for its own go file: minion-1 ends while the sidecar is down, so its return is only in
    // the master's job cache; minion-2 ends after the restart, its return comes on the bus.
    let command = format!(
        "m=${{SALTLAB_NODE##*::}}; touch {d}/started-$m; while [ ! -e {d}/go-$m ]; do sleep 0.1; done; echo legacy done $m; exit 3"
    );
    let jobs = once(
        "legacyrestart",
        Utc::now() + chrono::Duration::seconds(8),
        &format!(
            "targets: minion-1,minion-2\ntarget_type: list\nuse_wrapper: false\ntimeout: 200\ncommand: '{command}'"
        ),
    );
    let mut sidecar = Sidecar::start(lab, &jobs);
    let file = |name: &str| dir.path().join(name);
    let running = wait_until("the legacy command running on both minions", LIMIT, || {
        let started = file("started-minion-1").exists() && file("started-minion-2").exists();
        let run = sidecar
            .all_runs("legacyrestart")
            .into_iter()
            .find(|r| r.results.len() == 2 && r.results.iter().all(|m| m.phase == "running"));
        run.filter(|_| started)
    });
    sidecar.kill_and_restart_after(|| {
        fs_err::write(file("go-minion-1"), "").expect("write the go file");
        wait_until("minion-1's command to end while the sidecar is down", LIMIT, || {
            (processes_with(&d).len() == 1).then_some(())
        });
    });
    let from_cache = |log: &str, minion: &str| {
        log.lines().any(|l| l.contains("read from the master's job cache") && l.contains(minion))
    };
    wait_until("minion-1's return read from the master's job cache", LIMIT, || {
        from_cache(&sidecar.log(), "minion-1").then_some(())
    });
    fs_err::write(file("go-minion-2"), "").expect("write the go file");
    let run = sidecar.wait_for_run("legacyrestart", LIMIT, |r| r.instance == running.instance);
    assert_eq!(run.results.len(), 2, "{run:#?}");
    for r in &run.results {
        assert_eq!(r.retcode, Some(3), "{run:#?}");
        assert!(r.output.contains(&format!("legacy done {}", r.minion)), "{run:#?}");
    }
    let log = sidecar.log();
    assert!(!from_cache(&log, "minion-2"), "minion-2's return came on the bus:\n{log}");
}

#[test]
fn an_agent_that_fetches_its_manifest_after_the_instant_starts_at_once_late_armed() {
    let lab = Lab::shared();
    build_binaries();
    // A slow minion, made by a shim that waits 0.9 s before it execs the agent: published 0.1 s
    // before the instant, the agent fetches its manifest after the instant, before the
    // fallback (the publish's grace, 2 s after it). It cannot arm; it starts at once.
    let dir = tempfile::tempdir().expect("a temp dir");
    let wrapper = dir.path().join("saltpeter-agent");
    let agent = saltpeter_tests::bin("saltpeter-agent");
    fs_err::write(&wrapper, format!("#!/bin/sh\nsleep 0.9\nexec {} \"$@\"\n", agent.display()))
        .expect("write the shim");
    fs_err::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make the shim executable");
    let at = Utc::now() + chrono::Duration::seconds(20);
    let jobs = once(
        "slowarm",
        at,
        &format!(
            "targets: minion-1\nlead_time: 0.1\nwrapper_path: {}\ncommand: 'date +%s.%N'",
            wrapper.display()
        ),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("slowarm", LIMIT, |_| true);
    assert_eq!(run.status, "succeeded", "{run:#?}");
    let started: f64 = run.results[0].output.trim().parse().expect("the command printed its start");
    assert!(started >= at.timestamp() as f64, "started at {started}, before the instant {at}");
    let recorded = paths(&sidecar, &run.instance);
    assert_eq!(recorded[0].1, "late-armed", "{recorded:?}");
    let late = "saltpeter_prearmed_minion_runs_total{outcome=\"late-armed\"}";
    assert_eq!(metric(&sidecar, late), Some(1.0));
    let coalesced = "saltpeter_dispatch_publishes_total{mode=\"coalesced\"}";
    assert_eq!(metric(&sidecar, coalesced), Some(1.0), "no fallback publish");
}
