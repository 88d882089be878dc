//! The run engine's conversations with Salt, each a task that reports back through the engine's
//! inbox: resolving a job's target (with a liveness probe), launching the agent on minions with
//! the `SP_*` environment, and killing a run through Salt when its agent cannot be reached.

use std::sync::Arc;

use rmpv::Value;
use saltpeter_protocol::{EnvVar, Token};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::Deps;
use super::engine::Command;
use super::minion::Input;
use crate::config::{Job, WrapperLogLevel};
use crate::salt::{ClientError, Jid, JobUpdate, MinionId, Publish, Target};

/// The Salt target of a job.
fn target(job: &Job) -> Result<Target, String> {
    Ok(Target::new(job.targets.clone(), job.target_type))
}

/// Publishes `test.ping` to the target shared by the runs `instances` (one publish however
/// many runs share it): the master's prediction of the minions is the target's resolution
/// (reported at once), the answers are the liveness probe (reported at the response deadline,
/// or when every minion answered).
pub(super) fn resolve(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    job: &Job,
    instances: Vec<String>,
    inbox: mpsc::Sender<Command>,
) {
    let target = target(job);
    tasks.spawn(async move {
        let target = match target {
            Ok(t) => t,
            Err(why) => {
                let _ = inbox.send(Command::Resolved { instances, result: Err(why) }).await;
                return;
            }
        };
        let ping = Publish::new(target, "test.ping");
        let mut job_run = match deps.salt.run_job(&ping, deps.settings.response_deadline).await {
            Ok(run) => run,
            Err(ClientError::NoMinions(_)) => {
                let result = Err("no minion matches the target".to_owned());
                let _ = inbox.send(Command::Resolved { instances, result }).await;
                return;
            }
            Err(e) => {
                let result = Err(format!("Salt could not resolve the target: {e}"));
                let _ = inbox.send(Command::Resolved { instances, result }).await;
                return;
            }
        };
        let expected: Vec<String> =
            job_run.expected().iter().map(|m| m.as_str().to_owned()).collect();
        let _ = inbox
            .send(Command::Resolved { instances: instances.clone(), result: Ok(expected) })
            .await;
        let mut answered = Vec::new();
        let mut silent = Vec::new();
        while let Some(update) = job_run.next().await {
            match update {
                JobUpdate::Return(r) => answered.push(r.id.as_str().to_owned()),
                JobUpdate::NotReturned(missing) => {
                    silent = missing.iter().map(|m| m.as_str().to_owned()).collect();
                }
                JobUpdate::BusGap | JobUpdate::Lagged(_) => {}
            }
        }
        let _ = inbox.send(Command::Pinged { instances, answered, silent }).await;
    });
}

/// The `SP_*` environment of one minion's run, plus the job's own `env`.
fn agent_env(deps: &Deps, job: &Job, instance: &str, minion: &str, token: &Token) -> Value {
    let settings = &deps.settings;
    let url = format!("{}?token={}", settings.agent_url(job), token.as_str());
    let mut env: Vec<(String, String)> =
        job.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut set = |var: EnvVar, value: String| env.push((var.name().to_owned(), value));
    set(EnvVar::WebsocketUrl, url);
    set(EnvVar::JobName, job.name.as_str().to_owned());
    set(EnvVar::JobInstance, instance.to_owned());
    set(EnvVar::Command, job.command.clone());
    set(EnvVar::MachineId, minion.to_owned());
    set(EnvVar::Token, token.as_str().to_owned());
    set(EnvVar::Timeout, job.timeout.map_or(0, |t| t.as_secs()).to_string());
    set(EnvVar::AllowOverlap, job.allow_overlap.to_string());
    if let Some(ca) = &settings.agent_ca_file {
        set(EnvVar::CaFile, ca.clone());
    }
    if let Some(cwd) = &job.cwd {
        set(EnvVar::Cwd, cwd.clone());
    }
    if let Some(user) = &job.user {
        set(EnvVar::User, user.clone());
    }
    if let Some(lockfile) = &job.lockfile {
        set(EnvVar::Lockfile, lockfile.clone());
    }
    if let Some(dir) = &job.wrapper_logdir {
        set(EnvVar::LogDir, dir.clone());
    }
    if let Some(level) = job.wrapper_loglevel {
        let level = match level {
            WrapperLogLevel::Normal => "normal",
            WrapperLogLevel::Debug => "debug",
            WrapperLogLevel::Off => "off",
        };
        set(EnvVar::LogLevel, level.to_owned());
    }
    Value::Map(env.into_iter().map(|(k, v)| (Value::from(k), Value::from(v))).collect())
}

fn wrapper_path(deps: &Deps, job: &Job) -> String {
    job.wrapper_path.clone().unwrap_or_else(|| deps.settings.default_wrapper_path.clone())
}

/// What a `cmd.run` return says: its code, and its output as text.
pub(super) fn launch_return(r: &crate::salt::JobReturn) -> (i32, String) {
    let output = r.ret.as_text().map(|t| t.into_owned()).unwrap_or_default();
    let retcode =
        r.retcode.map_or(if r.failed() { 1 } else { 0 }, |c| i32::try_from(c).unwrap_or(255));
    (retcode, output)
}

/// Launches the agent on each minion: one publish per minion, since each gets its own token.
pub(super) fn launch(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    job: &Job,
    instance: &str,
    minions: Vec<(String, Token)>,
    inbox: mpsc::Sender<Command>,
) {
    for (minion, token) in minions {
        // Through the shell, so a missing agent is 127 and one that is not executable 126, as
        // the original documented; the path is quoted and the job travels in the environment.
        let publish = Publish::new(Target::list([minion.as_str()]), "cmd.run")
            .arg(shell_quote(&wrapper_path(&deps, job)))
            .kwarg("env", agent_env(&deps, job, instance, &minion, &token))
            .kwarg("python_shell", true);
        let (deps, inbox, instance) = (Arc::clone(&deps), inbox.clone(), instance.to_owned());
        tasks.spawn(async move {
            let input = match deps.salt.run_job(&publish, deps.settings.launch_deadline).await {
                Err(e) => Some(Input::LaunchReturned {
                    retcode: 255,
                    output: format!("Salt could not publish the launch: {e}"),
                }),
                Ok(mut run) => {
                    let mut input = None;
                    while let Some(update) = run.next().await {
                        if let JobUpdate::Return(r) = update {
                            let (retcode, output) = launch_return(&r);
                            input = Some(Input::LaunchReturned { retcode, output });
                        }
                    }
                    input
                }
            };
            // No return: the minion's own launch deadline decides (254).
            if let Some(input) = input {
                let _ = inbox.send(Command::Minion { instance, minion, input }).await;
            }
        });
    }
}

/// `use_wrapper: false`, as the original: `cmd.run` of the command itself through Salt (one
/// publish for the minions), the result from Salt's returns, and at the job's timeout
/// `saltutil.kill_job` on the minions that did not return (124).
pub(super) fn legacy(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    job: &Job,
    instance: &str,
    minions: Vec<(String, Token)>,
    inbox: mpsc::Sender<Command>,
) {
    let minions: Vec<String> = minions.into_iter().map(|(m, _)| m).collect();
    let env = Value::Map(
        job.env.iter().map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str()))).collect(),
    );
    let mut publish = Publish::new(Target::list(&minions), "cmd.run")
        .kwarg("cmd", job.command.clone())
        .kwarg("env", env)
        .kwarg("python_shell", true);
    if let Some(user) = &job.user {
        publish = publish.kwarg("runas", user.clone());
    }
    if let Some(cwd) = &job.cwd {
        publish = publish.kwarg("cwd", cwd.clone());
    }
    let timeout = job.timeout.unwrap_or(LEGACY_NO_TIMEOUT);
    let instance = instance.to_owned();
    tasks.spawn(async move {
        let run = match deps.salt.run_job(&publish, timeout).await {
            Ok(run) => run,
            Err(e) => {
                for minion in minions {
                    let input = Input::LaunchReturned {
                        retcode: 255,
                        output: format!("Salt could not publish the command: {e}"),
                    };
                    let command = Command::Minion { instance: instance.clone(), minion, input };
                    let _ = inbox.send(command).await;
                }
                return;
            }
        };
        let jid = run.jid().clone();
        // The jid first: a kill from then on goes through `saltutil.kill_job` of it.
        let known = Command::LegacyJid {
            instance: instance.clone(),
            minions: minions.clone(),
            jid: jid.to_string(),
        };
        let _ = inbox.send(known).await;
        for minion in &minions {
            let command = Command::Minion {
                instance: instance.clone(),
                minion: minion.clone(),
                input: Input::LegacyStarted,
            };
            let _ = inbox.send(command).await;
        }
        follow_legacy(&deps, run, &instance, timeout, &inbox).await;
    });
}

/// How long a `use_wrapper: false` run without a timeout is waited for: a year.
pub(super) const LEGACY_NO_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(86_400 * 365);

/// Follows the legacy runs of `minions` on a sidecar restarted while they ran: their publish
/// `jid` is known from the store. Returns that reached the master while we were down are read
/// from its job cache; the others are awaited on the bus until what is left of `timeout`.
pub(super) fn resume_legacy(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    instance: &str,
    jid: &str,
    minions: Vec<String>,
    timeout: std::time::Duration,
    inbox: mpsc::Sender<Command>,
) {
    let (instance, jid) = (instance.to_owned(), Jid::new(jid));
    tasks.spawn(async move {
        let ids = minions.iter().map(|m| MinionId::new(m.as_str())).collect();
        let mut run = deps.salt.follow_job(jid, ids, timeout).await;
        report_cached(&deps, &mut run, &instance, &inbox).await;
        follow_legacy(&deps, run, &instance, timeout, &inbox).await;
    });
}

/// Reports each minion's return to the engine as it arrives; after a gap in the bus, the
/// master's job cache fills it. Minions that never return are stopped with `saltutil.kill_job`
/// and end 124 at `timeout`.
async fn follow_legacy(
    deps: &Arc<Deps>,
    mut run: crate::salt::JobRun,
    instance: &str,
    timeout: std::time::Duration,
    inbox: &mpsc::Sender<Command>,
) {
    let jid = run.jid().clone();
    let mut missing = Vec::new();
    while let Some(update) = run.next().await {
        match update {
            JobUpdate::Return(r) => {
                let (retcode, output) = launch_return(&r);
                let minion = r.id.as_str().to_owned();
                let returned =
                    Command::Returned { instance: instance.to_owned(), minion, retcode, output };
                let _ = inbox.send(returned).await;
            }
            JobUpdate::NotReturned(m) => {
                missing = m.iter().map(|m| m.as_str().to_owned()).collect();
            }
            JobUpdate::BusGap | JobUpdate::Lagged(_) => {
                report_cached(deps, &mut run, instance, inbox).await;
            }
        }
    }
    if missing.is_empty() {
        return;
    }
    let kill = Publish::new(Target::list(&missing), "saltutil.kill_job").arg(jid.to_string());
    let killed = deps.salt.run_job(&kill, deps.settings.launch_deadline).await;
    let how = match killed {
        Ok(_) => "stopped with saltutil.kill_job",
        Err(_) => "saltutil.kill_job could not be published",
    };
    for minion in missing {
        let output = format!("timed out after {}s; {how}\n", timeout.as_secs());
        let returned =
            Command::Returned { instance: instance.to_owned(), minion, retcode: 124, output };
        let _ = inbox.send(returned).await;
    }
}

/// Reports the returns of `run`'s job that the master's job cache holds and the bus did not
/// bring (missed while we were down or disconnected).
async fn report_cached(
    deps: &Arc<Deps>,
    run: &mut crate::salt::JobRun,
    instance: &str,
    inbox: &mpsc::Sender<Command>,
) {
    let cached = match deps.salt.cached_returns(run.jid(), deps.settings.response_deadline).await {
        Ok(cached) => cached,
        Err(e) => {
            tracing::warn!(jid = %run.jid(), error = %e, "Cannot read the job cache; waiting for the returns on the bus.");
            return;
        }
    };
    for r in cached {
        if !run.expected().contains(&r.id) || !run.mark_returned(r.id.clone()) {
            continue;
        }
        let output = match &r.ret {
            Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
            Value::Nil => String::new(),
            other => other.to_string(),
        };
        let failed = r.success == Some(false);
        let retcode = r.retcode.map_or(i32::from(failed), |c| i32::try_from(c).unwrap_or(255));
        tracing::info!(instance, minion = %r.id.as_str(), retcode, "A legacy return read from the master's job cache.");
        let minion = r.id.as_str().to_owned();
        let returned = Command::Returned { instance: instance.to_owned(), minion, retcode, output };
        let _ = inbox.send(returned).await;
    }
}

/// Stops a legacy run's command on `minion` with `saltutil.kill_job` of its publish (Salt
/// signals the job's process and its children); the minion's return confirms it.
pub(super) fn legacy_kill(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    instance: &str,
    minion: &str,
    jid: &str,
    inbox: mpsc::Sender<Command>,
) {
    let publish = Publish::new(Target::list([minion]), "saltutil.kill_job").arg(jid.to_owned());
    let said = |output: String| match output.trim() {
        "" => "saltutil.kill_job (the job had already ended)".to_owned(),
        said => format!("saltutil.kill_job: {said}"),
    };
    let what = "saltutil.kill_job";
    spawn_salt_kill(tasks, deps, publish, what, said, instance, minion, inbox);
}

/// Runs `saltpeter-agent kill` on the minion: the agent there finds the run through its lock and
/// spool directory and stops its process group.
pub(super) fn kill_through_salt(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    job: &Job,
    instance: &str,
    minion: &str,
    inbox: mpsc::Sender<Command>,
) {
    let publish = Publish::new(Target::list([minion]), "cmd.run")
        .arg(format!(
            "{} kill --job {} --instance {}",
            wrapper_path(&deps, job),
            job.name.as_str(),
            instance
        ))
        .kwarg("python_shell", false);
    spawn_salt_kill(tasks, deps, publish, "the kill", |output| output, instance, minion, inbox);
}

/// Publishes a kill through Salt and reports to the engine whether the minion's return
/// confirms it (`what` names the kill in the messages; `said` words the minion's output).
#[allow(clippy::too_many_arguments)] // one call each from the two kill paths
fn spawn_salt_kill(
    tasks: &TaskTracker,
    deps: Arc<Deps>,
    publish: Publish,
    what: &'static str,
    said: impl Fn(String) -> String + Send + 'static,
    instance: &str,
    minion: &str,
    inbox: mpsc::Sender<Command>,
) {
    let (instance, minion) = (instance.to_owned(), minion.to_owned());
    tasks.spawn(async move {
        let input = match deps.salt.run_job(&publish, deps.settings.launch_deadline).await {
            Err(e) => Input::SaltKillReturned {
                confirmed: false,
                output: format!("Salt could not publish {what}: {e}"),
            },
            Ok(mut run) => {
                let mut input = Input::SaltKillReturned {
                    confirmed: false,
                    output: format!("the minion did not return {what}"),
                };
                while let Some(update) = run.next().await {
                    if let JobUpdate::Return(r) = update {
                        let (retcode, output) = launch_return(&r);
                        input = Input::SaltKillReturned {
                            confirmed: retcode == 0,
                            output: said(output),
                        };
                    }
                }
                input
            }
        };
        let _ = inbox.send(Command::Minion { instance, minion, input }).await;
    });
}

/// `word` as one word for /bin/sh.
pub(super) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_keeps_one_word() {
        assert_eq!(super::shell_quote("/usr/bin/a b"), "'/usr/bin/a b'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
