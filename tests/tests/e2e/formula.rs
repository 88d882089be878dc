//! The `saltpeter` formula (salt/saltpeter/) applied by the real lab's minions: the agent pinned,
//! verified and idempotent, upgrades and downgrades, a wrong hash, `test=True`; the sidecar's
//! binary, config from pillar, and a hardened unit that `systemd-analyze verify` accepts.
//!
//! Artifacts come from `salt://sp-test/` (made by [`artifacts`] when the lab starts): the
//! workspace's agent and sidecar as version 0.1.0, and a stand-in agent 0.0.9 (a script that
//! says its version) to move between versions.

use std::path::Path;
use std::process::Command;

use saltpeter_protocol::PROTOCOL_VERSION;
use saltpeter_tests::bin;
use serde_json::{Value, json};

use crate::pillar::salt_native_lab;

const CURRENT: &str = env!("CARGO_PKG_VERSION");
const OLD: &str = "0.0.9";

/// Writes the test artifacts and their `.sha256` into `dir` (stripped: Salt's file server copies
/// them to the minions).
pub(crate) fn artifacts(dir: &Path) {
    fs_err::create_dir_all(dir).expect("create the artifacts dir");
    let strip = |from: &Path, to: &Path| {
        let ok = Command::new("strip").arg("-o").arg(to).arg(from).status();
        assert!(ok.is_ok_and(|s| s.success()), "strip {} failed", from.display());
    };
    let agent = dir.join(format!("saltpeter-agent-{CURRENT}-x86_64-linux"));
    strip(&bin("saltpeter-agent"), &agent);
    let sidecar = dir.join(format!("saltpeter-{CURRENT}-x86_64-linux"));
    strip(&bin("saltpeter"), &sidecar);
    let old = dir.join(format!("saltpeter-agent-{OLD}-x86_64-linux"));
    fs_err::write(&old, format!("#!/bin/sh\necho 'saltpeter-agent {OLD} (protocol 1)'\n"))
        .expect("write the old agent");
    for file in [agent, sidecar, old] {
        let out = Command::new("sha256sum").arg(&file).output().expect("run sha256sum");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let hash = line.split_whitespace().next().expect("a sha256").to_owned();
        let mut name = file.into_os_string();
        name.push(".sha256");
        fs_err::write(name, format!("{hash}\n")).expect("write the sha256");
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// `state.apply <sls>` with `pillar` (JSON): the agent's on minion-1, the sidecar's on minion-3
/// (Salt refuses two state runs at once on one minion); the per-state results, and whether the
/// command succeeded.
fn apply(sls: &str, pillar: &Value, extra: &[&str]) -> (Vec<Value>, bool, String) {
    let lab = &salt_native_lab().lab;
    let minion = if sls == "saltpeter.sidecar" { "minion-3" } else { "minion-1" };
    let pillar = format!("pillar={pillar}");
    let mut args = vec![minion, "state.apply", sls, pillar.as_str()];
    args.extend(extra);
    args.extend(["--out", "json", "--static"]);
    let out = lab.salt(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let states = match &parsed[minion] {
        Value::Object(states) => states.values().cloned().collect(),
        _ => Vec::new(),
    };
    (states, out.status.success(), text)
}

fn changed(states: &[Value]) -> usize {
    states.iter().filter(|s| s["changes"].as_object().is_some_and(|c| !c.is_empty())).count()
}

fn agent_pillar(path: &Path, version: &str) -> Value {
    json!({"saltpeter": {"agent": {
        "version": version,
        "path": path,
        "source": "salt://sp-test/saltpeter-agent-{version}-x86_64-linux",
        "source_hash": "salt://sp-test/saltpeter-agent-{version}-x86_64-linux.sha256",
    }}})
}

fn version_of(path: &Path) -> String {
    let out = Command::new(path).arg("--version").output().expect("run the installed agent");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_agent_is_pinned_verified_idempotent_and_moves_between_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bin").join("saltpeter-agent");

    let (states, ok, out) = apply("saltpeter", &agent_pillar(&path, CURRENT), &[]);
    assert!(ok && changed(&states) >= 1, "{out}");
    assert_eq!(
        version_of(&path),
        format!("saltpeter-agent {CURRENT} (protocol {PROTOCOL_VERSION})")
    );
    let mode = fs_err::metadata(&path).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o755);

    // Idempotent: a second apply changes nothing.
    let (states, ok, out) = apply("saltpeter", &agent_pillar(&path, CURRENT), &[]);
    assert!(ok, "{out}");
    assert_eq!(changed(&states), 0, "{out}");

    // test=True says what would change, and changes nothing.
    let before = sha256(&path);
    let (states, ok, out) = apply("saltpeter", &agent_pillar(&path, OLD), &["test=True"]);
    assert!(ok, "{out}");
    assert!(states.iter().any(|s| s["result"].is_null() && s["name"] == json!(path)), "{out}");
    assert_eq!(sha256(&path), before);

    // Downgrade, then upgrade again, by the pinned version.
    let (_, ok, out) = apply("saltpeter", &agent_pillar(&path, OLD), &[]);
    assert!(ok, "{out}");
    assert_eq!(version_of(&path), format!("saltpeter-agent {OLD} (protocol 1)"));
    let (_, ok, out) = apply("saltpeter", &agent_pillar(&path, CURRENT), &[]);
    assert!(ok, "{out}");
    assert_eq!(
        version_of(&path),
        format!("saltpeter-agent {CURRENT} (protocol {PROTOCOL_VERSION})")
    );

    // A wrong hash fails the state and leaves the installed binary alone.
    let before = sha256(&path);
    let mut wrong = agent_pillar(&path, OLD);
    wrong["saltpeter"]["agent"]["source_hash"] = json!(format!("sha256={}", "0".repeat(64)));
    let (states, _, out) = apply("saltpeter", &wrong, &[]);
    let failed: Vec<&Value> = states.iter().filter(|s| s["result"] == json!(false)).collect();
    assert_eq!(failed.len(), 2, "the check and the install fail: {out}");
    assert!(
        failed.iter().any(|s| s["name"].as_str().is_some_and(|n| n.contains("nothing installed"))),
        "{out}"
    );
    assert_eq!(sha256(&path), before);
    assert_eq!(
        version_of(&path),
        format!("saltpeter-agent {CURRENT} (protocol {PROTOCOL_VERSION})")
    );
}

#[test]
fn the_sidecar_state_renders_config_and_a_hardened_unit_that_systemd_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pillar = json!({"saltpeter": {"sidecar": {
        "version": CURRENT,
        "path": root.join("bin/saltpeter"),
        "source": "salt://sp-test/saltpeter-{version}-x86_64-linux",
        "source_hash": "salt://sp-test/saltpeter-{version}-x86_64-linux.sha256",
        "config_dir": root.join("etc"),
        "state_dir": root.join("state"),
        "log_dir": root.join("log"),
        "unit_dir": root.join("systemd"),
        "master_config": salt_native_lab().lab.master_config,
        "service": {"name": "saltpeter", "manage": false},
        "config": {"api_ws": true, "timezone": "Europe/Berlin"},
        "job_files": {"web": {"nightly": {
            "min": 0, "hour": 3, "dom": "*", "mon": "*", "dow": "*",
            "targets": "*", "command": "true"}}},
    }}});
    let (states, ok, out) = apply("saltpeter.sidecar", &pillar, &[]);
    assert!(ok && changed(&states) >= 5, "{out}");
    let (states, ok, out) = apply("saltpeter.sidecar", &pillar, &[]);
    assert!(ok, "{out}");
    assert_eq!(changed(&states), 0, "the second apply changed something: {out}");

    // The config the daemon reads: `saltpeter check` accepts it and sees the job.
    let check = Command::new(root.join("bin/saltpeter"))
        .arg("-c")
        .arg(root.join("etc"))
        .arg("check")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("nightly"), "{report}");
    let settings = fs_err::read_to_string(root.join("etc/00-saltpeter-config.yaml")).unwrap();
    assert!(settings.contains("timezone: Europe/Berlin"), "{settings}");
    assert!(settings.contains(&format!("logdir: {}", root.join("log").display())), "{settings}");

    let unit_path = root.join("systemd/saltpeter.service");
    let unit = fs_err::read_to_string(&unit_path).unwrap();
    for line in [
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        &format!("ReadWritePaths={} {}", root.join("state").display(), root.join("log").display()),
        &format!(
            "ExecStart={} --config {}",
            root.join("bin/saltpeter").display(),
            root.join("etc").display()
        ),
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{unit}");
    }
    // With the service managed, it is restarted when the binary, the settings, a job file or the
    // unit changes (what Salt would do; this lab has no systemd to run it).
    let mut managed = pillar.clone();
    managed["saltpeter"]["sidecar"]["service"]["manage"] = json!(true);
    let shown = salt_native_lab().lab.salt(&[
        "minion-3",
        "state.show_sls",
        "saltpeter.sidecar",
        &format!("pillar={managed}"),
        "--out",
        "json",
        "--static",
    ]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let service = &shown["minion-3"]["saltpeter-sidecar-service"]["service"];
    let watched: Vec<String> = service
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|arg| arg.get("watch"))
        .flat_map(|w| w.as_array().cloned().unwrap_or_default())
        .map(|w| w.to_string())
        .collect();
    for id in [
        "saltpeter-sidecar-binary",
        "saltpeter-sidecar-settings",
        "saltpeter-sidecar-unit",
        "saltpeter-sidecar-jobs-web",
    ] {
        assert!(watched.iter().any(|w| w.contains(id)), "{id} not watched: {service}");
    }

    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit_path).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("saltpeter.service")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify: {said}");
}
