//! Saltpeter, the sidecar: a distributed cron that lives on the Salt master.
//!
//! `main.rs` only parses arguments and sets up tracing; everything else lives in this library so
//! that tests and benchmarks can drive it. See `docs/architecture.md` for the code map.
#![forbid(unsafe_code)]

pub mod agents;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod http;
pub mod joblog;
pub mod maintenance;
pub mod metrics;
pub mod pillar;
pub mod retention;
pub mod runs;
pub mod salt;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod tls;
