//! The Salt master client: the event bus (unix socket + MessagePack), firing events, and the
//! request port (ZeroMQ + MessagePack, clear channel with the master's root key).
//!
//! This module knows every Salt wire format, and nothing outside it does. Its public surface is
//! narrow so that it could become a crate of its own without edits.
//!
//! - [`MasterConfig::load`] finds the master: sockets, request port, key file, nodegroups.
//! - [`EventBus`] reads the master's event publisher and fans typed [`Event`]s out to
//!   [`Subscription`]s; it reconnects by itself and tells slow consumers what they missed.
//! - [`SaltClient`] publishes jobs ([`SaltClient::publish`], [`SaltClient::run_job`]), calls
//!   runners and wheels, and fires events ([`SaltClient::fire_event`]).
//!
//! The wire formats are described in `docs/salt-wire-protocol.md` of the design notes; the
//! parts that no library handles (frame prefixes, lazy event decoding) live in `frame` and
//! `msgpack`.

mod bus;
mod client;
mod config;
mod event;
mod fire;
mod frame;
mod ipc;
mod job;
mod msgpack;
mod request;
mod target;
mod text;
mod value;

#[cfg(test)]
mod tests;

pub use bus::{BusItem, DEFAULT_CAPACITY, EventBus, Link, Subscription};
pub use client::{
    CachedReturn, ClientError, Publish, Published, REQUEST_TIMEOUT, SaltClient, WheelReturn,
};
pub use config::{ConfigError, DEFAULT_MASTER_CONFIG, IpcEndpoint, MasterConfig, glob_match};
pub use event::{
    Auth, Event, EventError, EventKind, Jid, JobNew, JobReturn, MinionId, Packed, Presence,
    RunReturn,
};
pub use fire::{EventFirer, FireError};
pub use frame::{BadEvent, BadFrame, Desync, FrameDecoder, Framing, encode_frame};
pub use ipc::IpcError;
pub use job::{JobRun, JobUpdate};
pub use request::RequestError;
pub use target::{
    Nodegroup, NodegroupError, Target, TargetType, UnknownTargetType, expand_compound,
    expand_nodegroup,
};
pub use text::Text;
pub use value::{EXT_CONSTANT, EXT_DATETIME, ext_datetime, from_json, to_json};
