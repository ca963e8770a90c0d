//! One endpoint per protocol: each turns its wire format into hub calls and hub deliveries into
//! its wire format. The hub never sees a wire format; a new protocol is one more module here
//! plus `Hub::open_session`.

pub mod echo;
pub mod hosted;
pub mod pipe;
pub mod raw;
pub mod socketio;
pub mod sockjs;
pub mod sse;
pub mod stomp;
pub mod streaming;
