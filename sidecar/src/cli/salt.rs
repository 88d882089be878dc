//! `saltpeter salt ...`: a debugging view of the Salt master that Salt users recognise.
//!
//! `events` prints the bus like `salt-run state.event pretty=True`; `run` publishes a job like
//! `salt` and prints each return as it arrives; `fire`, `runner` and `wheel` do what they say.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rmpv::Value;

use crate::salt::{
    BusItem, EventBus, JobUpdate, MasterConfig, Publish, SaltClient, Target, TargetType, from_json,
    glob_match, to_json,
};

/// `saltpeter salt`.
#[derive(Debug, Args)]
pub struct SaltArgs {
    #[command(subcommand)]
    command: SaltCommand,
}

#[derive(Debug, Subcommand)]
enum SaltCommand {
    /// Print the master's events as they happen (like `salt-run state.event pretty=True`).
    Events {
        /// Only events whose tag matches this glob (`*` and `?`).
        #[arg(long)]
        tag: Option<String>,
        /// One JSON object per line: {"tag": ..., "data": ...}.
        #[arg(long)]
        json: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish a job and print each minion's return as it arrives (like `salt`).
    ///
    /// Exit status: 0 when every expected minion returned and succeeded, 1 when a minion failed
    /// (non-zero retcode or success false), 2 when a minion did not return by the deadline.
    Run(RunArgs),
    /// Fire an event onto the master bus: TAG and a JSON object.
    Fire {
        /// The event tag, e.g. `saltpeter/test/hello`.
        tag: String,
        /// The event data, a JSON object (default `{}`).
        data: Option<String>,
    },
    /// Call a runner (like `salt-run`) and print its return.
    Runner(CallArgs),
    /// Call a wheel function (like `salt-run wheel...`, e.g. `key.list_all`).
    Wheel(CallArgs),
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // one flag per Salt target type, as `salt` has
struct RunArgs {
    /// TARGET is a comma-separated list of minion ids.
    #[arg(short = 'L', long = "list", group = "tgt")]
    list: bool,
    /// TARGET is a grain match, `key:value`.
    #[arg(short = 'G', long = "grain", group = "tgt")]
    grain: bool,
    /// TARGET is a grain regex match, `key:regex`.
    #[arg(short = 'P', long = "grain-pcre", group = "tgt")]
    grain_pcre: bool,
    /// TARGET is a nodegroup from the master config.
    #[arg(short = 'N', long = "nodegroup", group = "tgt")]
    nodegroup: bool,
    /// TARGET is a compound expression.
    #[arg(short = 'C', long = "compound", group = "tgt")]
    compound: bool,
    /// TARGET is a regular expression on minion ids.
    #[arg(short = 'E', long = "pcre", group = "tgt")]
    pcre: bool,
    /// TARGET is a pillar match, `key:value`.
    #[arg(short = 'I', long = "pillar", group = "tgt")]
    pillar: bool,
    /// TARGET is a pillar regex match.
    #[arg(short = 'J', long = "pillar-pcre", group = "tgt")]
    pillar_pcre: bool,
    /// TARGET is a subnet (ipcidr).
    #[arg(short = 'S', long = "ipcidr", group = "tgt")]
    ipcidr: bool,
    /// TARGET is a range expression.
    #[arg(short = 'R', long = "range", group = "tgt")]
    range: bool,
    /// Seconds to wait for returns.
    #[arg(short = 't', long, default_value_t = 15)]
    timeout: u64,
    /// One JSON object per return.
    #[arg(long)]
    json: bool,
    /// Which minions: a glob on minion ids unless a target-type flag says otherwise.
    target: String,
    /// The execution module function, e.g. `cmd.run` or `test.ping`.
    fun: String,
    /// Positional arguments; `name=value` words become keyword arguments.
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The function, e.g. `manage.up` (runner) or `key.list_all` (wheel).
    fun: String,
    /// Positional arguments; `name=value` words become keyword arguments.
    args: Vec<String>,
    /// Seconds to wait for the result.
    #[arg(short = 't', long, default_value_t = 60)]
    timeout: u64,
}

impl RunArgs {
    fn target_type(&self) -> TargetType {
        let flags = [
            (self.list, TargetType::List),
            (self.grain, TargetType::Grain),
            (self.grain_pcre, TargetType::GrainPcre),
            (self.nodegroup, TargetType::Nodegroup),
            (self.compound, TargetType::Compound),
            (self.pcre, TargetType::Pcre),
            (self.pillar, TargetType::Pillar),
            (self.pillar_pcre, TargetType::PillarPcre),
            (self.ipcidr, TargetType::Ipcidr),
            (self.range, TargetType::Range),
        ];
        flags.iter().find(|(on, _)| *on).map_or(TargetType::Glob, |(_, t)| *t)
    }
}

/// Runs `saltpeter salt ...`.
pub async fn run(master_config: &Path, args: SaltArgs) -> anyhow::Result<ExitCode> {
    let config = MasterConfig::load(master_config)?;
    match args.command {
        SaltCommand::Events { tag, json, count } => {
            events(&config, tag.as_deref(), json, count).await
        }
        SaltCommand::Run(run) => run_job(&config, run).await,
        SaltCommand::Fire { tag, data } => {
            let data = match data {
                Some(text) => {
                    serde_json::from_str(&text).context("parse the event data as JSON")?
                }
                None => serde_json::json!({}),
            };
            let client = SaltClient::connect(&config).await?;
            let framing = client.fire_event(&tag, from_json(&data)).await?;
            eprintln!("fired {tag} ({framing} framing)");
            Ok(ExitCode::SUCCESS)
        }
        SaltCommand::Runner(call) => {
            let client = SaltClient::connect(&config).await?;
            let (args, kwargs) = split_words(&call.args);
            let timeout = Duration::from_secs(call.timeout);
            let ret = client.runner(&call.fun, args, kwargs, timeout).await?;
            let value = ret.ret.decode().context("decode the runner's return")?;
            print_json(&to_json(&value))?;
            Ok(if ret.success == Some(false) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        SaltCommand::Wheel(call) => {
            let client = SaltClient::connect(&config).await?;
            let (args, kwargs) = split_words(&call.args);
            let ret = client.wheel(&call.fun, args, kwargs).await?;
            print_json(&to_json(&ret.ret))?;
            Ok(if ret.success { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

async fn events(
    config: &MasterConfig,
    tag: Option<&str>,
    json: bool,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let bus = EventBus::connect(config.event_pub.clone()).await?;
    let mut sub = bus.subscribe();
    let mut printed = 0u64;
    while let Some(item) = sub.recv().await {
        let event = match item {
            BusItem::Event(e) => e,
            BusItem::Lagged(n) => {
                eprintln!("saltpeter: too slow, missed {n} events");
                continue;
            }
            BusItem::Disconnected => {
                eprintln!("saltpeter: lost the event bus, reconnecting");
                continue;
            }
            BusItem::Reconnected => {
                eprintln!("saltpeter: reconnected to the event bus");
                continue;
            }
        };
        if tag.is_some_and(|glob| !glob_match(glob, &event.tag)) {
            continue;
        }
        let data = match event.decode_data() {
            Ok(v) => to_json(&v),
            Err(e) => {
                eprintln!("saltpeter: cannot decode the data of {}: {e}", event.tag);
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        let written = if json {
            writeln!(out, "{}", serde_json::json!({ "tag": event.tag, "data": data }))
        } else {
            writeln!(out, "{}\t{}", event.tag, pretty(&data))
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS); // stdout closed (e.g. `| head`)
        }
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit codes of `salt run`: 0 all returned and succeeded, 1 a minion failed, 2 a minion did
/// not return by the deadline (2 wins over 1).
async fn run_job(config: &MasterConfig, args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = SaltClient::connect(config).await?;
    let (positional, kwargs) = split_words(&args.args);
    let mut job = Publish::new(Target::new(args.target.clone(), args.target_type()), &args.fun);
    job.args = positional;
    job.kwargs = kwargs;
    job.user = std::env::var("USER").unwrap_or_else(|_| "saltpeter".to_owned());
    let mut run = client.run_job(&job, Duration::from_secs(args.timeout)).await?;
    eprintln!("jid {} expecting {} minion(s)", run.jid(), run.expected().len());
    let (mut failed, mut missing) = (false, false);
    while let Some(update) = run.next().await {
        match update {
            JobUpdate::Return(r) => {
                failed |= r.failed();
                let ret = r.ret.decode().map(|v| to_json(&v)).unwrap_or(serde_json::Value::Null);
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": r.id.as_str(), "jid": r.jid.as_str(), "retcode": r.retcode,
                            "success": r.success, "return": ret,
                        })
                    );
                } else {
                    println!("{}:\n{}", r.id, indent(&nested(&ret)));
                    if let Some(code) = r.retcode.filter(|c| *c != 0) {
                        println!("    [retcode {code}]");
                    }
                }
            }
            JobUpdate::NotReturned(ids) => {
                missing |= !ids.is_empty();
                for id in ids {
                    if args.json {
                        println!("{}", serde_json::json!({ "id": id.as_str(), "returned": false }));
                    } else {
                        println!("{id}:\n    Minion did not return. [No response]");
                    }
                }
            }
            JobUpdate::BusGap => eprintln!("saltpeter: the event bus dropped; returns may be lost"),
            JobUpdate::Lagged(n) => eprintln!("saltpeter: missed {n} events"),
        }
    }
    Ok(ExitCode::from(if missing {
        2
    } else if failed {
        1
    } else {
        0
    }))
}

/// `name=value` words become keyword arguments, the others positional; values are read the way
/// the `salt` CLI reads them (YAML scalars, JSON/YAML flow lists and maps).
fn split_words(words: &[String]) -> (Vec<Value>, Vec<(String, Value)>) {
    let mut args = Vec::new();
    let mut kwargs = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some((name, value))
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                kwargs.push((name.to_owned(), yamlify(value)));
            }
            _ => args.push(yamlify(word)),
        }
    }
    (args, kwargs)
}

fn yamlify(word: &str) -> Value {
    let keep = || Value::from(word);
    if word.contains('#') || word.trim() != word || word.is_empty() {
        return keep();
    }
    match serde_yaml::from_str::<serde_json::Value>(word) {
        // Integers that do not fit 64 bits (jids) stay strings, as in Salt.
        Ok(serde_json::Value::Number(n)) if n.is_f64() && !word.contains(['.', 'e', 'E']) => keep(),
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => from_json(&v),
        Ok(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)))
            if word.starts_with(['[', '{']) =>
        {
            from_json(&v)
        }
        _ => keep(),
    }
}

/// Salt's nested outputter, roughly: text as is, booleans as Python prints them, the rest JSON.
fn nested(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(true) => "True".to_owned(),
        serde_json::Value::Bool(false) => "False".to_owned(),
        serde_json::Value::Null => "None".to_owned(),
        other => pretty(other),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// JSON with four-space indentation and sorted keys, as `state.event pretty=True` prints.
fn pretty(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => value.to_string(),
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", pretty(value)).context("write to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_args_and_kwargs_as_salt_reads_them() {
        let words: Vec<String> = [
            "echo hi",
            "3",
            "True",
            "20261122190935152817",
            "[1, 2]",
            "env={\"A\": \"1\"}",
            "cwd=/tmp",
            "cmd=a=b",
            "--flag=x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (args, kwargs) = split_words(&words);
        let json: Vec<serde_json::Value> = args.iter().map(to_json).collect();
        assert_eq!(
            json,
            [
                serde_json::json!("echo hi"),
                serde_json::json!(3),
                serde_json::json!(true),
                serde_json::json!("20261122190935152817"),
                serde_json::json!([1, 2]),
                serde_json::json!("--flag=x"),
            ]
        );
        let kw: Vec<(&str, serde_json::Value)> =
            kwargs.iter().map(|(k, v)| (k.as_str(), to_json(v))).collect();
        assert_eq!(
            kw,
            [
                ("env", serde_json::json!({ "A": "1" })),
                ("cwd", serde_json::json!("/tmp")),
                ("cmd", serde_json::json!("a=b")),
            ]
        );
    }
}
