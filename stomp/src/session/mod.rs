//! One client's STOMP session: CONNECT, version and heart-beat negotiation, receipts, errors,
//! transactions, and translating frames into broker operations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::is_room;
use crate::broker::{AckMode, AckRef, Broker, BrokerError, BrokerEvent, Publish, SessionId};
use crate::budget::{Charge, MemoryBudget};
use crate::codec::{self, SharedMessage};
use crate::destination::Destination;
use crate::frame::{Command, Frame, Version};
use crate::rate::TokenBucket;

mod scope;
mod send;
mod transaction;

pub use scope::Scope;
pub use send::{room_of_send, SharedSend};

/// Headers a SEND may not pass through to subscribers: the broker sets them, or they only
/// concern the sender's own frame.
const RESERVED_HEADERS: [&str; 9] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "timestamp",
    "sender",
    "sender-guest",
    "receipt",
    "transaction",
];
/// Open transactions per session.
const MAX_TRANSACTIONS: usize = 16;
/// Frames buffered in one transaction.
const MAX_TRANSACTION_FRAMES: usize = 1_000;
/// What a buffered frame costs besides its headers and body.
const FRAME_OVERHEAD: usize = 128;

/// Who a session acts for, established by the server before CONNECT is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name shown as `sender` and `user-name`.
    pub name: Arc<str>,
    /// A guest (no account); its messages and presence are marked.
    pub guest: bool,
    /// What its credential allows ([`Scope::All`] but for some personal access tokens).
    pub scope: Scope,
}

impl Identity {
    /// `name`, a guest or not, with a full grant.
    pub fn new(name: impl Into<Arc<str>>, guest: bool) -> Self {
        Self {
            name: name.into(),
            guest,
            scope: Scope::All,
        }
    }
}

/// Decides what a session may do; the server's permission rules. Called under the broker's lock,
/// so it must be cheap and never block.
pub trait Access: Send + Sync {
    /// May `who` SUBSCRIBE to `destination`? `Err` says why not.
    fn subscribe(&self, who: &Identity, destination: &Destination) -> Result<(), String>;
    /// May `who` SEND to `destination`? `Err` says why not. A check only: what a SEND brings
    /// into existence (a new room) is made by [`Access::accept`], once nothing refuses it.
    fn send(&self, who: &Identity, destination: &Destination) -> Result<(), String>;
    /// May `who` SEND to all of `destinations` together (a COMMIT)? By default each alone;
    /// the server counts the rooms they would create against its quota together.
    fn send_all(&self, who: &Identity, destinations: &[Destination]) -> Result<(), String> {
        destinations.iter().try_for_each(|d| self.send(who, d))
    }
    /// A SEND to `destination` passed every check and is published next (at COMMIT for a
    /// transaction): the server creates what it needs, such as a new room. `Err` refuses it.
    fn accept(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        let _ = (who, destination);
        Ok(())
    }
    /// Shapes an allowed SEND from `who` just before it is published: the server may address
    /// it elsewhere or number and store it ([`Publish::stream`], [`Publish::copy_to`]), as for
    /// direct messages. `Err` refuses it. By default it goes as it is.
    fn route(
        &self,
        who: &Identity,
        destination: &mut Destination,
        publish: &mut Publish,
    ) -> Result<(), String> {
        let _ = (who, destination, publish);
        Ok(())
    }
}

/// Everyone may do everything: the default when the server sets no rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Access for AllowAll {
    fn subscribe(&self, _: &Identity, _: &Destination) -> Result<(), String> {
        Ok(())
    }

    fn send(&self, _: &Identity, _: &Destination) -> Result<(), String> {
        Ok(())
    }
}

/// The permission rules a session follows.
#[derive(Clone)]
pub struct AccessPolicy(pub Arc<dyn Access>);

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessPolicy")
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self(Arc::new(AllowAll))
    }
}

/// What a server offers every session.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The CONNECTED `server` header, e.g. `parley/0.1.0`.
    pub server: String,
    /// Server heart-beat (can send every, wants to receive every), in ms; 0 = not at all.
    pub heart_beat: (u64, u64),
    /// Largest body of a room (chat) message; queues keep the frame limit.
    pub max_room_body: usize,
    /// SEND frames per second a session may make (bursts of twice that); 0 = unlimited.
    pub rate_limit: u32,
    /// Who may subscribe and send where.
    pub access: AccessPolicy,
    /// Bytes of frames one session may buffer in its open transactions together.
    pub max_transaction_bytes: usize,
    /// Guests may use `/queue/` destinations (off by default: a guest name proves nothing, so
    /// any guest could read any queue).
    pub guest_queues: bool,
    /// The server's memory budget: transaction frames are charged to it.
    pub budget: Arc<MemoryBudget>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            server: "parley".to_owned(),
            heart_beat: (10_000, 10_000),
            max_room_body: 64 * 1024,
            rate_limit: 1_000,
            access: AccessPolicy::default(),
            max_transaction_bytes: 1 << 20,
            guest_queues: false,
            budget: MemoryBudget::unlimited(),
        }
    }
}

/// Negotiated heart-beating: how often the server must send, and how long the client may stay
/// silent before it is considered dead (already including tolerance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartBeat {
    /// Send something at least this often.
    pub send_every: Option<Duration>,
    /// Disconnect a client silent for longer than this.
    pub expect_within: Option<Duration>,
}

/// After a frame: keep going, or write the replies and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection.
    Continue,
    /// Flush the replies, then close (after DISCONNECT or an ERROR).
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    Connected,
    Closed,
}

/// A client's session. Frames from the client go into [`Session::handle`]; replies (CONNECTED,
/// RECEIPT, ERROR) come out as encoded bytes; broker effects as events.
pub struct Session {
    id: SessionId,
    config: Arc<SessionConfig>,
    state: State,
    version: Version,
    /// Set by [`Session::authenticate`] before CONNECT; CONNECT without it is refused.
    identity: Option<Identity>,
    /// The negotiated heart-beat as [`HeartBeat`]'s two intervals in ms, 0 for none (8 bytes
    /// in every session instead of 32; an interval past 49 days is 49 days).
    heart_beat: (u32, u32),
    /// Open transactions, boxed while there are any: most sessions never open one.
    transactions: Option<Box<Transactions>>,
    /// The current frame's RECEIPT waits for storage instead of going out now.
    receipt_deferred: bool,
    /// Rate limit on SEND.
    sends: TokenBucket,
}

/// A session's open transactions and what their buffered frames hold against the memory
/// budget.
#[derive(Default)]
struct Transactions {
    open: HashMap<String, Vec<Frame>>,
    charge: Option<Charge>,
}

/// An error answered with an ERROR frame, then a close.
struct Refusal(String);

impl From<BrokerError> for Refusal {
    fn from(e: BrokerError) -> Self {
        Self(e.to_string())
    }
}

impl Session {
    /// A session for connection `id`.
    pub fn new(id: SessionId, config: Arc<SessionConfig>) -> Self {
        Self {
            id,
            config,
            state: State::AwaitingConnect,
            version: Version::V1_0,
            identity: None,
            heart_beat: (0, 0),
            transactions: None,
            receipt_deferred: false,
            sends: TokenBucket::default(),
        }
    }

    /// The negotiated version (1.0 until CONNECT).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Sets who this session acts for. The server checks the CONNECT frame's credentials and
    /// calls this before handing the frame to [`Session::handle`].
    pub fn authenticate(&mut self, identity: Identity) {
        self.identity = Some(identity);
    }

    /// The user name, once authenticated.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().map(|i| &i.name)
    }

    /// Who this session acts for, once authenticated.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The negotiated heart-beat, once connected.
    pub fn heart_beat(&self) -> HeartBeat {
        let every = |ms: u32| (ms != 0).then(|| Duration::from_millis(ms.into()));
        HeartBeat {
            send_every: every(self.heart_beat.0),
            expect_within: every(self.heart_beat.1),
        }
    }

    /// True once CONNECTED was sent and until the session closes.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Handles one client frame; encoded replies are appended to `replies`.
    pub fn handle(
        &mut self,
        frame: Frame,
        broker: &mut Broker,
        now_ms: u64,
        replies: &mut Vec<Bytes>,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Flow {
        let receipt = frame.get("receipt").map(str::to_owned);
        let result = match self.state {
            State::Closed => return Flow::Close,
            State::AwaitingConnect => match frame.command {
                Command::Connect | Command::Stomp => self.connect(&frame, broker, replies),
                _ => Err(Refusal("the first frame must be CONNECT or STOMP".into())),
            },
            State::Connected => self.connected_frame(frame, broker, now_ms, events),
        };
        match result {
            Ok(flow) => {
                let deferred = std::mem::take(&mut self.receipt_deferred);
                if let Some(id) =
                    receipt.filter(|_| self.state != State::AwaitingConnect && !deferred)
                {
                    replies.push(codec::encode(
                        &Frame::new(Command::Receipt).header("receipt-id", id),
                        self.version,
                    ));
                }
                if flow == Flow::Close {
                    self.close(broker, events);
                }
                flow
            }
            Err(Refusal(message)) => {
                replies.push(self.error_frame(&message, receipt));
                self.close(broker, events);
                Flow::Close
            }
        }
    }

    /// An ERROR frame for a problem found outside [`Session::handle`] (bad bytes, slow
    /// consumer, shutdown). The caller then closes the connection and calls [`Session::close`].
    pub fn error_frame(&self, message: &str, receipt: Option<String>) -> Bytes {
        let mut frame = Frame::new(Command::Error).header("message", first_line(message));
        if let Some(id) = receipt {
            frame = frame.header("receipt-id", id);
        }
        let frame = frame
            .header("content-type", "text/plain")
            .body(Bytes::from(format!("{message}\n")));
        codec::encode(&frame, self.version)
    }

    /// Ends the session in the broker (idempotent): open transactions are aborted, unacked queue
    /// messages go to other consumers.
    pub fn close(&mut self, broker: &mut Broker, events: &mut dyn FnMut(BrokerEvent)) {
        if self.state == State::Connected {
            broker.disconnect(self.id, events);
        }
        self.transactions = None;
        self.state = State::Closed;
    }

    /// The bytes of one delivery for this session: the per-subscriber prefix and the shared part.
    pub fn message_parts(
        &self,
        subscription: &str,
        ack: Option<u64>,
        message: &SharedMessage,
    ) -> [Bytes; 2] {
        [
            self.message_prefix(subscription, ack),
            message.shared(self.version).clone(),
        ]
    }

    /// The part of a MESSAGE for `subscription` that is this subscriber's own (see
    /// [`Session::message_parts`]).
    pub fn message_prefix(&self, subscription: &str, ack: Option<u64>) -> Bytes {
        // 1.0/1.1 clients acknowledge by message-id; only 1.2 has the `ack` header.
        let ack = ack
            .filter(|_| self.version == Version::V1_2)
            .map(|a| a.to_string());
        SharedMessage::prefix(subscription, ack.as_deref(), self.version)
    }

    fn connect(
        &mut self,
        frame: &Frame,
        broker: &mut Broker,
        replies: &mut Vec<Bytes>,
    ) -> Result<Flow, Refusal> {
        let version = Version::negotiate(frame.get("accept-version"))
            .ok_or_else(|| Refusal("supported protocol versions are 1.0 1.1 1.2".into()))?;
        // STOMP is a 1.1+ command; answer 1.0-only clients' STOMP frames in 1.0 anyway.
        let (cx, cy) = match frame.get("heart-beat") {
            None => (0, 0),
            Some(v) => parse_heart_beat(v)
                .ok_or_else(|| Refusal(format!("invalid heart-beat header {v:?}")))?,
        };
        let (sx, sy) = self.config.heart_beat;
        let every = |a: u64, b: u64| if a != 0 && b != 0 { a.max(b) } else { 0 };
        let ms = |ms: u64| u32::try_from(ms).unwrap_or(u32::MAX);
        self.heart_beat = (
            ms(every(sx, cy)),
            // Tolerance: twice the interval, so one late beat is not a death sentence.
            ms(every(cx, sy).saturating_mul(2)),
        );
        let Some(identity) = self.identity.clone() else {
            return Err(Refusal("authentication required".into()));
        };
        let user = identity.name.clone();
        self.version = version;
        broker.connect_as(self.id, user.clone(), identity.guest);
        self.state = State::Connected;
        let connected = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header("server", self.config.server.clone())
            .header("session", self.id.to_string())
            .header("heart-beat", format!("{sx},{sy}"))
            .header("user-name", user.to_string());
        replies.push(codec::encode(&connected, version));
        Ok(Flow::Continue)
    }

    fn connected_frame(
        &mut self,
        frame: Frame,
        broker: &mut Broker,
        now_ms: u64,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<Flow, Refusal> {
        match frame.command {
            Command::Connect | Command::Stomp => Err(Refusal("already connected".into())),
            Command::Send | Command::Ack | Command::Nack => {
                if let Some(tx) = frame.get("transaction") {
                    let tx = tx.to_owned();
                    return self.buffer(tx, frame, now_ms).map(|()| Flow::Continue);
                }
                if frame.command == Command::Send {
                    self.send(&frame, broker, now_ms, events)?;
                } else {
                    self.acknowledge(&frame, broker, events)?;
                }
                Ok(Flow::Continue)
            }
            Command::Subscribe => {
                let destination = Destination::parse(required(&frame, "destination")?)
                    .map_err(|e| Refusal(e.to_string()))?;
                self.allowed(|access, who| access.subscribe(who, &destination))?;
                self.queue_allowed(&destination)?;
                // 1.0 makes `id` optional; the destination then names the subscription.
                let id = match (frame.get("id"), self.version) {
                    (Some(id), _) => id,
                    (None, Version::V1_0) => required(&frame, "destination")?,
                    (None, _) => return Err(Refusal("SUBSCRIBE requires an id header".into())),
                };
                let ack = AckMode::parse(frame.get("ack")).ok_or_else(|| {
                    Refusal("ack must be auto, client or client-individual".into())
                })?;
                if frame.get("since").is_some() {
                    // Checked here so a bad catch-up request is an ERROR like any other.
                    catch_up_request(&frame, self.version)?;
                    if ack != AckMode::Auto {
                        return Err(Refusal("since requires ack:auto".into()));
                    }
                }
                broker.subscribe(self.id, id, &destination, ack, events)?;
                Ok(Flow::Continue)
            }
            Command::Unsubscribe => {
                let id = match (frame.get("id"), self.version) {
                    (Some(id), _) => id,
                    (None, Version::V1_0) => required(&frame, "destination")?,
                    (None, _) => return Err(Refusal("UNSUBSCRIBE requires an id header".into())),
                };
                broker.unsubscribe(self.id, id, events)?;
                Ok(Flow::Continue)
            }
            Command::Begin => self.begin(&frame).map(|()| Flow::Continue),
            Command::Commit => self
                .commit(&frame, broker, now_ms, events)
                .map(|()| Flow::Continue),
            Command::Abort => {
                let tx = required(&frame, "transaction")?;
                self.end_transaction(tx)?;
                Ok(Flow::Continue)
            }
            Command::Disconnect => Ok(Flow::Close),
            Command::Connected | Command::Message | Command::Receipt | Command::Error => Err(
                Refusal(format!("{} is a server frame", frame.command.as_str())),
            ),
        }
    }

    /// Carries out an ACK or NACK.
    fn acknowledge(
        &mut self,
        frame: &Frame,
        broker: &mut Broker,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), Refusal> {
        let which = self.ack_ref(frame)?;
        if frame.command == Command::Ack {
            broker.ack(self.id, &which, events)?;
        } else {
            broker.nack(self.id, &which, events)?;
        }
        Ok(())
    }

    /// Asks the server's rules; a refusal becomes `forbidden: <why>`.
    fn allowed(
        &self,
        check: impl FnOnce(&dyn Access, &Identity) -> Result<(), String>,
    ) -> Result<(), Refusal> {
        let who = self
            .identity
            .as_ref()
            .ok_or_else(|| Refusal("authentication required".into()))?;
        check(&*self.config.access.0, who).map_err(|why| Refusal(format!("forbidden: {why}")))
    }

    /// Queues are for accounts unless the server lets guests use them.
    fn queue_allowed(&self, destination: &Destination) -> Result<(), Refusal> {
        let guest = self.identity.as_ref().is_none_or(|i| i.guest);
        if matches!(destination, Destination::Queue(_)) && guest && !self.config.guest_queues {
            return Err(Refusal(
                "forbidden: queues are for signed-in accounts, not guests".into(),
            ));
        }
        Ok(())
    }

    fn ack_ref(&self, frame: &Frame) -> Result<AckRef, Refusal> {
        let number = |name: &str| -> Result<u64, Refusal> {
            let v = required(frame, name)?;
            v.parse()
                .map_err(|_| Refusal(format!("no unacknowledged message {v:?}")))
        };
        Ok(match self.version {
            Version::V1_2 => AckRef::AckId(number("id")?),
            Version::V1_1 => AckRef::MessageId {
                message_id: number("message-id")?,
                subscription: Some(required(frame, "subscription")?.to_owned()),
            },
            Version::V1_0 => AckRef::MessageId {
                message_id: number("message-id")?,
                subscription: None,
            },
        })
    }
}

/// A SUBSCRIBE asking to catch up: the room, the subscription id, and the last message id the
/// client has (Parley's `since` header). `Ok(None)` when the frame asks for no catch-up.
pub fn catch_up(frame: &Frame, version: Version) -> Option<(String, String, u64)> {
    catch_up_request(frame, version).ok().flatten()
}

fn catch_up_request(
    frame: &Frame,
    version: Version,
) -> Result<Option<(String, String, u64)>, Refusal> {
    let (Command::Subscribe, Some(since)) = (frame.command, frame.get("since")) else {
        return Ok(None);
    };
    let since = since
        .parse()
        .map_err(|_| Refusal(format!("since must be a message id, not {since:?}")))?;
    let destination = required(frame, "destination")?;
    let room = match Destination::parse(destination) {
        Ok(Destination::Topic(room)) if is_room(&room) => room,
        _ => return Err(Refusal("since applies to rooms: /topic/<room>".into())),
    };
    let id = match (frame.get("id"), version) {
        (Some(id), _) => id,
        _ => destination,
    };
    Ok(Some((room, id.to_owned(), since)))
}

fn required<'f>(frame: &'f Frame, name: &str) -> Result<&'f str, Refusal> {
    frame.get(name).ok_or_else(|| {
        Refusal(format!(
            "{} requires a {name} header",
            frame.command.as_str()
        ))
    })
}

fn parse_heart_beat(v: &str) -> Option<(u64, u64)> {
    let (x, y) = v.split_once(',')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
