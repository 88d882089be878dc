//! Jobs and settings exactly as written: every key of the original (and of ours) optional and
//! loosely typed, so that validation can report every problem of a job in one pass.
//! Never leaves `config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

/// Keeps an explicit `key:` with no value as `Some(Null)`, apart from an absent key.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

macro_rules! raw_struct {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        pub(super) struct $name {
            $(#[serde(default, deserialize_with = "present")] pub(super) $field: Option<Value>,)*
            /// Keys we do not know: warned about, with a "did you mean".
            #[serde(flatten)]
            pub(super) unknown: BTreeMap<String, Value>,
        }
        impl $name {
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

raw_struct!(
    /// One job: the original's keys, the keys it ignored that we give a meaning, and ours.
    RawJob {
        sec, min, hour, dom, mon, dow, year,
        command, targets, target_type, number_of_targets, batch_size,
        timeout, hard_timeout, soft_timeout, utc,
        user, cwd, env, allow_overlap, lockfile,
        use_wrapper, wrapper_path, wrapper_loglevel, wrapper_logdir, saltpeter_server_host,
        group, timezone, enabled, description,
        batch_wait, max_failures, catch_up, catch_up_window, dispatch, lead_time,
        history_days, max_runs,
    }
);

raw_struct!(
    /// `saltpeter_config`: the original's global settings, plus `timezone`.
    RawSettings {
        logdir, debug, api_ws, api_ws_port, api_ws_bind_addr, machines_ws_port,
        machines_ws_bind_addr, default_saltpeter_server_host, default_wrapper_path,
        default_wrapper_loglevel, default_wrapper_logdir, elasticsearch, opensearch,
        elasticsearch_index, opensearch_index, timezone,
    }
);

raw_struct!(
    /// `saltpeter_maintenance`.
    RawMaintenance { global, machines }
);

/// The closest known key, if it is close enough to be a likely typo.
pub(super) fn did_you_mean<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}
