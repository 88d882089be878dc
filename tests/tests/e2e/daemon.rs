//! The daemon's own behaviour: signals.

use std::time::Duration;

use saltpeter_tests::{Lab, Sidecar, wait_until};

#[test]
fn sighup_reloads_the_config_and_the_daemon_keeps_running() {
    let lab = Lab::shared();
    // No periodic pillar read during the test: the one after SIGHUP is the reload's.
    let mut sidecar = Sidecar::start_with_config(
        lab,
        "first:\n  sec: 0\n  min: 0\n  hour: 0\n  dom: 1\n  mon: 1\n  dow: '*'\n  targets: '*'\n  command: 'true'\n",
        "saltpeter_config:\n  pillar_refresh: 3600\n",
        &[],
    );
    let reads = |log: &str| log.matches("Reading the pillar.").count();
    let before = wait_until("the first pillar read", Duration::from_secs(30), || {
        let n = reads(&sidecar.log());
        (n > 0).then_some(n)
    });
    sidecar.signal("HUP");
    let log = wait_until("the SIGHUP reload", Duration::from_secs(30), || {
        let log = sidecar.log();
        log.contains("SIGHUP reload done").then_some(log)
    });
    // (On a timeout, `wait_until` panics; the daemon's log is in the sidecar's directory.)
    assert!(log.contains("SIGHUP: reloading the configuration"), "{log}");
    // The reload reads the pillar again, not only the files.
    wait_until("the pillar read after SIGHUP", Duration::from_secs(30), || {
        (reads(&sidecar.log()) > before).then_some(())
    });
    // SIGHUP's default action would have ended the process.
    assert!(sidecar.is_running(), "the daemon exited on SIGHUP:\n{log}");
}
