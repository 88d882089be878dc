//! Salt's MessagePack values: decoding them permissively, and showing them as JSON.
//!
//! Salt packs `datetime` as ext type 78 (`%Y%m%dT%H:%M:%S.%f`) and its constants (`NOT_SET`) as
//! ext type 79 (`msgpack([name, value])`); old encoders leave non-UTF-8 bytes in str. Only this
//! module knows that; callers get `rmpv::Value`, or JSON shaped like `salt-run state.event` shows.

use chrono::NaiveDateTime;
use rmpv::Value;

/// Salt's ext type for `datetime.datetime` / `datetime.date`.
pub const EXT_DATETIME: i8 = 78;
/// Salt's ext type for `salt.defaults._Constant`.
pub const EXT_CONSTANT: i8 = 79;

/// Decodes one packed value. Invalid UTF-8 in a str is kept as bytes inside `Value::String`.
pub(crate) fn decode_value(mut bytes: &[u8]) -> Result<Value, rmpv::decode::Error> {
    rmpv::decode::read_value(&mut bytes)
}

/// The datetime of an ext-78 value (naive, as Salt packs it).
pub fn ext_datetime(value: &Value) -> Option<NaiveDateTime> {
    match value {
        Value::Ext(EXT_DATETIME, payload) => {
            let text = std::str::from_utf8(payload).ok()?;
            NaiveDateTime::parse_from_str(text, "%Y%m%dT%H:%M:%S%.f").ok()
        }
        _ => None,
    }
}

/// A value as JSON: str with invalid UTF-8 and bin become text with replacement characters,
/// datetimes an ISO string, Salt constants `{"__salt_constant__": name, "value": v}`, other ext
/// types `{"__ext__": type, "hex": ...}`. Map keys that are not strings are shown as JSON text.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            i.as_i64().map(J::from).or_else(|| i.as_u64().map(J::from)).unwrap_or(J::Null)
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(EXT_DATETIME, _) => match ext_datetime(value) {
            Some(t) => J::String(t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
            None => J::Null,
        },
        Value::Ext(EXT_CONSTANT, payload) => match decode_value(payload) {
            Ok(Value::Array(pair)) if pair.len() == 2 => serde_json::json!({
                "__salt_constant__": to_json(&pair[0]),
                "value": to_json(&pair[1]),
            }),
            _ => serde_json::json!({ "__ext__": EXT_CONSTANT, "hex": hex(payload) }),
        },
        Value::Ext(kind, payload) => serde_json::json!({ "__ext__": kind, "hex": hex(payload) }),
    }
}

/// A JSON value as MessagePack, for arguments and event data typed on a command line.
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Nil),
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        J::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (Value::from(k.as_str()), from_json(v))).collect())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
