//! The Salt lab itself: the shared lab's minions, grains, pillar and nodegroup are what the tests
//! of the other areas rely on; a dedicated lab survives a master and a minion restart; and a lab
//! does not outlive the process that started it.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use saltpeter_tests::{Lab, LabConfig, bin, repo_root, venv_python, wait_until};
use serde_json::{Value, json};

/// Parses `salt --out=json --static` output into minion id -> return.
fn returns(out: &Output) -> BTreeMap<String, Value> {
    assert!(
        out.status.success(),
        "salt failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("salt printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

fn salt_json(lab: &Lab, args: &[&str]) -> BTreeMap<String, Value> {
    let mut all = vec!["--out=json", "--static"];
    all.extend_from_slice(args);
    returns(&lab.salt(&all))
}

/// Salt 3008 masks pillar values in its output unless asked not to.
fn pillar_get_args(salt_version: &str) -> Vec<&'static str> {
    let mut args = vec!["pillar.get", "lab"];
    if salt_version.starts_with("3008") {
        args.push("unmask=True");
    }
    args
}

fn minion_map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(id, v)| ((*id).to_owned(), v.clone())).collect()
}

#[test]
fn every_minion_of_the_shared_lab_answers_a_ping() {
    let lab = Lab::shared();
    assert_eq!(lab.minions, ["minion-1", "minion-2", "minion-3"]);
    let got = salt_json(lab, &["*", "test.ping"]);
    let all_true = minion_map(&[
        ("minion-1", json!(true)),
        ("minion-2", json!(true)),
        ("minion-3", json!(true)),
    ]);
    assert_eq!(got, all_true);
}

#[test]
fn the_shared_lab_has_the_promised_grains_pillar_and_nodegroup() {
    let lab = Lab::shared();
    let roles = salt_json(lab, &["*", "grains.get", "role"]);
    assert_eq!(
        roles,
        minion_map(&[
            ("minion-1", json!("web")),
            ("minion-2", json!("db")),
            ("minion-3", json!("web"))
        ])
    );

    let web = salt_json(lab, &["-N", "web", "test.ping"]);
    assert_eq!(web, minion_map(&[("minion-1", json!(true)), ("minion-3", json!(true))]));

    let mut args = vec!["*"];
    args.extend(pillar_get_args(&lab.salt_version));
    let pillar = salt_json(lab, &args);
    let expected = minion_map(&[
        ("minion-1", json!({"id": "minion-1", "role": "web"})),
        ("minion-2", json!({"id": "minion-2", "role": "db"})),
        ("minion-3", json!({"id": "minion-3", "role": "web"})),
    ]);
    assert_eq!(pillar, expected);
}

#[test]
fn the_shared_lab_exposes_what_a_client_of_the_master_needs() {
    let lab = Lab::shared();
    assert!(lab.master_config.is_file(), "{}", lab.master_config.display());
    assert!(lab.root_key.is_file(), "no root key at {}", lab.root_key.display());
    assert!(
        lab.sock_dir.join("master_event_pub.ipc").exists(),
        "no event bus in {}",
        lab.sock_dir.display()
    );
    assert!(TcpStream::connect(("127.0.0.1", lab.ret_port)).is_ok(), "nothing on the ret port");
    assert!(
        TcpStream::connect(("127.0.0.1", lab.publish_port)).is_ok(),
        "nothing on the publish port"
    );
    let runner = lab.salt_run(&["--out=json", "manage.up"]);
    assert!(runner.status.success(), "salt-run: {}", String::from_utf8_lossy(&runner.stderr));
    let up: Vec<String> =
        serde_json::from_slice(&runner.stdout).expect("manage.up prints a JSON list");
    assert_eq!(up, ["minion-1", "minion-2", "minion-3"]);
}

#[test]
fn the_default_venv_has_salt_and_the_original_saltpeter() {
    let python = venv_python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import salt.version, crontab, websockets, saltpeter; print(salt.version.__version__)",
        ])
        .output()
        .expect("run the venv's python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("300"));
}

#[test]
fn a_dedicated_lab_takes_its_own_config_and_survives_restarts() {
    let roots = tempfile::tempdir().expect("tempdir");
    let (files, pillar) = (roots.path().join("files"), roots.path().join("pillar"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::create_dir_all(&pillar).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from a test's own file root\n").unwrap();
    std::fs::write(pillar.join("top.sls"), "base:\n  '*':\n    - extra\n").unwrap();
    std::fs::write(pillar.join("extra.sls"), "extra: 42\n").unwrap();
    let lab = Lab::start(LabConfig {
        minions: 1,
        master_extra: vec!["nodegroups:\n  blue: 'G@color:blue'\n".to_owned()],
        file_roots: vec![files],
        pillar_roots: vec![pillar],
        grains: [("minion-1".to_owned(), json!({"color": "blue"}))].into(),
    })
    .expect("a one-minion lab");
    let shared = Lab::shared();
    assert_ne!(lab.ret_port, shared.ret_port, "two labs on one port");
    assert_ne!(lab.dir, shared.dir);
    let pong = minion_map(&[("minion-1", json!(true))]);

    // The test's config comes on top of the defaults, which stay.
    assert_eq!(salt_json(&lab, &["-N", "blue", "test.ping"]), pong);
    assert_eq!(salt_json(&lab, &["-N", "web", "test.ping"]), pong);
    let grains = salt_json(&lab, &["minion-1", "grains.item", "color", "role"]);
    assert_eq!(grains, minion_map(&[("minion-1", json!({"color": "blue", "role": "web"}))]));
    let file = salt_json(&lab, &["minion-1", "cp.get_file_str", "salt://hello.txt"]);
    assert_eq!(file, minion_map(&[("minion-1", json!("hello from a test's own file root\n"))]));
    let mut args = vec!["minion-1"];
    args.extend(pillar_get_args(&lab.salt_version));
    let lab_pillar = json!({"id": "minion-1", "role": "web"});
    assert_eq!(salt_json(&lab, &args), minion_map(&[("minion-1", lab_pillar)]));
    let mut args = vec!["minion-1", "pillar.get", "extra"];
    if lab.salt_version.starts_with("3008") {
        args.push("unmask=True");
    }
    assert_eq!(salt_json(&lab, &args), minion_map(&[("minion-1", json!(42))]));

    lab.stop_master();
    assert!(
        TcpStream::connect(("127.0.0.1", lab.ret_port)).is_err(),
        "the stopped master still listens"
    );
    lab.start_master();
    assert_eq!(salt_json(&lab, &["minion-1", "test.ping"]), pong);

    lab.stop_minion("minion-1");
    let missing = lab.salt(&[
        "--out=json",
        "--static",
        "-t",
        "2",
        "--gather-job-timeout",
        "2",
        "minion-1",
        "test.ping",
    ]);
    assert!(
        !missing.status.success(),
        "a stopped minion answered: {}",
        String::from_utf8_lossy(&missing.stdout)
    );
    lab.start_minion("minion-1");
    assert_eq!(salt_json(&lab, &["minion-1", "test.ping"]), pong);
}

#[test]
fn a_lab_is_torn_down_when_the_process_it_watches_exits() {
    let dir = tempfile::Builder::new().prefix("saltlab-watch-").tempdir().expect("tempdir").keep();
    let mut watched = Command::new("sleep").arg("600").spawn().expect("spawn a process to watch");
    let up = Command::new("python3")
        .arg(repo_root().join("scripts/saltlab"))
        .args(["up", "--minions", "0", "--purge-on-exit", "--dir"])
        .arg(&dir)
        .args(["--watch-pid", &watched.id().to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("run saltlab up");
    assert!(up.status.success(), "saltlab up: {}", String::from_utf8_lossy(&up.stderr));
    let master_pid: i32 = std::fs::read_to_string(dir.join("run/master.pid"))
        .expect("master.pid")
        .split_whitespace()
        .next()
        .expect("a pid")
        .parse()
        .expect("a number");
    watched.kill().expect("kill the watched process");
    watched.wait().expect("reap it");
    wait_until(
        "the watchdog to stop the master and delete the lab",
        Duration::from_secs(60),
        || {
            let master_gone = !std::path::Path::new(&format!("/proc/{master_pid}")).exists();
            (master_gone && !dir.exists()).then_some(())
        },
    );
}

#[test]
fn workspace_binaries_are_built_on_demand() {
    let agent = bin("saltpeter-agent");
    assert!(agent.is_file(), "{}", agent.display());
    assert_eq!(agent.file_name().and_then(|n| n.to_str()), Some("saltpeter-agent"));
}
