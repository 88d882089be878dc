//! Coalesced dispatch: the minions' launches that the engine collects during one turn (every run
//! due at one instant, once its target resolved) become one Salt publish per distinct agent
//! (wrapper path and server URL) and set of minions, instead of one per run and minion.
//!
//! The publish carries only `saltpeter-agent dispatch --url URL --dispatch ID --token T` (and
//! the minion's id, rendered by Salt on the minion): the jobs' commands, users and environment
//! travel in the manifest each agent fetches over its WebSocket, so they never reach the
//! master's job cache or the `salt/job/*/new` events. Salt's return of the launch on a minion
//! stands for every run of the dispatch on that minion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use saltpeter_protocol::{DispatchId, JobInstance, JobName, ManifestEntry, Timestamp, Token};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::engine::Command;
use super::minion::Input;
use super::{Deps, EngineSettings};
use crate::config::{Dispatch, Job};
use crate::salt::{JobUpdate, Publish, Target};

/// How a job's runs reach its minions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMode {
    /// One publish per instant and set of minions; the agent fetches its manifest.
    Coalesced,
    /// One publish per run and minion with the `SP_*` environment (the original wrapper).
    Single,
    /// `use_wrapper: false`: `cmd.run` of the command itself through Salt.
    Legacy,
}

impl DispatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchMode::Coalesced => "coalesced",
            DispatchMode::Single => "single",
            DispatchMode::Legacy => "legacy (use_wrapper: false)",
        }
    }
}

/// The mode of `job`: `use_wrapper: false` is legacy; else its `dispatch:`, else the global
/// `default_dispatch`, else coalesced when the agent is `saltpeter-agent` (the original wrapper
/// knows only the `SP_*` environment).
pub fn mode_of(job: &Job, default: Option<Dispatch>, default_wrapper: &str) -> DispatchMode {
    if !job.use_wrapper {
        return DispatchMode::Legacy;
    }
    let wrapper = job.wrapper_path.as_deref().unwrap_or(default_wrapper);
    match job.dispatch.or(default) {
        Some(Dispatch::Coalesced) => DispatchMode::Coalesced,
        Some(Dispatch::Single) => DispatchMode::Single,
        None if is_our_agent(wrapper) => DispatchMode::Coalesced,
        None => DispatchMode::Single,
    }
}

/// How long before its instant a run of `job` is published and armed; zero: at the instant.
/// Only coalesced runs are pre-armed.
pub fn lead_of(job: &Job, settings: &EngineSettings) -> std::time::Duration {
    match settings.mode(job) {
        DispatchMode::Coalesced => job.lead_time.unwrap_or(settings.default_lead_time),
        DispatchMode::Single | DispatchMode::Legacy => std::time::Duration::ZERO,
    }
}

fn is_our_agent(path: &str) -> bool {
    std::path::Path::new(path).file_name().is_some_and(|n| n == "saltpeter-agent")
}

/// One run's minions waiting for this turn's dispatch.
pub(super) struct Pending {
    pub instance: String,
    pub job: Arc<Job>,
    pub minions: Vec<String>,
    /// The instant armed agents start at; `None`: at once.
    pub scheduled: Option<DateTime<Utc>>,
    /// What the store records as the minions' path (`coalesced`, `pre-armed`, `fallback`).
    pub path: &'static str,
    /// When to publish: the instant minus the lead time (now, for a late or fallback launch).
    pub publish_at: DateTime<Utc>,
    /// Coalesced; or, for minions that `minion_dispatch` gives another mode, single or legacy
    /// (published at the instant, never armed).
    pub mode: DispatchMode,
}

/// One publish to make: its id and token, and what each minion runs.
pub(super) struct Planned {
    pub id: DispatchId,
    pub token: Token,
    pub wrapper: String,
    pub url: String,
    /// Per minion: the manifest entries (each names its instance and, pre-armed, its instant).
    pub manifests: BTreeMap<String, Vec<ManifestEntry>>,
    /// What the store records as each instance's path (`coalesced`, `pre-armed`, `fallback`).
    pub paths: HashMap<String, &'static str>,
}

impl Planned {
    /// The instances of each minion.
    pub(super) fn runs(&self) -> BTreeMap<String, Vec<String>> {
        self.manifests
            .iter()
            .map(|(m, entries)| {
                (m.clone(), entries.iter().map(|e| e.job_instance.as_str().to_owned()).collect())
            })
            .collect()
    }

    /// The pre-armed instances (their entries name an instant to start at).
    fn armed(&self) -> HashSet<String> {
        self.manifests
            .values()
            .flatten()
            .filter(|e| e.scheduled.is_some())
            .map(|e| e.job_instance.as_str().to_owned())
            .collect()
    }

    /// The earliest instant a pre-armed entry starts at: a minion whose agent has not fetched
    /// its manifest by then falls back to an ordinary dispatch. `None`: nothing is armed.
    pub(super) fn armed_at(&self) -> Option<DateTime<Utc>> {
        self.manifests.values().flatten().filter_map(|e| e.scheduled.map(|t| t.0)).min()
    }
}

/// Groups this turn's launches into publishes: by agent (wrapper path, server URL) and set of
/// minions. Runs that start at once and runs armed for an instant share a publish (each
/// manifest entry carries its own instant): two publishes of the same agent to one minion in
/// the same instant are what this avoids.
pub(super) fn plan(
    pending: Vec<Pending>,
    settings: &EngineSettings,
    counter: &mut u64,
) -> Vec<Planned> {
    type Key = (String, String);
    let mut by_agent: BTreeMap<Key, BTreeMap<String, Vec<ManifestEntry>>> = BTreeMap::new();
    let mut paths = HashMap::new();
    for p in pending {
        let wrapper =
            p.job.wrapper_path.clone().unwrap_or_else(|| settings.default_wrapper_path.clone());
        let url = settings.agent_url(&p.job);
        let manifests = by_agent.entry((wrapper, url)).or_default();
        let entry = entry(&p.job, &p.instance, p.scheduled);
        paths.insert(p.instance.clone(), p.path);
        for minion in p.minions {
            manifests.entry(minion).or_default().push(entry.clone());
        }
    }
    let mut planned = Vec::new();
    for ((wrapper, url), manifests) in by_agent {
        // Minions with the same runs share a publish; in practice (jobs targeting the same
        // fleet) that is one publish for the whole instant.
        let mut by_set: BTreeMap<Vec<String>, BTreeMap<String, Vec<ManifestEntry>>> =
            BTreeMap::new();
        for (minion, entries) in manifests {
            let set: Vec<String> =
                entries.iter().map(|e| e.job_instance.as_str().to_owned()).collect();
            by_set.entry(set).or_default().insert(minion, entries);
        }
        // Few distinct sets: one publish each. Many (every minion different): one publish for
        // all, since a publish costs Salt far more than a longer minion list.
        let groups: Vec<BTreeMap<String, Vec<ManifestEntry>>> = if by_set.len() <= 4 {
            by_set.into_values().collect()
        } else {
            vec![by_set.into_values().flatten().collect()]
        };
        for manifests in groups {
            *counter += 1;
            let id =
                DispatchId::new(format!("d-{}-{}", Utc::now().format("%Y%m%dT%H%M%S"), counter));
            let paths = manifests
                .values()
                .flatten()
                .filter_map(|e| {
                    let instance = e.job_instance.as_str();
                    paths.get(instance).map(|p| (instance.to_owned(), *p))
                })
                .collect();
            planned.push(Planned {
                id,
                token: Token::new(format!("{:032x}", rand::random::<u128>())),
                wrapper: wrapper.clone(),
                url: url.clone(),
                manifests,
                paths,
            });
        }
    }
    planned
}

/// The manifest entry of one run: what the `SP_*` environment says in the single mode.
fn entry(job: &Job, instance: &str, scheduled: Option<DateTime<Utc>>) -> ManifestEntry {
    ManifestEntry {
        job_name: JobName::new(job.name.as_str()),
        job_instance: JobInstance::new(instance),
        command: job.command.clone(),
        user: job.user.clone(),
        cwd: job.cwd.clone(),
        env: job.env.clone(),
        timeout: job.timeout,
        scheduled: scheduled.map(Timestamp),
        allow_overlap: job.allow_overlap,
        lockfile: job.lockfile.clone(),
        output_interval_ms: None,
    }
}

/// The command Salt runs on every minion of a dispatch. Salt renders `{{ grains['id'] }}` on
/// each minion (`template: jinja`), so the agent knows which minion's manifest to ask for.
/// With TLS and `tls_ca_file`, `SP_CA_FILE` tells the agent which CA to trust.
fn command_line(planned: &Planned, ca_file: Option<&str>) -> String {
    let ca = ca_file
        .map(|ca| format!("SP_CA_FILE={} ", super::dispatch::shell_quote(ca)))
        .unwrap_or_default();
    format!(
        "SP_MACHINE_ID={{{{ grains['id'] }}}} {ca}exec {} dispatch --url {} --dispatch {} --token {}",
        super::dispatch::shell_quote(&planned.wrapper),
        super::dispatch::shell_quote(&planned.url),
        super::dispatch::shell_quote(planned.id.as_str()),
        super::dispatch::shell_quote(planned.token.as_str()),
    )
}

/// Publishes one dispatch. Salt's return on each minion goes to every run of it there; a
/// minion that never returns is left to the runs' launch deadline.
pub(super) fn publish(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    planned: &Planned,
    inbox: mpsc::Sender<Command>,
) {
    let runs: HashMap<String, Vec<String>> = planned.runs().into_iter().collect();
    let minions: Vec<&str> = planned.manifests.keys().map(String::as_str).collect();
    // As `cmd=`: a first argument of the form `NAME=...` would be read by Salt as a keyword.
    let publish = Publish::new(Target::list(&minions), "cmd.run")
        .kwarg("cmd", command_line(planned, deps.settings.agent_ca_file.as_deref()))
        .kwarg("template", "jinja")
        .kwarg("python_shell", true);
    let id = planned.id.clone();
    // A pre-armed launch that failed is not final: the minion did not arm, and is dispatched
    // the ordinary way at the instant (the engine's fallback). Only the runs that start at
    // once take a failure as their result.
    let armed = planned.armed();
    tasks.spawn(async move {
        tracing::debug!(dispatch = %id, minions = runs.len(), "Publishing a coalesced dispatch.");
        let report = |minion: &str, retcode: i32, output: String| {
            let instances = runs.get(minion).cloned().unwrap_or_default();
            let (inbox, minion) = (inbox.clone(), minion.to_owned());
            let failed = retcode != 0;
            let armed = &armed;
            async move {
                for instance in instances {
                    if failed && armed.contains(&instance) {
                        continue;
                    }
                    let input = Input::LaunchReturned { retcode, output: output.clone() };
                    let command = Command::Minion { instance, minion: minion.clone(), input };
                    if inbox.send(command).await.is_err() {
                        return;
                    }
                }
            }
        };
        match deps.salt.run_job(&publish, deps.settings.launch_deadline).await {
            Err(e) => {
                if !armed.is_empty() {
                    tracing::warn!(dispatch = %id, error = %e, "A pre-armed publish failed; its minions fall back at the instant.");
                }
                let output = format!("Salt could not publish the dispatch: {e}");
                for minion in runs.keys() {
                    report(minion, 255, output.clone()).await;
                }
            }
            Ok(mut run) => {
                while let Some(update) = run.next().await {
                    if let JobUpdate::Return(r) = update {
                        let (retcode, output) = super::dispatch::launch_return(&r);
                        if !armed.is_empty() && retcode != 0 {
                            tracing::warn!(dispatch = %id, minion = %r.id.as_str(), retcode, output, "A pre-armed launch failed; the minion falls back at the instant.");
                        }
                        report(r.id.as_str(), retcode, output).await;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> Arc<Job> {
        let yaml = format!(
            "{name}:\n  sec: 0\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'\n  command: 'echo {name}'\n  targets: '*'\n  env:\n    K: v\n"
        );
        let dir = tempfile::tempdir().expect("dir");
        fs_err::write(dir.path().join("j.yaml"), yaml).expect("write");
        let loaded = crate::config::load_dir(dir.path(), Utc::now()).expect("load");
        loaded.jobs.values().next().cloned().expect("a job")
    }

    fn pending(name: &str, minions: &[&str]) -> Pending {
        Pending {
            instance: format!("{name}_1"),
            job: job(name),
            minions: minions.iter().map(|m| (*m).to_owned()).collect(),
            scheduled: None,
            path: "coalesced",
            publish_at: Utc::now(),
            mode: DispatchMode::Coalesced,
        }
    }

    #[test]
    fn runs_of_one_instant_on_the_same_minions_are_one_publish() {
        let settings = EngineSettings::default();
        let mut n = 0;
        let all = ["m1", "m2", "m3"];
        let planned = plan(
            vec![pending("a", &all), pending("b", &all), pending("c", &all)],
            &settings,
            &mut n,
        );
        assert_eq!(planned.len(), 1);
        let p = &planned[0];
        assert_eq!(p.manifests.len(), 3);
        assert!(p.manifests.values().all(|e| e.len() == 3));
        let line = command_line(p, None);
        assert!(line.contains("dispatch --url") && line.contains(p.id.as_str()), "{line}");
        assert!(!line.contains("echo a"), "no job content in the publish: {line}");
        assert!(!line.contains("SP_CA_FILE"), "{line}");
        let with_ca = command_line(p, Some("/etc/saltpeter/ca.pem"));
        assert!(with_ca.contains("SP_CA_FILE='/etc/saltpeter/ca.pem' exec "), "{with_ca}");
    }

    #[test]
    fn a_run_starting_now_and_one_armed_on_the_same_minion_share_a_publish() {
        // At a restart: a catch-up run (at once) and the on-time slot (pre-armed) of another
        // job, flushed in the same turn: one publish, each entry with its own instant.
        let settings = EngineSettings::default();
        let mut n = 0;
        let at = Utc::now() + chrono::Duration::seconds(2);
        let armed = Pending { scheduled: Some(at), path: "pre-armed", ..pending("b", &["m1"]) };
        let planned = plan(vec![pending("a", &["m1"]), armed], &settings, &mut n);
        assert_eq!(planned.len(), 1);
        let p = &planned[0];
        assert_eq!(p.manifests["m1"].len(), 2);
        assert_eq!(p.armed_at(), Some(at));
        assert_eq!(p.armed(), HashSet::from(["b_1".to_owned()]));
        assert_eq!((p.paths["a_1"], p.paths["b_1"]), ("coalesced", "pre-armed"));
    }

    #[test]
    fn distinct_minion_sets_are_distinct_publishes() {
        let settings = EngineSettings::default();
        let mut n = 0;
        let planned =
            plan(vec![pending("a", &["m1", "m2"]), pending("b", &["m3"])], &settings, &mut n);
        assert_eq!(planned.len(), 2);
        let ids: std::collections::BTreeSet<_> = planned.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), 2);
    }
}
