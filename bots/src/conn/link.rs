//! What every protocol's connection shares: the [`Link`] trait each implements, the
//! [`Handler`] its reads report to, and what opening one takes and how it fails.

use std::net::{IpAddr, SocketAddr};

use crate::checker::Stream;
use crate::stats::ErrorKind;

/// What a bot does with what arrives.
pub trait Handler {
    /// A message on the bot's room or addressed to it; `body` is borrowed from the read buffer.
    fn on_message(&mut self, stream: Stream, id: Option<u64>, body: &[u8]);
    /// An event changing a message of the bot's room (it has an id in the room's sequence);
    /// `sender` is who made the change.
    fn on_event(&mut self, change: Change, id: Option<u64>, sender: Option<&str>);
    /// One of our sends was acknowledged (or refused as a protocol error: then `on_error`
    /// follows).
    fn on_ack(&mut self, of: Sent);
    /// The server refused a send for a reason the bots expect now and then (a DM to a bot that
    /// is not online, a change over the server's limits): counted, not a protocol failure.
    fn on_refused(&mut self, what: Refused);
    /// The join is in effect.
    fn on_joined(&mut self);
    /// Something went wrong that is not fatal by itself.
    fn on_error(&mut self, kind: ErrorKind, why: &str);
}

/// A change of a room message: what the bots send (edits, reactions) and what they see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new text.
    Edit,
    /// A deletion (bots do not delete, but others may).
    Delete,
    /// A reaction added or taken back.
    React,
}

impl Change {
    /// The first letter of the `ref` (raw) or `receipt` (STOMP) of a change of this kind.
    pub(super) fn tag(self) -> char {
        match self {
            Change::Edit => 'e',
            Change::Delete => 'x',
            Change::React => 'k',
        }
    }
}

/// What an acknowledgement or refusal answers, told by the tag its `ref` or receipt starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// A room message.
    Message,
    /// A direct message.
    Dm,
    /// A change.
    Change(Change),
}

impl Sent {
    /// From a `ref` or receipt id the bots wrote (`r12`, `d3`, `e4`, `k5`, or a bare number).
    pub(super) fn of_ref(reference: &str) -> Self {
        match reference.chars().next() {
            Some('e') => Sent::Change(Change::Edit),
            Some('x') => Sent::Change(Change::Delete),
            Some('k') => Sent::Change(Change::React),
            Some('d') => Sent::Dm,
            _ => Sent::Message,
        }
    }
}

/// A refusal the bots count rather than fail on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `no_such_user`: a DM to a bot that is not connected (bots are no accounts, so their DMs
    /// are live-only).
    Dm,
    /// An edit or reaction the server would not make (rate, window, no such message).
    Change(Change),
}

/// Where the server listens, and what other servers need said differently.
#[derive(Clone, Debug)]
pub struct Targets {
    /// HTTP / WebSocket address.
    pub http: SocketAddr,
    /// STOMP over TCP address; `None` when no group speaks STOMP over TCP.
    pub stomp_tcp: Option<SocketAddr>,
    /// The WebSocket path (and query) instead of the protocol's default (`/ws`, `/stomp`, `/`,
    /// Socket.IO's `/socket.io/?EIO=4&transport=websocket`).
    pub ws_path: Option<String>,
    /// STOMP `login` for every bot instead of its name (e.g. RabbitMQ's `guest`).
    pub stomp_login: Option<String>,
    /// STOMP `passcode` for every bot instead of its token.
    pub stomp_passcode: Option<String>,
    /// STOMP `host` header (RabbitMQ: the virtual host, `/`) instead of the server's address.
    pub stomp_host: Option<String>,
}

impl Targets {
    /// Just the addresses; every protocol detail at its default.
    pub fn new(http: SocketAddr, stomp_tcp: Option<SocketAddr>) -> Self {
        Self {
            http,
            stomp_tcp,
            ws_path: None,
            stomp_login: None,
            stomp_passcode: None,
            stomp_host: None,
        }
    }

    pub(super) fn path<'a>(&'a self, default: &'a str) -> &'a str {
        self.ws_path.as_deref().unwrap_or(default)
    }
}

/// How a connection proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A guest name.
    Guest,
    /// A bearer access token.
    Token(String),
}

/// Why opening failed.
#[derive(Debug)]
pub struct OpenError {
    /// How to count it.
    pub kind: ErrorKind,
    /// What happened, for the first few samples shown to the user.
    pub why: String,
}

impl OpenError {
    pub(super) fn connect(why: impl ToString) -> Self {
        Self {
            kind: ErrorKind::Connect,
            why: why.to_string(),
        }
    }
}

/// The connection ended.
#[derive(Debug)]
pub struct Closed {
    /// Why.
    pub why: String,
    /// The server said why first (a STOMP ERROR), already counted as an error.
    pub announced: bool,
    /// The server hung up over a refusal the bots expect (a STOMP ERROR closes the
    /// connection): the bot reconnects and resumes.
    pub refused: bool,
}

impl Closed {
    pub(super) fn new(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            announced: false,
            refused: false,
        }
    }
}

/// Everything opening a connection needs, whatever the protocol.
pub(super) struct Dial<'a> {
    pub(super) targets: &'a Targets,
    /// Local address to bind first.
    pub(super) source: Option<IpAddr>,
    /// A shrunk socket receive buffer (a slow consumer).
    pub(super) rcvbuf: Option<u32>,
    /// The bot's user name.
    pub(super) name: &'a str,
    pub(super) credential: &'a Credential,
}

/// Where a send goes.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Room(&'a str),
    User(&'a str),
}

/// A change as sent.
#[derive(Clone, Copy, Debug)]
pub enum ChangeSend<'a> {
    /// The new text.
    Edit(&'a str),
    /// An emoji added (`true`) or taken back.
    React(&'a str, bool),
}

/// What one protocol does on an open, authenticated connection. Each implementation opens
/// itself (an inherent `open`: what it needs differs, e.g. STOMP picks its transport).
pub(super) trait Link {
    /// Joins `room` (and subscribes to direct messages when `dms`), resuming after room
    /// message id `since`; [`Handler::on_joined`] follows once the server confirms.
    async fn join(&mut self, room: &str, dms: bool, since: Option<u64>) -> Result<(), Closed>;

    /// Sends a stamped `body` (no JSON or header escaping needed: validated at load); its
    /// acknowledgement comes as [`Handler::on_ack`].
    async fn send(&mut self, to: Target<'_>, body: &str, seq: u64) -> Result<(), Closed>;

    /// Changes message `target` of `room`: an edit to `body`, or a reaction `emoji` added
    /// (`on`) or taken back; `n` numbers it for its acknowledgement. Protocols without changes
    /// refuse (scenarios are validated so that this does not happen).
    async fn change(
        &mut self,
        room: &str,
        target: u64,
        what: ChangeSend<'_>,
        n: u64,
    ) -> Result<(), Closed> {
        let _ = (room, target, what, n);
        Err(Closed::new("this protocol cannot edit or react"))
    }

    /// Waits for the next read and hands everything in it to `h`. Must be cancel-safe: the
    /// only await is the read itself, and what it returned is handled before returning.
    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed>;

    /// Says goodbye politely; the caller bounds it in time.
    async fn close(&mut self);
}
