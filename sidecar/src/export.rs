//! Search-engine export: the original's documents (`job_name`, `group`, `job_instance`,
//! `@timestamp`, `return_code`, `machine`, `output`, `msg_type`) sent to Elasticsearch and/or
//! OpenSearch with the bulk API.
//!
//! Nothing is lost while a cluster is down: the store's triggers queue every event in the same
//! transaction as the change itself (migration 3), each sink keeps how far it got, and a sink
//! retries with backoff until the cluster takes the batch. A document the cluster rejects for
//! good (a 4xx other than 429, say a mapping conflict) is logged and skipped, so one bad
//! document never blocks the rest.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::joblog::collapse_carriage_returns;
use crate::store::{ExportEvent, StoreError, StoreHandle, Write};

/// Events per bulk request.
const BATCH: u32 = 500;
/// How often an idle sink looks for new events.
const POLL: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One cluster to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    /// `elasticsearch` or `opensearch`: also the sink's name in the store.
    pub name: String,
    /// The cluster's base URL; `user:password@` in it becomes basic authentication.
    pub url: String,
    /// Documents go to `<index>-YYYY.MM.DD` (the UTC date of the event).
    pub index: String,
}

/// The sinks the settings turn on.
pub fn sinks(settings: &Settings) -> Vec<Sink> {
    [
        ("elasticsearch", &settings.elasticsearch, &settings.elasticsearch_index),
        ("opensearch", &settings.opensearch, &settings.opensearch_index),
    ]
    .into_iter()
    .filter(|(_, url, _)| !url.trim().is_empty())
    .map(|(name, url, index)| Sink {
        name: name.to_owned(),
        url: url.trim().trim_end_matches('/').to_owned(),
        index: index.clone(),
    })
    .collect()
}

/// Registers `sinks` with the store (so events are queued for them) and forgets the others.
pub async fn register(store: &StoreHandle, sinks: &[Sink]) -> Result<(), StoreError> {
    store.write_durable(Write::ExportSinks(sinks.iter().map(|s| s.name.clone()).collect())).await
}

/// The document of one event, as the original indexed it.
pub fn document(event: &ExportEvent) -> Value {
    json!({
        "job_name": event.job,
        "group": event.group,
        "job_instance": event.instance,
        "@timestamp": event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "return_code": event.return_code.unwrap_or(0),
        "machine": event.machine.as_deref().unwrap_or(""),
        "output": event.output.as_deref().map(collapse_carriage_returns).unwrap_or_default(),
        "msg_type": event.msg_type,
    })
}

/// The NDJSON body of a bulk request. Each document's id is derived from the sink's queue id, so
/// a batch resent after a lost answer overwrites instead of duplicating.
pub fn bulk_body(index: &str, events: &[ExportEvent]) -> String {
    let mut body = String::new();
    for event in events {
        let action = json!({"index": {
            "_index": format!("{index}-{}", event.at.format("%Y.%m.%d")),
            "_id": format!("{}-{}", event.instance, event.id),
        }});
        body.push_str(&action.to_string());
        body.push('\n');
        body.push_str(&document(event).to_string());
        body.push('\n');
    }
    body
}

/// What the cluster made of a bulk request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every document up to and including the one at this position is settled (indexed or
    /// rejected for good); the rest are to be sent again.
    Settled { upto: usize, rejected: Vec<String> },
    /// Nothing settled: try again later.
    Retry(String),
}

/// Reads a bulk answer: `status` and body.
fn outcome(status: u16, body: &str, sent: usize) -> Outcome {
    if status == 429 || status >= 500 {
        return Outcome::Retry(format!("HTTP {status}: {}", first_line(body)));
    }
    if !(200..300).contains(&status) {
        // The request as a whole is wrong (bad URL, no permission): retrying later may help once
        // someone fixes the cluster; skipping would lose everything.
        return Outcome::Retry(format!("HTTP {status}: {}", first_line(body)));
    }
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return Outcome::Retry(format!("HTTP {status} with a body that is not JSON"));
    };
    if answer.get("errors") != Some(&Value::Bool(true)) {
        return Outcome::Settled { upto: sent, rejected: Vec::new() };
    }
    let items = answer.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut rejected = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let result = item.get("index").or_else(|| item.get("create")).unwrap_or(item);
        let code = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        if code == 429 || code >= 500 || code == 0 {
            return Outcome::Settled { upto: i, rejected };
        }
        if code >= 300 {
            rejected.push(format!("{}: {}", code, result.get("error").unwrap_or(&Value::Null)));
        }
    }
    Outcome::Settled { upto: items.len().min(sent), rejected }
}

fn first_line(body: &str) -> &str {
    let line = body.lines().next().unwrap_or("");
    line.get(..200).unwrap_or(line)
}

/// Splits `user:password@` out of a URL.
fn credentials(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_owned(), None) };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode(userinfo);
            let url = if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            };
            (url, Some(format!("Basic {basic}")))
        }
        None => (url.to_owned(), None),
    }
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    auth: Option<&str>,
    body: String,
) -> Result<(u16, String), String> {
    let mut request = agent.post(url).header("Content-Type", "application/x-ndjson");
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let mut response = request.send(body).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// Sends what is queued for `sink` until cancelled.
pub async fn run(store: StoreHandle, sink: Sink, cancel: CancellationToken) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let (base, auth) = credentials(&sink.url);
    let url = format!("{base}/_bulk");
    info!(sink = sink.name, url = base, index = sink.index, "Exporting run events.");
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match store.export_pending(&sink.name, BATCH).await {
            Ok(Some(events)) if !events.is_empty() => {
                match send(&agent, &url, auth.clone(), &sink, &events).await {
                    Ok(Some(last_id)) => {
                        let delivered = Write::ExportDelivered { sink: sink.name.clone(), last_id };
                        if let Err(e) = store.write(delivered).await {
                            warn!(sink = sink.name, error = %e, "Cannot record the export's progress.");
                            return;
                        }
                        backoff = FIRST_BACKOFF;
                        continue;
                    }
                    Ok(None) => POLL,
                    Err(why) => {
                        warn!(sink = sink.name, url = base, error = why, retry_in = ?backoff, "Export failed; events stay queued.");
                        let wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        wait
                    }
                }
            }
            Ok(Some(_)) => POLL,
            Ok(None) => {
                warn!(sink = sink.name, "The sink is not registered in the store; export stopped.");
                return;
            }
            Err(StoreError::Closed) => return,
            Err(e) => {
                warn!(sink = sink.name, error = %e, "Cannot read the export queue.");
                MAX_BACKOFF
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends one batch; the id of the last event settled, if any.
async fn send(
    agent: &ureq::Agent,
    url: &str,
    auth: Option<String>,
    sink: &Sink,
    events: &[ExportEvent],
) -> Result<Option<i64>, String> {
    let body = bulk_body(&sink.index, events);
    let (agent, url) = (agent.clone(), url.to_owned());
    let (status, text) =
        tokio::task::spawn_blocking(move || post(&agent, &url, auth.as_deref(), body))
            .await
            .map_err(|e| e.to_string())??;
    match outcome(status, &text, events.len()) {
        Outcome::Retry(why) => Err(why),
        Outcome::Settled { upto, rejected } => {
            for why in &rejected {
                warn!(sink = sink.name, error = why, "The cluster rejected a document; skipped.");
            }
            debug!(sink = sink.name, sent = upto, "Exported.");
            match upto {
                0 => Err("the cluster asked to retry the first document".to_owned()),
                n => Ok(events.get(n - 1).map(|e| e.id)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_answers_settle_up_to_the_first_retryable_item() {
        let ok = r#"{"errors":false,"items":[{"index":{"status":201}},{"index":{"status":201}}]}"#;
        assert_eq!(outcome(200, ok, 2), Outcome::Settled { upto: 2, rejected: vec![] });
        let mixed = r#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":400,"error":"mapping"}},{"index":{"status":429}},{"index":{"status":201}}]}"#;
        let Outcome::Settled { upto, rejected } = outcome(200, mixed, 4) else { panic!() };
        assert_eq!(upto, 2);
        assert_eq!(rejected.len(), 1);
        assert!(matches!(outcome(503, "down", 4), Outcome::Retry(_)));
        assert!(matches!(outcome(403, "no", 4), Outcome::Retry(_)));
        assert!(matches!(outcome(200, "<html>", 4), Outcome::Retry(_)));
    }

    #[test]
    fn user_info_becomes_basic_auth() {
        assert_eq!(
            credentials("https://elastic:s3cret@es.example:9200/prefix"),
            (
                "https://es.example:9200/prefix".to_owned(),
                Some("Basic ZWxhc3RpYzpzM2NyZXQ=".into())
            )
        );
        assert_eq!(credentials("http://localhost:9200"), ("http://localhost:9200".into(), None));
    }
}
