//! The OpenAPI document fuzzed with schemathesis (PyPI, pinned; in a venv of its own made by
//! `scripts/pytool`) against a real daemon on the shared lab, with an admin token so every
//! operation is reached, after a real run so the store holds runs, results and output. Fails on
//! any 5xx, any answer that breaks its documented schema, status code or content type. The
//! examples per operation are few (CI has 2 cores for everything): about 20 s of requests.

use std::process::Command;
use std::time::Duration;

use saltpeter_tests::{Lab, Sidecar, job_every, tool_venv};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

#[test]
fn schemathesis_finds_no_server_error_or_schema_violation() {
    let venv = tool_venv(SCHEMATHESIS);
    let lab = Lab::shared();
    let (secret, sha) = crate::api::token("fuzz", "admin");
    // One job that runs every 20 s (runs, results and output to read) with an env to redact.
    let jobs =
        job_every("fuzzed", 20, "targets: minion-1\ncommand: echo fuzz\nenv: {TOKEN: hunter2}");
    let extra = format!(
        "saltpeter_config:\n  api_tokens:\n    - {{name: fuzz, sha256: {sha}, role: admin}}\n"
    );
    let mut sidecar = Sidecar::start_with_config(lab, &jobs, &extra, &[]);
    sidecar.wait_for_run("fuzzed", Duration::from_secs(90), |_| true);

    let out = Command::new(venv.join("bin").join("st"))
        .args(["run", &format!("{}/api/v1/openapi.json", sidecar.api_url())])
        .args(["--header", &format!("Authorization: Bearer {secret}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance",
        ])
        .args(["--max-examples", "10", "--workers", "1", "--request-timeout", "10"])
        .args(["--no-color"])
        // Its cache (`.schemathesis/`) goes beside the sidecar's temporary state, not into the repo.
        .current_dir(&sidecar.state_dir)
        .output()
        .expect("run schemathesis (st run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\n--- sidecar log ---\n{}",
        sidecar.log()
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(sidecar.is_running(), "the sidecar stopped under the fuzzer:\n{}", sidecar.log());
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
}
