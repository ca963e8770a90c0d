//! The broker's vocabulary: what callers hand it (publishes, limits), what it reports back
//! (events, errors, deliveries), and the records it keeps per session and queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::subscriptions::Subscriptions;
use crate::codec::SharedMessage;

/// Headers the broker sets on every MESSAGE; publishers cannot supply them.
pub(super) const BROKER_HEADERS: [&str; 8] = [
    "destination",
    "message-id",
    "timestamp",
    "sender",
    "sender-guest",
    "subscription",
    "ack",
    "content-length",
];

/// Identifies one client connection.
pub type SessionId = u64;

/// How a subscription acknowledges messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered means done.
    Auto,
    /// An ACK acknowledges this message and every earlier one of the subscription.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

impl AckMode {
    /// Parses a SUBSCRIBE's `ack` header (absent: `auto`).
    pub fn parse(header: Option<&str>) -> Option<Self> {
        match header {
            None | Some("auto") => Some(Self::Auto),
            Some("client") => Some(Self::Client),
            Some("client-individual") => Some(Self::ClientIndividual),
            Some(_) => None,
        }
    }
}

/// Bounds on what the broker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerLimits {
    /// Messages a queue holds while no consumer can take them (default 10,000).
    pub max_queue_depth: usize,
    /// Unacknowledged messages per client-ack subscription (default 1,000). Queues stop handing
    /// such a consumer more; a topic subscriber past it is evicted as a slow consumer.
    pub max_unacked: usize,
    /// Subscriptions per session (default 1,000).
    pub max_subscriptions: usize,
    /// Body bytes one queue holds while no consumer takes them (default 4 MiB).
    pub max_queue_bytes: usize,
    /// Body bytes all queues together hold (default 64 MiB).
    pub max_queued_bytes: usize,
    /// Queues one user's sends or subscriptions may bring into existence (default 32).
    pub max_queues_per_user: usize,
    /// A queued message nobody took within this many ms is dropped (default 10 minutes).
    pub queue_ttl_ms: u64,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        Self {
            max_queue_depth: 10_000,
            max_unacked: 1_000,
            max_subscriptions: 1_000,
            max_queue_bytes: 4 << 20,
            max_queued_bytes: 64 << 20,
            max_queues_per_user: 32,
            queue_ttl_ms: 10 * 60 * 1000,
        }
    }
}

/// A message for one subscription of one session.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The receiving session.
    pub session: SessionId,
    /// The subscription's id, as the client chose it.
    pub subscription: Arc<str>,
    /// The 1.2 `ack` value, for client ack modes.
    pub ack: Option<u64>,
    /// The shared, encode-once message.
    pub message: Arc<SharedMessage>,
}

/// Makes the bytes that acknowledge a stored message to its sender (a RECEIPT, a JSON ack),
/// given the message id; run once the message is durable.
#[derive(Clone)]
pub struct Receipt(pub Arc<dyn Fn(u64) -> Bytes + Send + Sync>);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

/// Something the broker's caller must carry out.
#[derive(Clone, Debug)]
pub enum BrokerEvent {
    /// Write this message to its session.
    Deliver(Delivery),
    /// The session broke a flow-control limit: close it with an ERROR saying why.
    Evict {
        /// The offending session.
        session: SessionId,
        /// Human-readable reason.
        reason: &'static str,
    },
    /// A room message to persist; once durable, `receipt` (if any) goes to `session`.
    Store {
        /// The sender's session, if a session sent it.
        session: Option<SessionId>,
        /// The room (topic name).
        room: String,
        /// Its per-room id.
        id: u64,
        /// The message as delivered.
        message: Arc<SharedMessage>,
        /// What to send the sender once the message is durable.
        receipt: Option<Receipt>,
    },
    /// Forwarding mode (a cluster): a message for a topic or user destination, to be carried to
    /// every node (this one included) and delivered there with [`Broker::deliver_forwarded`].
    /// The broker delivered nothing itself and gave a room message no id: the caller numbers
    /// it (as it stores it) and acknowledges it with `receipt`.
    Forward {
        /// The sender's session, if a session sent it.
        session: Option<SessionId>,
        /// The message as it must be delivered on every node.
        message: Forwarded,
        /// What to send the sender once the message is durable (room messages).
        receipt: Option<Receipt>,
    },
    /// Forwarding mode: the first subscription on this node to this fan-out key began, so
    /// messages for it must now reach this node.
    Watch {
        /// The fan-out key (`/topic/general`, `/user/alice/queue/dm`).
        key: String,
    },
    /// Forwarding mode: the last subscription on this node to this key ended.
    Unwatch {
        /// The fan-out key.
        key: String,
    },
    /// The user's first subscription to this topic began: they are present.
    Joined {
        /// The topic, e.g. `/topic/general`.
        topic: String,
        /// Who joined.
        user: Arc<str>,
        /// They joined as a guest (no account).
        guest: bool,
    },
    /// The user's last subscription to this topic ended.
    Left {
        /// The topic.
        topic: String,
        /// Who left.
        user: Arc<str>,
        /// They were a guest.
        guest: bool,
    },
}

/// Why the broker refused an operation; the session answers with an ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The session is not connected.
    #[error("unknown session")]
    UnknownSession,
    /// A SUBSCRIBE reused an id the session already has.
    #[error("subscription id {0:?} is already in use")]
    DuplicateSubscription(String),
    /// UNSUBSCRIBE of an id the session does not have.
    #[error("no subscription with id {0:?}")]
    UnknownSubscription(String),
    /// Too many subscriptions on one session.
    #[error("more than {0} subscriptions")]
    TooManySubscriptions(usize),
    /// ACK/NACK of something not awaiting acknowledgement.
    #[error("no unacknowledged message {0:?}")]
    UnknownAck(String),
    /// The queue holds its limit of messages or bytes.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// All queues together hold their limit of bytes.
    #[error("queues are full: the server holds its limit of queued bytes, retry later")]
    QueuesFull,
    /// The user's sends and subscriptions brought too many queues into existence.
    #[error("more than {0} queues for one user")]
    TooManyQueues(usize),
    /// The server's memory budget is spent: new work is refused until buffers drain.
    #[error("{}", crate::budget::BUSY_MESSAGE)]
    Busy,
    /// SUBSCRIBE to `/user/<name>/queue/...` (subscribe to `/user/queue/...` instead), or SEND to
    /// `/user/queue/...` (name the user).
    #[error("{0}")]
    WrongUserDestination(&'static str),
    /// A room message while storage is failing (see [`Broker::set_storage_failing`]).
    ///
    /// [`Broker::set_storage_failing`]: super::Broker::set_storage_failing
    #[error("storage unavailable: room messages are refused until storage works again")]
    StorageUnavailable,
}

/// What identifies a message in an ACK or NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckRef {
    /// 1.2: the MESSAGE's `ack` header.
    AckId(u64),
    /// 1.0/1.1: the MESSAGE's `message-id`, with the `subscription` in 1.1.
    MessageId {
        /// The message id.
        message_id: u64,
        /// The subscription, when given.
        subscription: Option<String>,
    },
}

pub(super) struct SessionEntry {
    pub(super) user: Arc<str>,
    /// A guest (no account): the broker marks its messages and presence so nobody mistakes it
    /// for the account of the same name.
    pub(super) guest: bool,
    pub(super) subscriptions: Subscriptions<Subscription>,
    /// Boxed, and only once the session has a subscription that acknowledges: most never do,
    /// and every connected session has an entry (8 bytes instead of 40).
    pub(super) acks: Option<Box<Acks>>,
}

/// What a session that acknowledges messages keeps.
#[derive(Default)]
pub(super) struct Acks {
    /// Deliveries awaiting ACK/NACK, oldest first.
    pub(super) unacked: VecDeque<Unacked>,
    /// The last `ack` id handed out.
    pub(super) next_ack: u64,
}

/// A fan-out key's subscriptions, and how many of them acknowledge messages (those are
/// tracked per session, so only a broker held alone delivers to them).
#[derive(Default)]
pub(super) struct Subscribers {
    pub(super) list: Vec<(SessionId, Arc<str>)>,
    pub(super) acking: usize,
}

pub(super) struct Subscription {
    pub(super) route: Route,
    pub(super) ack: AckMode,
    pub(super) unacked: usize,
}

/// Where a subscription is registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Route {
    /// Fan-out key: `/topic/x` or `/user/<user>/queue/x`; a subscription shares the key's one
    /// copy with the fan-out table.
    FanOut(Arc<str>),
    /// Queue name.
    Queue(String),
}

pub(super) struct Unacked {
    pub(super) ack_id: u64,
    pub(super) message_id: u64,
    pub(super) subscription: Arc<str>,
    /// Set for queue messages, which are redelivered on NACK or disconnect.
    pub(super) queue: Option<String>,
    pub(super) message: Arc<SharedMessage>,
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) consumers: Vec<(SessionId, Arc<str>)>,
    /// Round-robin position in `consumers`.
    pub(super) next: usize,
    pub(super) held: VecDeque<(u64, Arc<SharedMessage>)>,
    /// Body bytes of `held`.
    pub(super) bytes: usize,
    /// The user whose send or subscription created the queue; it counts against their quota.
    pub(super) owner: Option<Arc<str>>,
}

/// A published message: headers common to every delivery, and the body.
#[derive(Clone, Debug, Default)]
pub struct Publish {
    /// Extra headers (`content-type`, custom ones) passed through to subscribers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Server time in ms since the epoch, for the `timestamp` header.
    pub now_ms: u64,
    /// For a room message: what acknowledges it once durable (then not acknowledged at once).
    pub receipt: Option<Receipt>,
    /// Numbers and stores a message that is not a room's (a direct message) in this stream of
    /// its own, as a room's would be: per-stream consecutive ids, a `Store` event.
    pub stream: Option<String>,
    /// Also delivers it to the subscribers of this fan-out key (a direct message to the
    /// sender's own sessions), with the same id.
    pub copy_to: Option<String>,
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message id (per room for rooms).
    pub id: u64,
    /// It is a room message: it will be stored, and its receipt was handed on to wait for that.
    pub stored: bool,
}

/// A message on its way between nodes: what every node needs to deliver it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The fan-out key subscribers are registered under (`/topic/general`,
    /// `/user/alice/queue/dm`).
    pub key: String,
    /// The `destination` header subscribers see.
    pub shown: String,
    /// For a room message, the room: such messages are numbered and stored.
    pub room: Option<String>,
    /// The room message's id (0 until numbered; unused for other destinations).
    pub id: u64,
    /// Who sent it.
    pub sender: String,
    /// The sender is a guest.
    pub guest: bool,
    /// Server time in ms since the epoch (`timestamp`).
    pub now_ms: u64,
    /// The sender's own headers (the broker's are added on delivery).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Delivered to this fan-out key's subscribers too ([`Publish::copy_to`]).
    pub also: Option<String>,
}

impl Forwarded {
    /// The message as subscribers get it (a room message keeps its id).
    pub fn into_message(self) -> Arc<SharedMessage> {
        Arc::new(self.into_shared())
    }

    /// [`Forwarded::into_message`] before it is shared (and charged).
    pub(super) fn into_shared(self) -> SharedMessage {
        build_message(
            self.shown,
            self.id,
            self.now_ms,
            &self.sender,
            self.guest,
            self.headers,
            self.body,
        )
    }
}

/// A message as subscribers get it: the broker's headers first, then the sender's own.
pub(super) fn build_message(
    shown: String,
    id: u64,
    now_ms: u64,
    sender: &str,
    guest: bool,
    extra: Vec<(String, String)>,
    body: Bytes,
) -> SharedMessage {
    let mut headers = Vec::with_capacity(extra.len() + 5);
    headers.push(("destination".to_owned(), shown));
    headers.push(("message-id".to_owned(), id.to_string()));
    headers.push(("timestamp".to_owned(), now_ms.to_string()));
    headers.push(("sender".to_owned(), sender.to_owned()));
    if guest {
        headers.push(("sender-guest".to_owned(), "true".to_owned()));
    }
    // The broker's own headers come first and first wins, but a caller's copies of them are
    // dropped anyway: nobody may present a forged sender to a lenient client.
    headers.extend(
        extra
            .into_iter()
            .filter(|(name, _)| !BROKER_HEADERS.contains(&name.as_str())),
    );
    SharedMessage::new(headers, body)
}

/// Room topics are stored and numbered per room; topics with a dot (`<room>.typing`,
/// `<room>.presence`) are side channels and are not.
pub fn is_room(topic: &str) -> bool {
    !topic.contains('.')
}

/// Records a client-ack delivery and returns its ack id.
pub(super) fn track(
    entry: &mut SessionEntry,
    sub_id: &Arc<str>,
    message_id: u64,
    queue: Option<&str>,
    message: &Arc<SharedMessage>,
) -> u64 {
    let acks = entry.acks.get_or_insert_default();
    acks.next_ack += 1;
    let ack_id = acks.next_ack;
    if let Some(sub) = entry.subscriptions.get_mut(sub_id) {
        sub.unacked += 1;
    }
    acks.unacked.push_back(Unacked {
        ack_id,
        message_id,
        subscription: sub_id.clone(),
        queue: queue.map(str::to_owned),
        message: message.clone(),
    });
    ack_id
}

/// `v` sorted, each value once.
pub(super) fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Messages one room's turn published, oldest first: one list shared by all its subscribers.
pub type Run = Arc<[Arc<SharedMessage>]>;

/// A room's turn: whoever holds it numbers the room's next message and hands its deliveries on
/// before anyone else numbers one, so every subscriber sees the room in id order.
///
/// The turn keeps what it published and hands it on in one walk of the room's subscribers
/// ([`Turn::deliver`]): each subscriber gets the turn's messages as one run, with no per-delivery
/// event to sort back into runs. The subscribers cannot change during the turn (subscribing
/// takes the broker alone).
pub struct Turn<'a> {
    pub(super) room: &'a str,
    pub(super) last: MutexGuard<'a, u64>,
    /// The room's subscribers, if it has any.
    pub(super) subscribers: Option<&'a Subscribers>,
    /// Published in this turn, not yet handed to the subscribers.
    pub(super) published: Vec<Arc<SharedMessage>>,
}

impl Turn<'_> {
    /// The room this turn is of.
    pub fn room(&self) -> &str {
        self.room
    }

    /// Messages published in this turn and not yet handed on ([`Turn::deliver`]).
    pub fn waiting(&self) -> usize {
        self.published.len()
    }

    /// Hands the messages published since the last call to the room's subscribers, oldest
    /// first: `to` runs once per subscription with the session, the subscription's id and the
    /// messages, one shared list for all. Every subscription gets all of them (a shared publish
    /// never picks).
    pub fn deliver(&mut self, to: &mut dyn FnMut(SessionId, &Arc<str>, &Run)) {
        if self.published.is_empty() {
            return;
        }
        let run: Run = std::mem::take(&mut self.published).into();
        if let Some(subscribers) = self.subscribers {
            for (session, subscription) in &subscribers.list {
                to(*session, subscription, &run);
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Numbered and stored but never delivered would be a gap every subscriber keeps.
        debug_assert!(
            self.published.is_empty() || std::thread::panicking(),
            "a turn ended with messages it did not deliver"
        );
    }
}

/// What [`Broker::publish_in_turn`] did.
#[derive(Debug)]
pub enum Shared {
    /// Numbered, handed to storage and to the subscribers.
    Published(Published),
    /// Refused; nothing happened.
    Refused(BrokerError),
    /// Not done: this publish needs the broker to itself ([`Broker::publish`]).
    Exclusive(Publish),
}

/// Hands `message` to every subscriber of a key none of whose subscribers acknowledges: nothing
/// to track, so no session needs looking up.
pub(super) fn deliver_to_all(
    subs: &Subscribers,
    message: &Arc<SharedMessage>,
    events: &mut dyn FnMut(BrokerEvent),
) {
    for (session, sub_id) in &subs.list {
        events(BrokerEvent::Deliver(Delivery {
            session: *session,
            subscription: sub_id.clone(),
            ack: None,
            message: message.clone(),
        }));
    }
}

/// A room's last id, locked. A panic while it was held left a number that was given: go on.
pub(super) fn lock(last: &Mutex<u64>) -> MutexGuard<'_, u64> {
    last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A room's last id, reached through the broker held alone (no lock taken).
pub(super) fn last_mut(last: &mut Mutex<u64>) -> &mut u64 {
    last.get_mut()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
