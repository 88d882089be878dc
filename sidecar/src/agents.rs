//! The agent side of the sidecar: the WebSocket server agents connect to, and the [`Registry`]
//! of tokens and live sessions that it shares with the run engine.

mod registry;

pub use registry::{Registry, RunMinion};
