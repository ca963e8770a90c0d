//! Sans-IO STOMP (1.0, 1.1, 1.2): bytes in, frames out; frames in, bytes out.
//!
//! No sockets, no runtime, no clock: the server drives it. [`codec`] decodes client frames
//! incrementally under hard limits and encodes server frames once into `Bytes`, with MESSAGE
//! frames split into a shared part and a small per-subscriber prefix for fan-out.
#![deny(missing_docs)]

pub mod broker;
pub mod budget;
pub mod codec;
pub mod destination;
pub mod error;
pub mod frame;
pub mod rate;
pub mod session;

pub use codec::{Decoder, Limits, SharedMessage, Wire};
pub use error::StompError;
pub use frame::{Command, Frame, Version};
