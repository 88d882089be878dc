//! The Salt client against a real master and minions: events of the real `salt` CLI, our own
//! publishes with kwargs and every target type the lab can express, events we fire as seen by a
//! real `salt-run state.event`, a master restart under a live subscription, and the clear errors.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use saltpeter::salt::{
    BusItem, ClientError, Event, EventBus, EventKind, IpcEndpoint, IpcError, JobReturn, JobUpdate,
    MasterConfig, Publish, SaltClient, Subscription, Target, TargetType, from_json, to_json,
};
use saltpeter_tests::{Lab, LabConfig};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn client(lab: &Lab) -> SaltClient {
    let config = MasterConfig::load(&lab.master_config).expect("the lab's master config loads");
    assert_eq!(config.key_file, lab.root_key, "the key file is found from the master config");
    SaltClient::connect(&config).await.expect("connect to the lab master")
}

/// Waits, with a deadline, for the first event on `sub` that `pick` accepts.
async fn next_matching<T>(
    sub: &mut Subscription,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match sub.recv().await {
                Some(BusItem::Event(e)) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Some(_) => {}
                None => panic!("the bus closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(SECS(60), wait).await.unwrap_or_else(|_| panic!("no {what} within 60 s"))
}

/// Fires a marker and waits to see it: after this the subscription cannot miss events.
async fn sync(client: &SaltClient, sub: &mut Subscription) {
    let tag = format!("saltpeter/e2e/sync/{}", std::process::id());
    client.fire_event(&tag, from_json(&json!({}))).await.expect("fire a sync event");
    next_matching(sub, "our sync event", |e| (e.tag == tag).then_some(())).await;
}

/// Runs a job to the end: returns by minion, and the minions that did not return.
async fn collect(
    client: &SaltClient,
    job: &Publish,
    timeout: Duration,
) -> (Vec<Arc<JobReturn>>, Vec<String>) {
    let mut run = client.run_job(job, timeout).await.expect("publish");
    let (mut returns, mut missing) = (Vec::new(), Vec::new());
    while let Some(update) = run.next().await {
        match update {
            JobUpdate::Return(r) => returns.push(r),
            JobUpdate::NotReturned(ids) => missing.extend(ids.iter().map(ToString::to_string)),
            JobUpdate::BusGap | JobUpdate::Lagged(_) => {}
        }
    }
    (returns, missing)
}

fn ids(returns: &[Arc<JobReturn>]) -> BTreeSet<String> {
    returns.iter().map(|r| r.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_a_ping_from_the_salt_cli_carry_its_jid_tag_and_minion() {
    let lab = blocking(Lab::shared);
    let client = client(lab).await;
    let mut sub = client.subscribe();
    sync(&client, &mut sub).await;

    let out = blocking(|| lab.salt(&["-v", "minion-1", "test.ping"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "salt -v minion-1 test.ping: {stdout}");
    let jid = stdout
        .split_whitespace()
        .find(|w| w.len() == 20 && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("a jid in the verbose output: {stdout}"))
        .to_owned();

    let new = next_matching(&mut sub, "salt/job/<jid>/new", |e| match &e.kind {
        EventKind::JobNew(n) if n.jid.as_str() == jid => Some((e.tag.clone(), n.clone())),
        _ => None,
    })
    .await;
    assert_eq!(new.0, format!("salt/job/{jid}/new"));
    assert_eq!(new.1.fun, "test.ping");
    assert_eq!(new.1.minions.iter().map(ToString::to_string).collect::<Vec<_>>(), ["minion-1"]);

    let ret = next_matching(&mut sub, "salt/job/<jid>/ret/minion-1", |e| match &e.kind {
        EventKind::JobReturn(r) if r.jid.as_str() == jid => Some((e.tag.clone(), r.clone())),
        _ => None,
    })
    .await;
    assert_eq!(ret.0, format!("salt/job/{jid}/ret/minion-1"));
    assert_eq!(
        (ret.1.id.as_str(), ret.1.retcode, ret.1.success),
        ("minion-1", Some(0), Some(true))
    );
    assert_eq!(ret.1.ret.decode().unwrap(), from_json(&json!(true)));
}

#[tokio::test(flavor = "multi_thread")]
async fn cmd_run_on_three_minions_returns_output_and_retcode_and_kwargs_reach_the_module() {
    let lab = blocking(Lab::shared);
    let client = client(lab).await;
    let job = Publish::new(Target::list(&lab.minions), "cmd.run")
        .arg("echo \"$SP_E2E\"; pwd; exit 3")
        .kwarg("env", from_json(&json!({ "SP_E2E": "from-kwargs" })))
        .kwarg("cwd", "/tmp")
        .kwarg("python_shell", true);
    let (returns, missing) = collect(&client, &job, SECS(60)).await;
    assert!(missing.is_empty(), "every minion returned: missing {missing:?}");
    assert_eq!(ids(&returns), lab.minions.iter().cloned().collect());
    for r in &returns {
        assert_eq!(r.retcode, Some(3), "{}: retcode", r.id);
        assert!(r.failed());
        assert_eq!(r.ret.as_text().as_deref(), Some("from-kwargs\n/tmp"), "{}: stdout", r.id);
    }
    // The job cache has the same returns (what a consumer reads after a bus gap).
    let cached = client.lookup_jid(&returns[0].jid, SECS(60)).await.expect("jobs.lookup_jid");
    let cached_ids: BTreeSet<String> = cached.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(cached_ids, ids(&returns));
    assert!(cached.iter().all(|(_, v)| *v == from_json(&json!("from-kwargs\n/tmp"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_type_reaches_exactly_the_right_minions() {
    let lab = blocking(Lab::shared);
    let client = client(lab).await;
    let cases: [(&str, TargetType, &[&str]); 8] = [
        ("minion-[12]", TargetType::Glob, &["minion-1", "minion-2"]),
        ("minion-(1|3)", TargetType::Pcre, &["minion-1", "minion-3"]),
        ("minion-2,minion-3", TargetType::List, &["minion-2", "minion-3"]),
        ("role:db", TargetType::Grain, &["minion-2"]),
        ("web", TargetType::Nodegroup, &["minion-1", "minion-3"]),
        ("G@role:web and not minion-1", TargetType::Compound, &["minion-3"]),
        ("N@web or L@minion-2", TargetType::Compound, &["minion-1", "minion-2", "minion-3"]),
        ("lab:id:minion-2", TargetType::Pillar, &["minion-2"]),
    ];
    for (expr, kind, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let job = Publish::new(Target::new(expr, kind), "test.ping");
        let mut run = client.run_job(&job, SECS(30)).await.expect("publish");
        let predicted: BTreeSet<String> = run.expected().iter().map(ToString::to_string).collect();
        assert_eq!(predicted, want, "{kind} {expr}: the master's prediction");
        let mut answered = BTreeSet::new();
        while let Some(update) = run.next().await {
            match update {
                JobUpdate::Return(r) => {
                    answered.insert(r.id.to_string());
                }
                JobUpdate::NotReturned(ids) => panic!("{kind} {expr}: {ids:?} did not return"),
                JobUpdate::BusGap | JobUpdate::Lagged(_) => {}
            }
        }
        assert_eq!(answered, want, "{kind} {expr}: who answered");
    }
    let none = Publish::new(Target::glob("no-such-minion-*"), "test.ping");
    assert!(matches!(client.publish(&none).await, Err(ClientError::NoMinions(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_we_fire_is_seen_by_salt_run_state_event() {
    let lab = blocking(Lab::shared);
    let client = client(lab).await;
    let tag = format!("saltpeter/e2e/fired/{}", std::process::id());
    let mut watcher = lab
        .salt_command("salt-run")
        .args(["state.event", &format!("tagmatch={tag}"), "count=1", "pretty=True"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn salt-run state.event");
    // state.event subscribes some time after it starts; fire until it has seen one and exits.
    let data = from_json(&json!({ "job": "backup", "retcode": 0, "nested": { "ok": true } }));
    let deadline = tokio::time::Instant::now() + SECS(90);
    let status = loop {
        client.fire_event(&tag, data.clone()).await.expect("fire");
        if let Some(status) = watcher.try_wait().expect("poll salt-run") {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "salt-run state.event never saw {tag}");
        tokio::time::sleep(Duration::from_millis(250)).await; // polling rate while firing
    };
    let mut out = String::new();
    watcher.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "salt-run state.event: {out}");
    assert!(out.starts_with(&tag), "the tag: {out}");
    for field in ["\"job\": \"backup\"", "\"retcode\": 0", "\"ok\": true", "\"_stamp\""] {
        assert!(out.contains(field), "{field} in {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_restart_is_survived_and_a_stopped_minion_is_reported() {
    let lab = blocking(|| Lab::start(LabConfig::default())).expect("start a lab of our own");
    let client = client(&lab).await;
    let mut sub = client.subscribe();
    sync(&client, &mut sub).await;
    let ping = Publish::new(Target::glob("*"), "test.ping");
    let (before, _) = collect(&client, &ping, SECS(60)).await;
    assert_eq!(ids(&before).len(), lab.minions.len());

    blocking(|| lab.stop_master());
    next_matching_item(&mut sub, "Disconnected", |i| matches!(i, BusItem::Disconnected)).await;
    blocking(|| lab.start_master());
    next_matching_item(&mut sub, "Reconnected", |i| matches!(i, BusItem::Reconnected)).await;

    // The same client publishes again (fresh sockets, key re-read if it changed) and the same
    // subscription sees the events.
    let (after, missing) = collect(&client, &ping, SECS(60)).await;
    assert!(missing.is_empty(), "after the restart: missing {missing:?}");
    assert_eq!(ids(&after).len(), lab.minions.len());
    sync(&client, &mut sub).await;

    let down = lab.minions[1].clone();
    blocking(|| lab.stop_minion(&down));
    let (returns, missing) = collect(&client, &ping, SECS(8)).await;
    assert_eq!(
        missing,
        std::slice::from_ref(&down),
        "the stopped minion is reported at the deadline"
    );
    assert_eq!(ids(&returns).len(), lab.minions.len() - 1);
    assert!(!ids(&returns).contains(&down));
}

async fn next_matching_item(sub: &mut Subscription, what: &str, pick: impl Fn(&BusItem) -> bool) {
    let wait = async {
        while let Some(item) = sub.recv().await {
            if pick(&item) {
                return;
            }
        }
        panic!("the bus closed while waiting for {what}");
    };
    tokio::time::timeout(SECS(120), wait).await.unwrap_or_else(|_| panic!("no {what} in 120 s"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_and_a_missing_socket_give_clear_errors() {
    let lab = blocking(Lab::shared);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong_key");
    std::fs::write(&wrong, "c29tZSBvdGhlciBrZXk=").unwrap();
    let client = client(lab).await.with_key_file(&wrong).await.expect("a readable key file");
    let err = client.publish(&Publish::new(Target::glob("*"), "test.ping")).await.unwrap_err();
    assert!(matches!(&err, ClientError::KeyRejected { path } if *path == wrong), "{err}");
    assert!(err.to_string().contains(&wrong.display().to_string()));

    let unreadable = SaltClient::connect(&MasterConfig {
        key_file: dir.path().join("no_such_key"),
        ..MasterConfig::load(&lab.master_config).unwrap()
    })
    .await;
    let err = unreadable.err().expect("a missing key file is an error").to_string();
    assert!(err.contains("no_such_key") && err.contains("master's user"), "{err}");

    let socket = dir.path().join("master_event_pub.ipc");
    let err = EventBus::connect(IpcEndpoint::Unix(socket.clone())).await.err().unwrap();
    assert!(matches!(err, IpcError::Missing { .. }), "{err}");
    assert!(err.to_string().contains(&socket.display().to_string()), "{err}");

    // Not the master's user: the CLI, run as `nobody`, says which path and what to do, with the
    // lab's config, then with a copy of it that `nobody` can surely read.
    if !running_as_root() {
        return;
    }
    let as_nobody = |config: &std::path::Path| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(saltpeter_tests::bin("saltpeter"))
            .arg("--salt-master-config")
            .arg(config)
            .args(["salt", "events"])
            .output()
            .expect("run saltpeter as nobody");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Whichever it cannot reach first, the config or the socket, is named.
    let stderr = as_nobody(&lab.master_config);
    assert!(stderr.contains("master's user"), "{stderr}");
    assert!(
        stderr.contains(&lab.master_config.display().to_string())
            || stderr.contains("master_event_pub.ipc"),
        "{stderr}"
    );

    let public = tempfile::tempdir().unwrap();
    std::fs::set_permissions(public.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let conf_dir = lab.master_config.parent().unwrap();
    std::fs::copy(&lab.master_config, public.path().join("master")).unwrap();
    std::fs::create_dir(public.path().join("master.d")).unwrap();
    for entry in std::fs::read_dir(conf_dir.join("master.d")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), public.path().join("master.d").join(entry.file_name()))
            .unwrap();
    }
    let stderr = as_nobody(&public.path().join("master"));
    assert!(stderr.contains("permission denied on the master's event socket"), "{stderr}");
    assert!(
        stderr.contains("master_event_pub.ipc") && stderr.contains("master's user"),
        "{stderr}"
    );
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_subscriber_is_told_what_it_missed_and_does_not_stall_the_others() {
    let lab = blocking(Lab::shared);
    let client = client(lab).await;
    let config = MasterConfig::load(&lab.master_config).unwrap();
    let bus = EventBus::with_capacity(config.event_pub.clone(), 4).await.expect("connect");
    let mut fast = bus.subscribe();
    let mut slow = bus.subscribe();
    let tag = format!("saltpeter/e2e/lag/{}", std::process::id());
    // The fast subscriber sees each event before the next is fired; the slow one reads nothing.
    let deadline = tokio::time::Instant::now() + SECS(120);
    for i in 0..12u64 {
        loop {
            assert!(tokio::time::Instant::now() < deadline, "event {i} never reached the fast one");
            client.fire_event(&tag, from_json(&json!({ "i": i }))).await.expect("fire");
            let wait = next_matching(&mut fast, "our event on the fast subscriber", |e| {
                (e.tag == tag).then(|| e.decode_data().ok().map(|d| to_json(&d)["i"].clone()))
            });
            if tokio::time::timeout(SECS(5), wait).await.is_ok_and(|got| got == Some(json!(i))) {
                break;
            }
        }
    }
    let first = tokio::time::timeout(SECS(5), slow.recv()).await.expect("an item").expect("open");
    assert!(matches!(first, BusItem::Lagged(n) if n >= 8), "the slow one is told: {first:?}");
    // Then it goes on with the most recent events still in the ring (ours, or another test's).
    let next = tokio::time::timeout(SECS(5), slow.next_event()).await.expect("an event");
    assert!(next.is_some(), "the slow subscriber is still subscribed");
}
