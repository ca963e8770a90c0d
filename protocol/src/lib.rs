//! Sans-IO WebSocket (RFC 6455) with permessage-deflate (RFC 7692).
//!
//! Nothing here touches a socket, a clock or a runtime: callers hand in bytes and get events and
//! bytes back, which makes every rule unit-testable, fuzzable and benchmarkable on its own.
//!
//! - [`handshake`] validates a client's opening request and builds the `101` answer.
//! - [`frame`] parses and encodes frame headers; [`mask`] unmasks payloads.
//! - [`Connection`] is the server-side state machine: it decodes frames, reassembles and inflates
//!   messages, validates UTF-8, answers pings and closes, and encodes what the server sends.
#![deny(missing_docs)]

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Connection, ConnectionClosed, Event, Limits, Message};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode};
pub use handshake::{Accepted, HandshakeConfig, HandshakeError, OriginPolicy};
