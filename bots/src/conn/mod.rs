//! One bot connection in any of the protocols: [`Conn`] opens the one a group names and
//! dispatches to it; each protocol is a module of its own behind the small [`Link`] trait.
//!
//! Reads hand what arrived to a [`Handler`] in place, so a received body is checked without
//! being copied.

mod link;
mod polling;
mod raw;
mod socketio;
mod sockjs;
mod sse;
mod stomp;
mod transport;
mod ws_broadcast;

use std::net::IpAddr;
use std::time::Duration;

use crate::scenario::Protocol;

pub use self::transport::tcp_connect;

pub use self::link::{
    Change, ChangeSend, Closed, Credential, Handler, OpenError, Refused, Sent, Targets,
};
use self::link::{Dial, Link, Target};
use self::raw::Raw;
use self::socketio::{EngineTransport, SocketIo};
use self::sockjs::Receiving;
use self::sse::Sse;
use self::stomp::Stomp;
use self::ws_broadcast::WsBroadcast;

/// Receive buffer of a slow consumer's socket: small, so that the server's queue fills soon.
const SLOW_RCVBUF: u32 = 4096;

/// An open, authenticated connection in one of the protocols.
///
/// Static dispatch over an enum rather than `Box<dyn Link>`: `Link`'s async methods (generic
/// over the handler) are not dyn-compatible, and making them so would box a future on every
/// `read`, an allocation per message on the hot path. The protocols are a closed set known
/// here, and concrete futures keep their `Send` visible to `tokio::spawn` without bounds on the
/// trait.
///
/// STOMP stays inline (its TCP stream, decoder and buffers, as in the single enum this replaced):
/// no pointer to chase on the busiest path, and a `Conn` is no bigger than before (256 bytes on
/// x86-64, against 264).
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    /// Raw JSON over WebSocket.
    Raw(Raw),
    /// STOMP 1.2 over WebSocket, TCP or SockJS.
    Stomp(Stomp),
    /// A plain WebSocket broadcast server.
    WsBroadcast(WsBroadcast),
    /// Socket.IO over Engine.IO's WebSocket or long-polling transport.
    SocketIo(SocketIo),
    /// The SSE room feed, posting over REST.
    Sse(Sse),
}

/// Runs `$call` with `$link` bound to whichever implementation `$conn` holds.
macro_rules! each_link {
    ($conn:expr, $link:ident => $call:expr) => {
        match $conn {
            Conn::Raw($link) => $call,
            Conn::Stomp($link) => $call,
            Conn::WsBroadcast($link) => $call,
            Conn::SocketIo($link) => $call,
            Conn::Sse($link) => $call,
        }
    };
}

impl Conn {
    /// Connects and authenticates (for STOMP: CONNECT answered by CONNECTED).
    pub async fn open(
        protocol: Protocol,
        targets: &Targets,
        source: Option<IpAddr>,
        name: &str,
        credential: &Credential,
        slow: bool,
    ) -> Result<Self, OpenError> {
        let dial = Dial {
            targets,
            source,
            rcvbuf: slow.then_some(SLOW_RCVBUF),
            name,
            credential,
        };
        Ok(match protocol {
            Protocol::Raw => Conn::Raw(Raw::open(&dial).await?),
            Protocol::StompWs => Conn::Stomp(Stomp::open_ws(&dial).await?),
            Protocol::StompTcp => Conn::Stomp(Stomp::open_tcp(&dial).await?),
            Protocol::StompXhrStreaming => {
                Conn::Stomp(Stomp::open_sockjs(&dial, Receiving::Streaming).await?)
            }
            Protocol::StompXhrPolling => {
                Conn::Stomp(Stomp::open_sockjs(&dial, Receiving::Polling).await?)
            }
            Protocol::WsBroadcast => Conn::WsBroadcast(WsBroadcast::open(&dial).await?),
            Protocol::SocketIo => {
                Conn::SocketIo(SocketIo::open(&dial, EngineTransport::WebSocket).await?)
            }
            Protocol::SocketIoPolling => {
                Conn::SocketIo(SocketIo::open(&dial, EngineTransport::Polling).await?)
            }
            Protocol::Sse => Conn::Sse(Sse::open(&dial).await?),
        })
    }

    /// Joins `room` (and subscribes to direct messages when `dms`); [`Handler::on_joined`]
    /// follows once the server confirms.
    /// `since`: resume after this room message id (the server replays what came after it).
    pub async fn join(&mut self, room: &str, dms: bool, since: Option<u64>) -> Result<(), Closed> {
        each_link!(self, link => link.join(room, dms, since).await)
    }

    /// Sends a stamped `body` to `room`; its acknowledgement comes as [`Handler::on_ack`].
    pub async fn send_room(&mut self, room: &str, body: &str, seq: u64) -> Result<(), Closed> {
        each_link!(self, link => link.send(Target::Room(room), body, seq).await)
    }

    /// Sends a direct message to user `to`.
    pub async fn send_dm(&mut self, to: &str, body: &str, seq: u64) -> Result<(), Closed> {
        each_link!(self, link => link.send(Target::User(to), body, seq).await)
    }

    /// Edits or reacts to message `target` of `room`; the acknowledgement comes as
    /// [`Handler::on_ack`] with the change's kind, a refusal as [`Handler::on_refused`].
    pub async fn change(
        &mut self,
        room: &str,
        target: u64,
        what: ChangeSend<'_>,
        n: u64,
    ) -> Result<(), Closed> {
        each_link!(self, link => link.change(room, target, what, n).await)
    }

    /// Waits for the next read and hands everything in it to `h`.
    ///
    /// Cancel-safe: the only await is the read itself; what it returned is handled before this
    /// returns.
    pub async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        each_link!(self, link => link.read(h).await)
    }

    /// Says goodbye politely (raw close frame, STOMP DISCONNECT), bounded in time.
    pub async fn close(mut self) {
        let polite = async { each_link!(&mut self, link => link.close().await) };
        let _ = tokio::time::timeout(Duration::from_secs(1), polite).await;
    }
}

#[cfg(test)]
mod tests {
    //! What the protocols' unit tests share.

    use super::*;
    use crate::checker::Stream;
    use crate::stats::ErrorKind;

    /// A [`Handler`] that remembers everything it was told.
    #[derive(Default)]
    pub(super) struct Seen {
        pub(super) messages: Vec<(Stream, Vec<u8>)>,
        pub(super) events: Vec<(Change, Option<u64>, Option<String>)>,
        pub(super) acks: usize,
        pub(super) change_acks: Vec<Change>,
        pub(super) refused: Vec<Refused>,
        pub(super) joined: bool,
        pub(super) errors: Vec<(ErrorKind, String)>,
    }

    impl Handler for Seen {
        fn on_message(&mut self, stream: Stream, _id: Option<u64>, body: &[u8]) {
            self.messages.push((stream, body.to_vec()));
        }
        fn on_event(&mut self, change: Change, id: Option<u64>, sender: Option<&str>) {
            self.events.push((change, id, sender.map(str::to_owned)));
        }
        fn on_ack(&mut self, of: Sent) {
            match of {
                Sent::Message | Sent::Dm => self.acks += 1,
                Sent::Change(c) => self.change_acks.push(c),
            }
        }
        fn on_refused(&mut self, what: Refused) {
            self.refused.push(what);
        }
        fn on_joined(&mut self) {
            self.joined = true;
        }
        fn on_error(&mut self, kind: ErrorKind, why: &str) {
            self.errors.push((kind, why.to_owned()));
        }
    }
}
