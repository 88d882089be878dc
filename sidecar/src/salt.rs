//! The Salt master client: the event bus (unix socket + MessagePack), firing events, and the
//! request port (ZeroMQ + MessagePack, clear channel with the master's root key).
//!
//! This module knows every Salt wire format, and nothing outside it does. Its public surface is
//! narrow so that it could become a crate of its own without edits.
