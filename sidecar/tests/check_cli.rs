//! `saltpeter check` as a process: exit codes and output for good, bad and missing directories.

use std::process::Command;

fn check(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_saltpeter"))
        .arg("check")
        .arg("-c")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run saltpeter check")
}

const GOOD: &str = "hello:\n  min: '*/30'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: echo hi\n  targets: '*'\n";

#[test]
fn exit_codes_say_whether_the_config_is_valid() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.yaml"), GOOD).expect("write");
    let from = ["--from", "2026-01-01T00:00:00Z"];
    let ok = check(dir.path(), &[&from[..], &["--next", "2"]].concat());
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = String::from_utf8(ok.stdout).expect("utf-8");
    assert!(
        text.contains("(2026-01-01T00:30:00Z)") && text.contains("(2026-01-01T01:00:00Z)"),
        "{text}"
    );

    std::fs::write(dir.path().join("b.yml"), GOOD.replace("hello", "bad").replace("'*/30'", "61"))
        .expect("write");
    let bad = check(dir.path(), &[&from[..], &["--json", "--job", "bad"]].concat());
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("json");
    assert_eq!(json["errors"][0]["field"], "min");
    assert_eq!(json["errors"][0]["message"], "61 is out of range 0-59 (minute) (line 2)");
    assert_eq!(json["jobs"], serde_json::json!([]));

    let missing = check(&dir.path().join("nope"), &[]);
    assert_eq!(missing.status.code(), Some(64));
    assert_eq!(check(dir.path(), &["--from", "yesterday"]).status.code(), Some(64));
    assert_eq!(check(dir.path(), &["--no-such-flag"]).status.code(), Some(64));
}
