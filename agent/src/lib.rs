//! The agent's library: every module of `saltpeter-agent`, public so its tests and benchmark
//! can drive the parts directly. `main.rs` only parses arguments and dispatches.
//!
//! Modules: `env` (the `SP_*` contract), `detach`, `daemon`, `run` (one run from lock to
//! result), `child` (process group, user, signals), `spool` and `outbox` (undelivered output
//! and the per-run window), `conn` (the WebSocket session), `endpoint` (TLS, handshake), `resolve` (DNS without NSS),
//! `lock`, `rundir`, `control` (`status`/`kill`), `users`, `machine`, and `sys` (every
//! `unsafe` call).

pub mod child;
pub mod conn;
pub mod control;
pub mod daemon;
pub mod detach;
pub mod dispatch;
pub mod endpoint;
pub mod env;
pub mod lock;
pub mod machine;
pub mod outbox;
pub mod resolve;
pub mod run;
pub mod rundir;
pub mod spool;
#[allow(unsafe_code)]
pub mod sys;
pub mod users;
