//! Runs end to end: the sidecar as a real process schedules jobs on the lab's minions, the agent
//! built from the workspace runs them, and the results are read from the run store.

use std::time::Duration;

use saltpeter_tests::{Lab, LabConfig, Sidecar, wait_until};

const LIMIT: Duration = Duration::from_secs(120);

/// A job every 5 seconds.
fn job(name: &str, body: &str) -> String {
    saltpeter_tests::job_every(name, 5, body)
}

#[test]
fn a_job_every_5s_records_every_minions_result_and_output() {
    let lab = Lab::shared();
    let jobs =
        job("hello", "targets: '*'\ncommand: 'echo \"hello $SP_MACHINE_ID\"; echo oops >&2'");
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("hello", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.status, "succeeded", "{run:#?}");
    let minions: Vec<&str> = run.results.iter().map(|r| r.minion.as_str()).collect();
    assert_eq!(minions, ["minion-1", "minion-2", "minion-3"]);
    for r in &run.results {
        assert_eq!(r.retcode, Some(0), "{r:?}");
        assert!(r.output.contains(&format!("hello {}\n", r.minion)), "{r:?}");
        assert!(r.output.contains("oops\n"), "stderr is kept: {r:?}");
    }
    // The per-job log in the original's format.
    let log = wait_until("the job log to show the run", LIMIT, || {
        let log = sidecar.job_log("hello");
        log.contains(&format!("###### Finished {}", run.instance)).then_some(log)
    });
    assert!(log.contains(&format!("###### Starting {} at ", run.instance)), "{log}");
    assert!(
        log.contains(&format!(
            "########## minion-2 from {} ################\n**** Exit Code 0 ******\n",
            run.instance
        )),
        "{log}"
    );
}

#[test]
fn a_timeout_gives_124_and_leaves_no_process() {
    let lab = Lab::shared();
    let marker = format!("sp-timeout-{}", std::process::id());
    let command = format!(
        "trap '' TERM; sh -c \"trap '' TERM; sleep 300; echo {marker}\" & sleep 301; echo {marker}"
    );
    let jobs = job("stuck", &format!("targets: minion-1\ntimeout: 2\ncommand: {command:?}"));
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("stuck", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.results.len(), 1, "{run:#?}");
    assert_eq!(run.results[0].retcode, Some(124), "{run:#?}");
    let survivors = processes_mentioning(&marker);
    assert!(survivors.is_empty(), "processes of the job survived: {survivors:?}");
}

#[test]
fn a_missing_wrapper_gives_127() {
    let lab = Lab::shared();
    let jobs = job(
        "nowrapper",
        "targets: minion-2\nwrapper_path: /nonexistent/saltpeter-agent\ncommand: 'true'",
    );
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("nowrapper", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.status, "failed");
    assert_eq!(run.results[0].retcode, Some(127), "{run:#?}");
}

#[test]
fn number_of_targets_picks_that_many_responsive_minions() {
    let lab = Lab::shared();
    let jobs = job("two", "targets: '*'\nnumber_of_targets: 2\ncommand: 'true'");
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("two", LIMIT, |r| r.status != "skipped");
    let ran: Vec<_> = run.results.iter().filter(|r| r.retcode.is_some()).collect();
    assert_eq!(ran.len(), 2, "{run:#?}");
    assert!(ran.iter().all(|r| r.retcode == Some(0)));
}

#[test]
fn max_failures_stops_later_batches() {
    let lab = Lab::shared();
    let jobs = job("batched", "targets: '*'\nbatch_size: 1\nmax_failures: 1\ncommand: 'exit 3'");
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("batched", LIMIT, |r| r.status != "skipped");
    let failed: Vec<_> = run.results.iter().filter(|r| r.retcode == Some(3)).collect();
    let not_started: Vec<_> = run.results.iter().filter(|r| r.phase == "not_started").collect();
    assert_eq!((failed.len(), not_started.len()), (1, 2), "{run:#?}");
    assert!(run.reason.contains("max_failures 1"), "{run:#?}");
}

#[test]
fn a_minion_in_maintenance_is_skipped_not_failed() {
    let lab = Lab::shared();
    let mut jobs = job("maint", "targets: '*'\ncommand: 'true'");
    jobs.push_str("saltpeter_maintenance:\n  global: false\n  machines: [minion-3]\n");
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("maint", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.status, "succeeded", "{run:#?}");
    let m3 = run.results.iter().find(|r| r.minion == "minion-3").expect("minion-3 is recorded");
    assert_eq!((m3.phase.as_str(), m3.retcode), ("maintenance", None), "{run:#?}");
}

#[test]
fn a_stopped_minion_gives_255_without_holding_up_the_others() {
    let lab = Lab::start(LabConfig { minions: 2, ..LabConfig::default() }).expect("a lab");
    lab.stop_minion("minion-2");
    let jobs = job("partial", "targets: '*'\ncommand: 'echo up'");
    let sidecar = Sidecar::start(&lab, &jobs);
    let run = sidecar.wait_for_run("partial", LIMIT, |r| r.status != "skipped");
    let by_minion =
        |id: &str| run.results.iter().find(|r| r.minion == id).cloned().expect("recorded");
    assert_eq!(by_minion("minion-1").retcode, Some(0), "{run:#?}");
    assert_eq!(by_minion("minion-2").retcode, Some(255), "{run:#?}");
    assert!(by_minion("minion-2").reason.contains("did not respond"), "{run:#?}");
}

#[test]
fn a_run_survives_a_sigkill_of_the_sidecar_with_its_whole_output() {
    let lab = Lab::shared();
    let command = "for i in $(seq 1 10); do echo line $i; sleep 1; done";
    let jobs = job("steady", &format!("targets: '*'\ncommand: '{command}'\ntimeout: 120"));
    let mut sidecar = Sidecar::start(lab, &jobs);
    let running = wait_until("a run of steady with output", LIMIT, || {
        sidecar.all_runs("steady").into_iter().find(|r| {
            r.status == "running" && r.results.iter().any(|m| m.output.contains("line 2"))
        })
    });
    sidecar.kill_and_restart();
    let run = sidecar.wait_for_run("steady", LIMIT, |r| r.instance == running.instance);
    assert_eq!(run.status, "succeeded", "{run:#?}");
    let expected: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    for r in &run.results {
        assert_eq!(
            (r.retcode, r.output.as_str()),
            (Some(0), expected.as_str()),
            "{}: {run:#?}",
            r.minion
        );
    }
}

#[test]
fn batches_not_yet_started_run_after_a_sigkill_of_the_sidecar() {
    let lab = Lab::shared();
    let command = "sleep 3; echo done $SP_MACHINE_ID";
    let body = format!("targets: '*'\nbatch_size: 1\ncommand: '{command}'\ntimeout: 120");
    let mut sidecar = Sidecar::start(lab, &job("batches", &body));
    // The first batch runs; the other two minions are queued for their turn.
    let running = wait_until("a run of batches with queued minions", LIMIT, || {
        sidecar.all_runs("batches").into_iter().find(|r| {
            let phase = |p: &str| r.results.iter().filter(|m| m.phase == p).count();
            r.status == "running" && phase("running") == 1 && phase("queued") == 2
        })
    });
    sidecar.kill_and_restart();
    let run = sidecar.wait_for_run("batches", LIMIT, |r| r.instance == running.instance);
    assert_eq!(run.status, "succeeded", "{run:#?}");
    assert_eq!(run.results.len(), 3, "{run:#?}");
    for r in &run.results {
        let expected = format!("done {}\n", r.minion);
        assert_eq!((r.retcode, r.output.as_str()), (Some(0), expected.as_str()), "{run:#?}");
    }
}

#[test]
fn the_original_python_wrapper_completes_a_run() {
    let lab = Lab::shared();
    // The wrapper of the PyPI `saltpeter` 0.9.30 package, installed in the lab's venv.
    let python = lab.venv.join("bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", "import saltpeter.wrapper as w; print(w.__file__)"])
        .output()
        .expect("run the venv's python");
    let wrapper_py = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !wrapper_py.is_empty(),
        "saltpeter 0.9.30 is in the lab venv: {out:?}"
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let shim = dir.path().join("sp_wrapper.py");
    fs_err::write(&shim, format!("#!/bin/sh\nexec {} {} \"$@\"\n", python.display(), wrapper_py))
        .unwrap();
    fs_err::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let jobs = job(
        "legacy",
        &format!(
            "targets: minion-1\nwrapper_path: {}\ncommand: 'echo from the python wrapper; exit 2'",
            shim.display()
        ),
    );
    let sidecar = Sidecar::start(lab, &jobs);
    let run = sidecar.wait_for_run("legacy", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.results.len(), 1, "{run:#?}");
    let r = &run.results[0];
    assert_eq!(r.retcode, Some(2), "{run:#?}");
    assert!(r.output.contains("from the python wrapper"), "{run:#?}");
}

#[test]
fn an_overlapping_slot_is_skipped_and_recorded() {
    let lab = Lab::shared();
    let jobs = job("overlapping", "targets: minion-1\ncommand: 'sleep 12'");
    let sidecar = Sidecar::start(lab, &jobs);
    let skipped = wait_until("a slot skipped for overlap", LIMIT, || {
        sidecar.all_runs("overlapping").into_iter().find(|r| r.status == "skipped")
    });
    assert!(skipped.reason.contains("overlap"), "{skipped:#?}");
    assert!(skipped.results.is_empty(), "a skipped slot runs nowhere: {skipped:#?}");
}

#[test]
fn our_events_are_seen_by_salt_run_state_event() {
    let lab = Lab::shared();
    // Subscribe first: state.event prints each matching event and exits after `count`.
    let watcher = lab
        .salt_command("salt-run")
        .args(["state.event", "tagmatch=saltpeter/job/evented/complete", "count=1", "--out=json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start salt-run state.event");
    let jobs = job("evented", "targets: '*'\ncommand: 'echo evented'");
    let _sidecar = Sidecar::start(lab, &jobs);
    let out = wait_for_exit(watcher, LIMIT);
    assert!(out.contains("saltpeter/job/evented/complete"), "{out}");
    assert!(out.contains("\"success\": true") || out.contains("\"success\":true"), "{out}");
    assert!(out.contains("\"minion-3\": 0") || out.contains("\"minion-3\":0"), "{out}");
}

#[test]
fn an_agent_with_a_wrong_token_is_rejected() {
    let lab = Lab::shared();
    let sidecar = Sidecar::start(lab, &job("idle", "targets: nobody-matches\ncommand: 'true'"));
    let python = lab.venv.join("bin/python");
    let script = r#"
import asyncio, json, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        await ws.send(json.dumps({"type": "connect", "job_name": "idle", "job_instance": "idle_1",
                                  "machine": "minion-1", "timestamp": "2026-01-01T00:00:00+00:00"}))
        print(await ws.recv())
        try:
            await ws.recv()
        except websockets.ConnectionClosed:
            print("closed")
asyncio.run(main())
"#;
    let url = format!("ws://127.0.0.1:{}/?token=forged", sidecar.port());
    let out =
        std::process::Command::new(python).args(["-c", script, &url]).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("UNAUTHORIZED"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("closed"), "{stdout}");
    assert!(sidecar.log().contains("token that does not match"), "the rejection is logged");
}

#[test]
fn kill_gives_143_and_leaves_no_process() {
    let lab = Lab::shared();
    let marker = format!("sp-kill-{}", std::process::id());
    let command = format!("trap '' TERM; sleep 300; echo {marker}");
    let jobs = job("killme", &format!("targets: minion-2\ncommand: {command:?}"));
    let sidecar = Sidecar::start(lab, &jobs);
    let running = wait_until("a run of killme whose agent started", LIMIT, || {
        sidecar
            .all_runs("killme")
            .into_iter()
            .find(|r| r.results.iter().any(|m| m.phase == "running"))
    });
    let out = sidecar.cli(&["kill", &running.instance]);
    assert!(out.status.success(), "{out:?}");
    let run = sidecar.wait_for_run("killme", LIMIT, |r| r.instance == running.instance);
    assert_eq!((run.status.as_str(), run.results[0].retcode), ("killed", Some(143)), "{run:#?}");
    assert!(run.results[0].output.contains("SIGKILL"), "the escalation is in the output: {run:#?}");
    let survivors = processes_mentioning(&marker);
    assert!(survivors.is_empty(), "processes of the job survived: {survivors:?}");
    let again = sidecar.cli(&["kill", &running.instance]);
    assert!(!again.status.success(), "a finished run cannot be killed");
}

#[test]
fn run_now_starts_a_job_outside_its_schedule() {
    let lab = Lab::shared();
    let jobs = "rare:\n  sec: 0\n  min: 0\n  hour: 0\n  dom: 1\n  mon: 1\n  dow: '*'\n  targets: minion-1\n  command: 'echo now'\n";
    let sidecar = Sidecar::start(lab, jobs);
    let out = sidecar.cli(&["run", "rare", "--now"]);
    assert!(out.status.success(), "{out:?}");
    let run = sidecar.wait_for_run("rare", LIMIT, |_| true);
    assert_eq!(
        (run.status.as_str(), run.results[0].output.as_str()),
        ("succeeded", "now\n"),
        "{run:#?}"
    );
    let unknown = sidecar.cli(&["run", "nosuchjob", "--now"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success()
            && stderr.contains("no job named")
            && stderr.contains("nosuchjob"),
        "{unknown:?}"
    );
}

#[test]
fn a_stopped_agent_is_heartbeat_lost_253() {
    let lab = Lab::shared();
    // The `SP_*` agent: found by its environment (a coalesced agent serves many runs).
    let jobs = job("frozen", "targets: minion-3\ndispatch: single\ncommand: 'sleep 120'");
    let sidecar = Sidecar::start(lab, &jobs);
    let running = wait_until("a run of frozen whose agent started", LIMIT, || {
        sidecar
            .all_runs("frozen")
            .into_iter()
            .find(|r| r.results.iter().any(|m| m.phase == "running"))
    });
    let agents = agent_processes(&running.instance);
    assert!(!agents.is_empty(), "the agent of {} runs", running.instance);
    signal("STOP", &agents);
    let run = sidecar.wait_for_run("frozen", LIMIT, |r| r.instance == running.instance);
    signal("CONT", &agents);
    assert_eq!(run.results[0].retcode, Some(253), "{run:#?}");
    // Clean up the job the frozen agent still runs.
    let _ = lab.salt(&["minion-3", "cmd.run", "pkill -f 'sleep 120'"]);
}

#[test]
fn catch_up_latest_runs_once_for_the_slots_missed_while_down() {
    let lab = Lab::shared();
    // The default path (coalesced, pre-armed), with a lead time of 4 s: the window (1 s) is
    // shorter, yet the slot inside the lead window when the sidecar starts is on time, not
    // missed. At the restart the catch-up run and that slot are due together: they must not
    // run at once (no overlap) nor go out as two publishes to minion-1 in one instant.
    let jobs = job(
        "caught",
        "targets: minion-1\ncommand: 'echo caught'\ncatch_up: latest\ncatch_up_window: 1\nlead_time: 4",
    );
    let mut sidecar = Sidecar::start(lab, &jobs);
    sidecar.wait_for_run("caught", LIMIT, |r| r.status == "succeeded");
    sidecar.kill_and_restart_after(|| {
        // Down long enough for at least two slots (every 5 s) to pass, and restarted about
        // 4.3 s before a slot: it is inside the lead window (4 s, plus 1 s to resolve) when
        // the sidecar, started in a few hundred milliseconds to a few seconds, resumes.
        let down_since = std::time::Instant::now();
        wait_until("two slots to pass, then the start of a cycle", LIMIT, || {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
            let in_cycle = now.as_millis() % 5000;
            (down_since.elapsed() >= Duration::from_secs(11) && (500..900).contains(&in_cycle))
                .then_some(())
        });
    });
    // When it said it was running (it resumed its schedule just before).
    let restarted_at = sidecar
        .log()
        .lines()
        .rfind(|l| l.contains("Saltpeter is running"))
        .and_then(|l| chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok())
        .map(|t| u64::try_from(t.timestamp()).unwrap_or(0))
        .expect("the restarted sidecar's start in its log");
    let caught_up = sidecar.wait_for_run("caught", LIMIT, |r| r.trigger == "catch-up");
    assert_eq!(caught_up.status, "succeeded", "{caught_up:#?}");
    assert!(slot_of(&caught_up) < restarted_at, "a slot missed while down: {caught_up:#?}");
    // The first slot after the restart ran on schedule (it was in the lead window at start).
    let first_after = (restarted_at / 5 + 1) * 5;
    let on_time = sidecar.wait_for_run("caught", LIMIT, |r| slot_of(r) == first_after);
    assert_eq!(
        (on_time.trigger.as_str(), on_time.status.as_str()),
        ("schedule", "succeeded"),
        "{on_time:#?}"
    );
    let runs = sidecar.all_runs("caught");
    let catch_ups = runs.iter().filter(|r| r.trigger == "catch-up").count();
    assert_eq!(catch_ups, 1, "latest: one run for all the missed slots");
    let lost: Vec<_> = runs
        .iter()
        .filter(|r| r.results.iter().any(|m| m.retcode.is_some_and(|c| c != 0)))
        .collect();
    assert!(lost.is_empty(), "no run ends with a launch failure: {lost:#?}");
}

/// The slot of a run, in Unix seconds, from its instance id (`<job>_<unix seconds>[.n]`).
fn slot_of(run: &saltpeter_tests::RunRecord) -> u64 {
    run.instance.rsplit('_').next().and_then(|s| s.split('.').next()?.parse().ok()).unwrap_or(0)
}

/// Pids of the agent daemons serving `instance` (their environment names it).
fn agent_processes(instance: &str) -> Vec<String> {
    let needle = format!("SP_JOB_INSTANCE={instance}");
    let mut pids = Vec::new();
    for entry in fs_err::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let exe = std::fs::read_link(path.join("exe")).unwrap_or_default();
        let environ = std::fs::read(path.join("environ")).unwrap_or_default();
        if exe.to_string_lossy().contains("saltpeter-agent")
            && environ.split(|b| *b == 0).any(|var| var == needle.as_bytes())
        {
            pids.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    pids
}

fn signal(name: &str, pids: &[String]) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids)
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pids:?}");
}

/// Waits for `child` to exit and returns its standard output.
fn wait_for_exit(mut child: std::process::Child, limit: Duration) -> String {
    use std::io::Read as _;
    wait_until("salt-run state.event to see the event", limit, || child.try_wait().ok().flatten());
    let mut out = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut out).expect("read its output");
    out
}

/// Processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs_err::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn a_minion_matched_by_a_maintenance_expression_is_skipped_for_maintenance() {
    let lab = Lab::shared();
    // `machines` takes Salt target expressions beside exact ids: a glob and a compound one.
    let mut jobs = job("maintexpr", "targets: '*'\ncommand: 'true'");
    jobs.push_str(
        "saltpeter_maintenance:\n  global: false\n  machines: ['minion-[2]', 'L@minion-3 and G@id:minion-3']\n",
    );
    let sidecar = Sidecar::start(lab, &jobs);
    // The expressions resolve just after start: a run after that skips both.
    let run = sidecar.wait_for_run("maintexpr", LIMIT, |r| {
        r.status != "skipped" && r.results.iter().filter(|m| m.phase == "maintenance").count() == 2
    });
    assert_eq!(run.status, "succeeded", "{run:#?}");
    for minion in ["minion-2", "minion-3"] {
        let m = run.results.iter().find(|r| r.minion == minion).expect("recorded");
        assert_eq!((m.phase.as_str(), m.retcode), ("maintenance", None), "{run:#?}");
    }
    let m1 = run.results.iter().find(|r| r.minion == "minion-1").expect("minion-1 ran");
    assert_eq!(m1.retcode, Some(0), "{run:#?}");
}
