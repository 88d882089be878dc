//! Jobs and maintenance from Salt pillar, end to end: a lab whose pillar is `pillar-example/`
//! (plus a pillar id per test, so that tests do not see each other's jobs), the sidecar reading
//! it through the master, and runs observed in the run store.
//!
//! `salt_native_lab()` is also the lab of the formula and reactor tests: its master has the
//! reactor of `states/` configured.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use saltpeter_tests::{Lab, LabConfig, Sidecar, repo_root, wait_until};

const LIMIT: Duration = Duration::from_secs(120);

/// The lab of this module, the formula's and the reactor's, and its pillar directory.
pub(crate) struct SaltNativeLab {
    pub(crate) lab: Lab,
    pub(crate) pillar: PathBuf,
}

/// Started on first use: pillar-example/ with per-test pillar ids (`sidecar-a`, ...), minion-2
/// in maintenance by its own pillar, the master's reactor from `states/`, and the formula's
/// test artifacts under `salt://sp-test/`.
pub(crate) fn salt_native_lab() -> &'static SaltNativeLab {
    static LAB: OnceLock<SaltNativeLab> = OnceLock::new();
    LAB.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("sp-pillar-").tempdir().expect("set up the salt-native lab").keep();
        let pillar = dir.join("pillar");
        copy_dir(&repo_root().join("pillar-example"), &pillar);
        let mut top = fs_err::read_to_string(pillar.join("top.sls")).expect("set up the salt-native lab");
        top.push_str(
            "  'minion-2':\n    - saltpeter.in_maintenance\n  'sidecar-*':\n    - test.{{ opts.id }}\n",
        );
        fs_err::write(pillar.join("top.sls"), top).expect("set up the salt-native lab");
        fs_err::create_dir_all(pillar.join("test")).expect("set up the salt-native lab");
        let files = dir.join("files");
        crate::formula::artifacts(&files.join("sp-test"));
        let reactor =
            fs_err::read_to_string(repo_root().join("states/reactor/saltpeter.conf")).expect("set up the salt-native lab");
        let cfg = LabConfig {
            pillar_roots: vec![pillar.clone()],
            master_extra: vec![reactor],
            file_roots: vec![files],
            ..LabConfig::default()
        };
        SaltNativeLab { lab: Lab::start(cfg).expect("the salt-native lab"), pillar }
    })
}

impl SaltNativeLab {
    /// Writes the pillar of the pillar id `sidecar-<name>` (`saltpeter:` and what follows).
    fn write_pillar(&self, name: &str, yaml: &str) {
        fs_err::write(self.pillar.join("test").join(format!("sidecar-{name}.sls")), yaml)
            .expect("set up the salt-native lab");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("set up the salt-native lab");
    for entry in fs_err::read_dir(from).expect("set up the salt-native lab") {
        let entry = entry.expect("set up the salt-native lab");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("set up the salt-native lab").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), target).expect("set up the salt-native lab");
        }
    }
}

/// A job every 2 seconds, as YAML lines indented by `indent`.
fn job(name: &str, indent: &str, body: &str) -> String {
    let mut yaml = format!("{indent}{name}:\n");
    let keys = "sec: '*/2'\nmin: '*'\nhour: '*'\ndom: '*'\nmon: '*'\ndow: '*'\n";
    for line in keys.lines().chain(body.lines()) {
        yaml.push_str(&format!("{indent}  {line}\n"));
    }
    yaml
}

/// The finished runs of `job` that ran (not skipped for overlap).
fn ran(sidecar: &Sidecar, job: &str) -> Vec<saltpeter_tests::RunRecord> {
    sidecar.finished_runs(job).into_iter().filter(|r| r.status != "skipped").collect()
}

/// Settings for a test's sidecar: its pillar id, and no periodic read (events only).
fn settings(name: &str) -> String {
    format!("saltpeter_config:\n  pillar_minion: sidecar-{name}\n  pillar_refresh: 3600\n")
}

#[test]
fn a_job_added_to_pillar_runs_after_the_refresh_event_without_a_restart() {
    let lab = salt_native_lab();
    lab.write_pillar("a", "saltpeter:\n  jobs: {}\n");
    let files = settings("a") + &job("from-file", "", "targets: minion-1\ncommand: echo file-job");
    let sidecar = Sidecar::start(&lab.lab, &files);
    assert!(sidecar.log().contains("Read the pillar."), "{}", sidecar.log());

    // A new job in pillar; the minions refresh their pillar (the event an operator causes).
    let pillar = String::from("saltpeter:\n  jobs:\n")
        + &job("from-pillar", "    ", "targets: minion-1\ncommand: echo pillar-job");
    lab.write_pillar("a", &pillar);
    let out = lab.lab.salt(&["*", "saltutil.refresh_pillar"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = sidecar.wait_for_run("from-pillar", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.status, "succeeded", "{run:#?}");
    assert!(run.results[0].output.contains("pillar-job"), "{run:#?}");
    let log = sidecar.log();
    assert!(log.contains("Config reloaded. added=[JobName(\"from-pillar\")]"), "{log}");
    assert_eq!(log.matches("Saltpeter is running").count(), 1, "restarted: {log}");

    // The same name in a file and in pillar: an error naming both; the file's job runs on.
    // This time the reload is asked for with the `saltpeter/reload` event.
    let pillar = pillar + &job("from-file", "    ", "targets: minion-1\ncommand: echo clash");
    lab.write_pillar("a", &pillar);
    let out = lab.lab.salt_run(&["event.send", "saltpeter/reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let error = wait_until("the name clash to be reported", LIMIT, || {
        sidecar.log().lines().find(|l| l.contains("is defined both in")).map(str::to_owned)
    });
    assert!(error.contains("pillar:sidecar-a: job `from-file`"), "{error}");
    assert!(error.contains(&sidecar.config_dir.join("jobs.yaml").display().to_string()), "{error}");
    let seen = ran(&sidecar, "from-file").len();
    let run = sidecar.wait_for_run("from-file", LIMIT, |r| r.status != "skipped").instance.clone();
    let later = wait_until("a later run of from-file", LIMIT, || {
        let runs = ran(&sidecar, "from-file");
        (runs.len() > seen + 1).then(|| runs.last().cloned()).flatten()
    });
    assert_ne!(later.instance, run);
    assert!(later.results[0].output.contains("file-job"), "{later:#?}");

    // A pillar Salt cannot render: the error is logged, the pillar job runs on.
    lab.write_pillar("a", "saltpeter:\n  jobs: [unclosed\n");
    let out = lab.lab.salt_run(&["event.send", "saltpeter/reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the render error to be reported", LIMIT, || {
        sidecar.log().contains("pillar:sidecar-a: Salt could not render the pillar").then_some(())
    });
    let seen = ran(&sidecar, "from-pillar").len();
    wait_until("from-pillar to run on", LIMIT, || {
        (ran(&sidecar, "from-pillar").len() > seen + 1).then_some(())
    });
    assert!(!sidecar.log().contains("removed=[JobName(\"from-pillar\")]"), "{}", sidecar.log());
}

#[test]
fn a_minion_in_maintenance_by_its_pillar_is_skipped_by_pillar_jobs() {
    let lab = salt_native_lab();
    // minion-2: `saltpeter:maintenance: true` in its own pillar; minion-3: in the sidecar's
    // pillar maintenance list.
    let pillar = String::from("saltpeter:\n  maintenance:\n    machines: [minion-3]\n  jobs:\n")
        + &job("everyone", "    ", "targets: '*'\ncommand: echo up");
    lab.write_pillar("b", &pillar);
    let sidecar = Sidecar::start(&lab.lab, &settings("b"));
    let run = sidecar.wait_for_run("everyone", LIMIT, |r| r.status != "skipped");
    let by_minion: Vec<(&str, &str)> =
        run.results.iter().map(|r| (r.minion.as_str(), r.phase.as_str())).collect();
    assert_eq!(run.status, "succeeded", "{run:#?}");
    assert_eq!(by_minion.len(), 3, "{run:#?}");
    assert_eq!(by_minion[1], ("minion-2", "maintenance"), "{run:#?}");
    assert_eq!(by_minion[2], ("minion-3", "maintenance"), "{run:#?}");
    assert_ne!(by_minion[0].1, "maintenance", "{run:#?}");
    assert_eq!(run.results[0].retcode, Some(0), "{run:#?}");
}

#[test]
fn the_pillar_is_read_again_every_pillar_refresh_without_an_event() {
    let lab = salt_native_lab();
    lab.write_pillar("c", "saltpeter:\n  jobs: {}\n");
    let settings = "saltpeter_config:\n  pillar_minion: sidecar-c\n  pillar_refresh: 2\n";
    let sidecar = Sidecar::start(&lab.lab, settings);
    let pillar = String::from("saltpeter:\n  jobs:\n")
        + &job("periodic", "    ", "targets: minion-1\ncommand: echo periodic");
    lab.write_pillar("c", &pillar);
    let run = sidecar.wait_for_run("periodic", LIMIT, |r| r.status != "skipped");
    assert_eq!(run.status, "succeeded", "{run:#?}");
    assert_eq!(sidecar.log().matches("Saltpeter is running").count(), 1);
}
