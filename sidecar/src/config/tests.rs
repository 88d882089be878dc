//! Config loading: verbatim messages for bad files, defaults, reserved keys, duplicates, the last
//! valid definition on reload, and hot reload with real files (polled with a deadline).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("instant").with_timezone(&Utc)
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        fs_err::write(dir.path().join(name), text).expect("write");
    }
    dir
}

/// Every diagnostic as `file:line: job: field: message`, with the temp dir stripped.
fn messages(dir: &tempfile::TempDir, list: &[Diagnostic]) -> Vec<String> {
    let prefix = format!("{}/", dir.path().display());
    list.iter().map(|d| d.to_string().replace(&prefix, "")).collect()
}

const GOOD: &str = "hello:\n  min: '*/5'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: echo hi\n  targets: '*'\n";

#[test]
fn a_good_job_gets_the_originals_defaults() {
    let dir = dir_with(&[("web.yaml", GOOD)]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    assert!(
        loaded.report.errors.is_empty() && loaded.report.warnings.is_empty(),
        "{:?}",
        loaded.report
    );
    let job = &loaded.jobs[&JobName::new("hello")];
    assert_eq!(job.group, "web");
    assert_eq!(job.target_type, TargetType::Glob);
    assert_eq!(job.timeout, Some(Duration::from_secs(3600)));
    assert!(job.use_wrapper && job.enabled && !job.allow_overlap);
    assert_eq!(job.schedule.cron().as_str(), "0 */5 * * * * *");
    assert_eq!(job.schedule.zone(), chrono_tz::Tz::UTC);
}

#[test]
fn bad_files_give_verbatim_messages() {
    let dir = dir_with(&[
        ("a.yaml", "broken:\n  min: */5\n"),
        (
            "b.yaml",
            "nightly:\n  min: 30\n  hour: 2\n  dom: '*'\n  mon: '*'\n  dow: 8\n  command: x\n  targets: y\n  timout: 5\n  timeout: -1\n  target_type: globb\n",
        ),
        (
            "c.yml",
            "partial:\n  min: 0\n  hour: 0\n  command: x\n  targets: y\n  timezone: Mars/Olympus\n",
        ),
        ("d.yaml", "- a list\n"),
        (
            "e.yaml",
            "odd:\n  min: 45/30\n  hour: 0\n  dom: L5\n  mon: 13\n  dow: '*'\n  allow_overlap: yes please\n",
        ),
    ]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    assert_eq!(
        messages(&dir, &loaded.report.errors),
        [
            "a.yaml:2: is not valid YAML: did not find expected alphabetic or numeric character at line 2 column 9, while scanning an alias at line 2 column 8 (hint: quote values starting with `*`, like '*/5')",
            "b.yaml:6: job `nightly`: `dow`: 8 is out of range 0-7 (day of the week)",
            "b.yaml:11: job `nightly`: `target_type`: \"globb\" is not one of glob, pcre, list, grain, grain_pcre, pillar, pillar_pcre, pillar_exact, nodegroup, range, compound, ipcidr",
            "b.yaml:10: job `nightly`: `timeout`: -1 is negative; give seconds, 0 or more",
            "c.yml:1: job `partial`: `dom`: is required (the original drops a job without it)",
            "c.yml:1: job `partial`: `mon`: is required (the original drops a job without it)",
            "c.yml:1: job `partial`: `dow`: is required (the original drops a job without it)",
            "c.yml:6: job `partial`: `timezone`: \"Mars/Olympus\" is not an IANA time zone name (like Europe/Berlin or UTC)",
            "d.yaml: is a list, not a map of job names to jobs",
            "e.yaml:2: job `odd`: `min`: `45/30`: the first step from 45 lands on 75, past 59 (the original's library rejects this)",
            "e.yaml:4: job `odd`: `dom`: `l5`: a leading `L` is only for dow (`L5` = last Friday); dom takes a bare `L`",
            "e.yaml:5: job `odd`: `mon`: 13 is out of range 1-12 (month)",
            "e.yaml:1: job `odd`: `command`: is required",
            "e.yaml:1: job `odd`: `targets`: is required",
        ]
    );
    assert_eq!(
        messages(&dir, &loaded.report.warnings),
        [
            "b.yaml:9: job `nightly`: `timout`: unknown key, ignored; did you mean `timeout`?",
            "e.yaml:7: job `odd`: `allow_overlap`: \"yes please\" is neither `true` nor the original's \"i know what i am doing!\": overlap stays forbidden",
        ]
    );
    assert!(loaded.jobs.is_empty());
}

#[test]
fn the_originals_keys_keep_their_meaning() {
    let dir = dir_with(&[(
        "ops.yaml",
        "saltpeter_config:\n  timezone: Europe/Berlin\n  machines_ws_port: 9999\nsaltpeter_maintenance:\n  global: false\n  machines: [m1, m2]\n\
         j:\n  min: 0\n  hour: 3\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: x\n  targets: 'G@role:web'\n  target_type: compound\n\
         \x20 hard_timeout: 60\n  soft_timeout: 30\n  allow_overlap: 'i know what i am doing!'\n  env: {A: 1, B: two}\n  group: custom\n\
         \x20 batch_size: '25%'\n  max_failures: 2\n  catch_up: latest\n  number_of_targets: 0\n",
    )]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    assert!(loaded.report.errors.is_empty(), "{:?}", loaded.report.errors);
    assert_eq!(loaded.settings.machines_ws_port, 9999);
    assert_eq!(loaded.settings.api_ws_port, 8888);
    assert_eq!(
        loaded.maintenance,
        Maintenance { global: false, machines: vec!["m1".into(), "m2".into()] }
    );
    let job = &loaded.jobs[&JobName::new("j")];
    assert_eq!(job.schedule.zone(), chrono_tz::Tz::Europe__Berlin, "the global default zone");
    assert_eq!(job.timeout, Some(Duration::from_secs(60)), "hard_timeout when timeout is absent");
    assert_eq!(job.soft_timeout, Some(Duration::from_secs(30)));
    assert!(job.allow_overlap);
    assert_eq!(job.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(job.group, "custom");
    assert_eq!(job.batch_size, Some(BatchSize::Percent(25)));
    assert_eq!(job.max_failures, Some(BatchSize::Count(2)));
    assert_eq!(job.catch_up, CatchUp::Latest);
    assert_eq!(job.number_of_targets, None);
    let warned: Vec<_> = loaded.report.warnings.iter().filter_map(|w| w.field.clone()).collect();
    assert_eq!(warned, ["hard_timeout", "soft_timeout"]);
}

#[test]
fn duplicates_name_both_files_and_a_broken_edit_keeps_the_last_valid_job() {
    let dir = dir_with(&[("a.yaml", GOOD)]);
    let first = load_dir(dir.path(), now()).expect("load");
    assert_eq!(first.jobs.len(), 1);

    fs_err::write(dir.path().join("b.yaml"), GOOD).expect("write");
    let dup = reload(dir.path(), &first, now()).expect("reload");
    assert_eq!(messages(&dir, &dup.report.errors), [
        format!("a.yaml:1: job `hello`: is defined in more than one file: {0}/a.yaml and {0}/b.yaml; each name must be unique", dir.path().display()),
        format!("b.yaml:1: job `hello`: is defined in more than one file: {0}/a.yaml and {0}/b.yaml; each name must be unique", dir.path().display()),
    ].map(|m| m.replace(&format!("{}/", dir.path().display()), "")));
    assert_eq!(dup.jobs, first.jobs, "the job keeps its last valid definition");
    fs_err::remove_file(dir.path().join("b.yaml")).expect("rm");

    fs_err::write(dir.path().join("a.yaml"), GOOD.replace("'*/5'", "'*/99'")).expect("write");
    let broken = reload(dir.path(), &first, now()).expect("reload");
    assert_eq!(broken.report.errors.len(), 1);
    assert_eq!(broken.jobs, first.jobs);

    fs_err::write(dir.path().join("a.yaml"), "hello: [unclosed\n").expect("write");
    let unparsable = reload(dir.path(), &first, now()).expect("reload");
    assert_eq!(unparsable.jobs, first.jobs, "a file that does not parse keeps its jobs");

    fs_err::remove_file(dir.path().join("a.yaml")).expect("rm");
    let gone = reload(dir.path(), &first, now()).expect("reload");
    assert_eq!(JobDiff::between(&first.jobs, &gone.jobs).removed, [JobName::new("hello")]);
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics naming `what`.
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hot_reload_follows_real_files() {
    let dir = dir_with(&[("a.yaml", GOOD)]);
    let initial = load_dir(dir.path(), Utc::now()).expect("load");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let cancel = tokio_util::sync::CancellationToken::new();
    let options =
        WatchOptions { debounce: Duration::from_millis(50), rescan: Duration::from_secs(1) };
    let task = tokio::spawn(watch(dir.path().to_path_buf(), initial, options, tx, cancel.clone()));
    let mut next = async || -> Reloaded {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a reload within 10 s")
            .expect("open")
    };
    let write = |name: &str, text: &str| fs_err::write(dir.path().join(name), text).expect("write");

    write("b.yaml", &GOOD.replace("hello", "second"));
    let r = next().await;
    assert_eq!(r.diff.added, [JobName::new("second")]);

    write("b.yaml", &GOOD.replace("hello", "second").replace("echo hi", "echo changed"));
    let r = next().await;
    assert_eq!(r.diff.changed, [JobName::new("second")]);

    write("b.yaml", &GOOD.replace("hello", "second").replace("'*/5'", "'*/99'"));
    let r = next().await;
    assert!(r.diff.is_empty() && r.loaded.report.errors.len() == 1, "{r:?}");
    assert_eq!(r.loaded.jobs[&JobName::new("second")].command, "echo changed");

    fs_err::rename(dir.path().join("b.yaml"), dir.path().join("c.yaml")).expect("rename");
    // The invalid job moves with its file: still invalid, still its last valid definition.
    write("c.yaml", &GOOD.replace("hello", "second"));
    let r = wait_for("the renamed file's job", || {
        let r = rx.try_recv().ok()?;
        (r.loaded.jobs.get(&JobName::new("second"))?.group == "c").then_some(r)
    })
    .await;
    assert!(r.loaded.report.errors.is_empty());

    fs_err::remove_file(dir.path().join("c.yaml")).expect("rm");
    let r = wait_for("the removal", || {
        let r = rx.try_recv().ok()?;
        (!r.diff.removed.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(r.diff.removed, [JobName::new("second")]);
    cancel.cancel();
    task.await.expect("watch task");
}

#[test]
fn yaml_1_1_octal_and_booleans_keep_the_originals_meaning() {
    let dir = dir_with(&[(
        "o.yaml",
        "j:\n  min: 010\n  hour: '010'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: x\n  targets: y\n  use_wrapper: no\n",
    )]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    let job = &loaded.jobs[&JobName::new("j")];
    assert_eq!(job.schedule.cron().as_str(), "0 8 010 * * * *");
    assert!(!job.use_wrapper);
    assert_eq!(
        messages(&dir, &loaded.report.warnings),
        [
            "o.yaml:2: job `j`: `min`: 010 is YAML 1.1 octal, read as 8 as the original did; write 8, or '010' (quoted) for 10",
        ]
    );
}

#[test]
fn api_tokens_and_cors_origins_are_checked_entry_by_entry() {
    let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    let dir = dir_with(&[(
        "00-settings.yaml",
        &format!(
            "saltpeter_config:\n  api_tokens:\n    - {{name: ci, sha256: {hash}, role: operator}}\n\
             \x20   - {{name: bad, sha256: abc, role: admin}}\n    - {{name: who, sha256: {hash}, role: god}}\n\
             \x20   - {{sha256: {hash}, role: admin}}\n    - {{name: ci, sha256: {hash}, role: viewer}}\n\
             \x20 api_cors_origins: [https://ops.example.com/, ftp://x]\n"
        ),
    )]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    let tokens = &loaded.settings.api_tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!((tokens[0].name.as_str(), tokens[0].role), ("ci", Role::Operator));
    assert_eq!(hex::encode(tokens[0].sha256), hash);
    assert_eq!(loaded.settings.api_cors_origins, ["https://ops.example.com"]);
    let errors = messages(&dir, &loaded.report.errors).join("\n");
    for says in [
        "`api_tokens[1].sha256`: token \"bad\" needs the 64 hex digits",
        "`api_tokens[2].role`: token \"who\" needs a role: viewer, operator or admin",
        "`api_tokens[3].name`: is required",
        "`api_tokens[4].name`: two tokens are named \"ci\"",
        "`api_cors_origins`: \"ftp://x\" is not an origin",
    ] {
        assert!(errors.contains(says), "missing {says:?} in:\n{errors}");
    }
}

#[test]
fn minion_dispatch_maps_globs_to_modes_in_order_and_names_bad_entries() {
    let dir = dir_with(&[(
        "00-settings.yaml",
        "saltpeter_config:\n  minion_dispatch:\n    'old-*': single\n    'db-[12]': {dispatch: single, wrapper_path: /opt/go-agent}\n    bare: legacy\n    bad: fast\n    odd: {dispatch: single, wrapper: x}\n",
    )]);
    let loaded = load_dir(dir.path(), now()).expect("load");
    let got: Vec<_> = loaded
        .settings
        .minion_dispatch
        .iter()
        .map(|e| (e.glob.as_str(), e.mode, e.wrapper_path.as_deref()))
        .collect();
    use crate::config::MinionMode::{Legacy, Single};
    assert_eq!(
        got,
        [
            ("old-*", Single, None),
            ("db-[12]", Single, Some("/opt/go-agent")),
            ("bare", Legacy, None),
            ("odd", Single, None)
        ]
    );
    let errors = messages(&dir, &loaded.report.errors).join("\n");
    for says in [
        "`minion_dispatch`: bad: `fast` is not a dispatch mode (coalesced, single, legacy)",
        "`minion_dispatch`: odd: unknown key \"wrapper\"",
    ] {
        assert!(errors.contains(says), "missing {says:?} in:\n{errors}");
    }
}
