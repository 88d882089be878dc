//! Jobs and settings exactly as written: every key of the original (and of ours) optional and
//! loosely typed (a YAML value), so that validation can report every problem of a job in one
//! pass. Filled straight from the parsed YAML map (`from_mapping`).
//! Never leaves `config`.

use std::collections::BTreeMap;

use serde_yaml::Value;

macro_rules! raw_struct {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(super) struct $name {
            /// `Some(Null)` for a key written without a value, `None` for an absent key.
            $(pub(super) $field: Option<Value>,)*
            /// Keys we do not know: warned about, with a "did you mean".
            pub(super) unknown: BTreeMap<String, Value>,
        }
        impl $name {
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Moves the values out of a YAML map: faster than `from_value` with `flatten`,
            /// which buffers every value (this runs 100,000 times for a large config).
            pub(super) fn from_mapping(map: serde_yaml::Mapping) -> Self {
                let mut raw = Self::default();
                for (key, value) in map {
                    let Some(name) = key.as_str() else {
                        raw.unknown.insert(super::job::show(&key), value);
                        continue;
                    };
                    match name {
                        $(stringify!($field) => raw.$field = Some(value),)*
                        _ => {
                            raw.unknown.insert(name.to_owned(), value);
                        }
                    }
                }
                raw
            }
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
        history_days, max_runs,
        default_dispatch, default_lead_time, minion_dispatch,
        api_tokens, api_cors_origins,
        pillar, pillar_minion, pillar_refresh,
        tls_cert, tls_key, tls_ca_file,
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
