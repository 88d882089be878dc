//! The master's request port: one clear-channel request on a fresh ZeroMQ REQ socket.
//!
//! A fresh socket per request, each step under a timeout: the `zeromq` crate's REQ socket never
//! recovers once its master restarted, and a REQ socket that timed out cannot send again. The
//! envelope is `{"enc": "clear", "load": {...}, "version": 3}`; replies are packed without the
//! bin type, so bytes arrive as str with arbitrary contents, and errors may be bare strings.

use std::time::Duration;

use rmpv::Value;
use zeromq::{Socket, SocketRecv, SocketSend};

use super::value::decode_value;

/// A request to the master failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "no answer from the master's request port {endpoint} within {waited:?} (is salt-master running?)"
    )]
    Timeout { endpoint: String, waited: Duration },
    #[error("talk to the master's request port {endpoint}")]
    Transport {
        endpoint: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error("the master's reply is not MessagePack")]
    BadReply(#[source] rmpv::decode::Error),
}

/// Sends `load` in a clear envelope and returns the decoded reply.
pub(crate) async fn clear_request(
    endpoint: &str,
    load: Value,
    timeout: Duration,
) -> Result<Value, RequestError> {
    let envelope = Value::Map(vec![
        ("enc".into(), "clear".into()),
        ("load".into(), load),
        ("version".into(), 3.into()),
    ]);
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut bytes, &envelope);
    let transport = |source| RequestError::Transport { endpoint: endpoint.to_owned(), source };
    let timed_out = || RequestError::Timeout { endpoint: endpoint.to_owned(), waited: timeout };

    let exchange = async {
        let mut options = zeromq::SocketOptions::default();
        options.connect_timeout(timeout);
        let mut socket = zeromq::ReqSocket::with_options(options);
        socket.connect(endpoint).await.map_err(transport)?;
        socket.send(zeromq::ZmqMessage::from(bytes)).await.map_err(transport)?;
        let reply = socket.recv().await.map_err(transport)?;
        Ok::<_, RequestError>(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange).await.map_err(|_| timed_out())??;
    let frame = reply.into_vec().into_iter().next().unwrap_or_default();
    decode_value(&frame).map_err(RequestError::BadReply)
}

/// Looks a key up in a decoded map.
pub(crate) fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| match k {
                Value::String(s) => s.as_bytes() == key.as_bytes(),
                Value::Binary(b) => b == key.as_bytes(),
                _ => false,
            })
            .map(|(_, v)| v),
        _ => None,
    }
}

/// A str or bin value as text (lossy).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// A list of str values (others skipped).
pub(crate) fn text_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}
