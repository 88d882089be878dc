//! The `SP_*` contract: user, cwd and env really apply; every bad value is refused before
//! detaching with a message naming the variable.

use crate::server::{Mode, Server};
use crate::{Agent, SECS};

#[tokio::test]
async fn sp_user_sp_cwd_and_env_apply() {
    let server = Server::start(Mode::Normal).await;
    let cmd = "id -u; id -g; id -G; pwd; echo \"$HOME $USER $LOGNAME $SHELL\"; echo \"$FOO\"; echo \"token=$SP_TOKEN\"";
    let agent = Agent::new(&server.url(), "as-nobody", "i1", cmd)
        .set("SP_USER", "nobody")
        .set("SP_CWD", "/tmp")
        .set("SP_TOKEN", "secret")
        .set("FOO", "bar baz");
    agent.start();
    let r = server.complete("i1", SECS(30)).await;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let nobody: Vec<&str> =
        passwd.lines().find(|l| l.starts_with("nobody:")).unwrap().split(':').collect();
    let (uid, gid, home, shell) = (nobody[2], nobody[3], nobody[5], nobody[6]);
    let expected =
        format!("{uid}\n{gid}\n{gid}\n/tmp\n{home} nobody nobody {shell}\nbar baz\ntoken=\n");
    assert_eq!(String::from_utf8(r.stdout).unwrap(), expected);
    assert_eq!(r.complete.unwrap().retcode, 0);
    let connect = server.state.lock().unwrap().connects[0].clone();
    assert_eq!(connect.token.unwrap().as_str(), "secret");
}

#[test]
fn every_malformed_value_is_refused_before_detaching_naming_its_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "SP_WEBSOCKET_URL",
            "http://x",
            "SP_WEBSOCKET_URL: `http://x`: scheme `http` is not ws or wss",
        ),
        ("SP_WEBSOCKET_URL", "", "SP_WEBSOCKET_URL: is required"),
        ("SP_JOB_NAME", "", "SP_JOB_NAME: is required"),
        ("SP_JOB_NAME", "../etc", "SP_JOB_NAME: `../etc` cannot name a file"),
        ("SP_JOB_INSTANCE", "", "SP_JOB_INSTANCE: is required"),
        ("SP_COMMAND", "", "SP_COMMAND: is required"),
        ("SP_TIMEOUT", "10s", "SP_TIMEOUT: `10s` is not a whole number of seconds"),
        ("SP_TIMEOUT", "-1", "SP_TIMEOUT: `-1` is not a whole number of seconds"),
        ("SP_OUTPUT_INTERVAL_MS", "fast", "SP_OUTPUT_INTERVAL_MS: `fast` is not milliseconds"),
        ("SP_USER", "no-such-user-here", "SP_USER: no such user `no-such-user-here`"),
        ("SP_CWD", "/no/such/dir", "SP_CWD: `/no/such/dir` is not a directory"),
        ("SP_ALLOW_OVERLAP", "sometimes", "SP_ALLOW_OVERLAP: `sometimes` is not true/false"),
        ("SP_LOCKFILE", "relative.lock", "SP_LOCKFILE: `relative.lock` is not an absolute path"),
        (
            "SP_WRAPPER_LOGLEVEL",
            "verbose",
            "SP_WRAPPER_LOGLEVEL: `verbose` is not one of normal, debug, off",
        ),
        ("SP_WRAPPER_LOGDIR", "logs", "SP_WRAPPER_LOGDIR: `logs` is not an absolute path"),
        ("SP_CA_FILE", "/no/ca.pem", "SP_CA_FILE: `/no/ca.pem` is not a readable file"),
        ("SP_SPOOL_MAX_BYTES", "lots", "SP_SPOOL_MAX_BYTES: `lots` is not a byte count"),
    ];
    for (var, value, message) in cases {
        let agent = Agent::new("ws://127.0.0.1:9/x", "env", "i1", "true").set(var, value);
        let out = agent.launch();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(254), "{var}={value}: {stderr}");
        assert!(stderr.contains(message), "{var}={value}: expected `{message}` in:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one error for one bad variable: {stderr}");
        assert!(out.stdout.is_empty(), "nothing detached for {var}={value}");
    }
    // The legacy instance name is accepted.
    let agent =
        Agent::new("ws://127.0.0.1:9/x", "env", "", "true").set("SP_JOB_INSTANCE_NAME", "legacy");
    let out = agent.launch();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
