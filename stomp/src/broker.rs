//! The broker core: destinations, subscriptions, acknowledgements, queues. No sockets, no clock.
//!
//! Sessions are named by [`SessionId`]. Every operation reports what must happen elsewhere as
//! [`BrokerEvent`]s through a callback, in order, so a caller holding the broker under one lock
//! hands every subscriber a topic's messages in the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::SharedMessage;
use crate::destination::Destination;

/// Headers the broker sets on every MESSAGE; publishers cannot supply them.
const BROKER_HEADERS: [&str; 8] = [
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
}

impl Default for BrokerLimits {
    fn default() -> Self {
        Self {
            max_queue_depth: 10_000,
            max_unacked: 1_000,
            max_subscriptions: 1_000,
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
    /// The queue is full.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// SUBSCRIBE to `/user/<name>/queue/...` (subscribe to `/user/queue/...` instead), or SEND to
    /// `/user/queue/...` (name the user).
    #[error("{0}")]
    WrongUserDestination(&'static str),
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

struct SessionEntry {
    user: Arc<str>,
    /// A guest (no account): the broker marks its messages and presence so nobody mistakes it
    /// for the account of the same name.
    guest: bool,
    subscriptions: HashMap<Arc<str>, Subscription>,
    /// Deliveries awaiting ACK/NACK, oldest first.
    unacked: VecDeque<Unacked>,
    next_ack: u64,
}

struct Subscription {
    route: Route,
    ack: AckMode,
    unacked: usize,
}

/// Where a subscription is registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Route {
    /// Fan-out key: `/topic/x` or `/user/<user>/queue/x`.
    FanOut(String),
    /// Queue name.
    Queue(String),
}

struct Unacked {
    ack_id: u64,
    message_id: u64,
    subscription: Arc<str>,
    /// Set for queue messages, which are redelivered on NACK or disconnect.
    queue: Option<String>,
    message: Arc<SharedMessage>,
}

#[derive(Default)]
struct Queue {
    consumers: Vec<(SessionId, Arc<str>)>,
    /// Round-robin position in `consumers`.
    next: usize,
    held: VecDeque<(u64, Arc<SharedMessage>)>,
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
}

impl Forwarded {
    /// The message as subscribers get it (a room message keeps its id).
    pub fn into_message(self) -> Arc<SharedMessage> {
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
fn build_message(
    shown: String,
    id: u64,
    now_ms: u64,
    sender: &str,
    guest: bool,
    extra: Vec<(String, String)>,
    body: Bytes,
) -> Arc<SharedMessage> {
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
    Arc::new(SharedMessage::new(headers, body))
}

/// Room topics are stored and numbered per room; topics with a dot (`<room>.typing`,
/// `<room>.presence`) are side channels and are not.
pub fn is_room(topic: &str) -> bool {
    !topic.contains('.')
}

/// Destinations, subscriptions and unacknowledged messages of every session.
#[derive(Default)]
pub struct Broker {
    limits: BrokerLimits,
    sessions: HashMap<SessionId, SessionEntry>,
    fan_out: HashMap<String, Vec<(SessionId, Arc<str>)>>,
    /// Per topic, each present user's number of subscriptions (several tabs are one member).
    present: HashMap<String, HashMap<Arc<str>, usize>>,
    /// Last message id of each room.
    room_ids: HashMap<String, u64>,
    queues: HashMap<String, Queue>,
    next_message_id: u64,
    /// Cluster mode: topic and user messages are forwarded, not delivered here.
    forwarding: bool,
}

impl Broker {
    /// An empty broker.
    pub fn new(limits: BrokerLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Cluster mode: from now on messages to topics and user destinations come out as
    /// [`BrokerEvent::Forward`] and are delivered by [`Broker::deliver_forwarded`] once they
    /// come back from the bus; `/queue/` destinations stay on this node.
    pub fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
    }

    /// Delivers a forwarded message to this node's subscribers of its key. A room message's
    /// id becomes the room's last id here (the caller delivers each room's messages in order).
    pub fn deliver_forwarded(&mut self, message: Forwarded, events: &mut dyn FnMut(BrokerEvent)) {
        let id = match &message.room {
            Some(room) => {
                let last = self.room_ids.entry(room.clone()).or_default();
                *last = (*last).max(message.id);
                message.id
            }
            None => {
                self.next_message_id += 1;
                self.next_message_id
            }
        };
        let shared = build_message(
            message.shown,
            id,
            message.now_ms,
            &message.sender,
            message.guest,
            message.headers,
            message.body,
        );
        self.fan_out_to(&message.key, id, &shared, events);
    }

    /// Registers a connected session of account `user`.
    pub fn connect(&mut self, session: SessionId, user: Arc<str>) {
        self.connect_as(session, user, false);
    }

    /// Registers a connected session of `user`, a guest or an account.
    pub fn connect_as(&mut self, session: SessionId, user: Arc<str>, guest: bool) {
        let entry = SessionEntry {
            user,
            guest,
            subscriptions: HashMap::new(),
            unacked: VecDeque::new(),
            next_ack: 0,
        };
        self.sessions.insert(session, entry);
    }

    /// Removes a session: its subscriptions end and its unacknowledged queue messages go to
    /// other consumers.
    pub fn disconnect(&mut self, session: SessionId, events: &mut dyn FnMut(BrokerEvent)) {
        // Unroute every subscription before redelivering anything, so nothing is handed back to
        // another subscription of the session that is leaving.
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        let requeue: Vec<_> = entry
            .unacked
            .into_iter()
            .filter_map(|u| u.queue.map(|q| (q, u.message_id, u.message)))
            .collect();
        let mut queues = Vec::new();
        for (id, sub) in &entry.subscriptions {
            self.unroute(session, &entry.user, entry.guest, id, &sub.route, events);
            if let Route::Queue(name) = &sub.route {
                queues.push(name.clone());
            }
        }
        self.requeue(requeue, None, events);
        for name in dedup(queues) {
            self.forget_idle_queue(&name);
        }
    }

    /// Adds a subscription; a queue hands it held messages at once.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        id: &str,
        destination: &Destination,
        ack: AckMode,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), BrokerError> {
        let max = self.limits.max_subscriptions;
        let entry = self
            .sessions
            .get_mut(&session)
            .ok_or(BrokerError::UnknownSession)?;
        if entry.subscriptions.contains_key(id) {
            return Err(BrokerError::DuplicateSubscription(id.to_owned()));
        }
        if entry.subscriptions.len() >= max {
            return Err(BrokerError::TooManySubscriptions(max));
        }
        let route = match destination {
            Destination::Topic(_) => Route::FanOut(destination.to_string()),
            Destination::OwnUserQueue(queue) => {
                Route::FanOut(format!("/user/{}/queue/{queue}", entry.user))
            }
            Destination::Queue(name) => Route::Queue(name.clone()),
            Destination::UserQueue { .. } => {
                return Err(BrokerError::WrongUserDestination(
                    "subscribe to /user/queue/NAME to receive your own messages",
                ))
            }
        };
        let id: Arc<str> = id.into();
        entry.subscriptions.insert(
            id.clone(),
            Subscription {
                route: route.clone(),
                ack,
                unacked: 0,
            },
        );
        match route {
            Route::FanOut(key) => {
                if matches!(destination, Destination::Topic(_)) {
                    let (user, guest) = (entry.user.clone(), entry.guest);
                    let count = self
                        .present
                        .entry(key.clone())
                        .or_default()
                        .entry(user.clone())
                        .or_default();
                    *count += 1;
                    if *count == 1 {
                        events(BrokerEvent::Joined {
                            topic: key.clone(),
                            user,
                            guest,
                        });
                    }
                }
                let subscribers = self.fan_out.entry(key.clone()).or_default();
                if subscribers.is_empty() && self.forwarding {
                    events(BrokerEvent::Watch { key });
                }
                subscribers.push((session, id));
            }
            Route::Queue(name) => {
                self.queues
                    .entry(name.clone())
                    .or_default()
                    .consumers
                    .push((session, id));
                self.pump(&name, events);
            }
        }
        Ok(())
    }

    /// Ends a subscription; its unacknowledged queue messages go to other consumers.
    pub fn unsubscribe(
        &mut self,
        session: SessionId,
        id: &str,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), BrokerError> {
        let entry = self
            .sessions
            .get_mut(&session)
            .ok_or(BrokerError::UnknownSession)?;
        let (id, sub) = entry
            .subscriptions
            .remove_entry(id)
            .ok_or_else(|| BrokerError::UnknownSubscription(id.to_owned()))?;
        let (user, guest) = (entry.user.clone(), entry.guest);
        let mut requeue = Vec::new();
        entry.unacked.retain(|u| {
            let mine = u.subscription == id;
            if mine {
                if let Some(q) = &u.queue {
                    requeue.push((q.clone(), u.message_id, u.message.clone()));
                }
            }
            !mine
        });
        self.unroute(session, &user, guest, &id, &sub.route, events);
        self.requeue(requeue, None, events);
        if let Route::Queue(name) = &sub.route {
            self.forget_idle_queue(name);
        }
        Ok(())
    }

    /// Removes one subscription from the fan-out table or its queue's consumers.
    fn unroute(
        &mut self,
        session: SessionId,
        user: &Arc<str>,
        guest: bool,
        id: &Arc<str>,
        route: &Route,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let is_this = |(s, sid): &(SessionId, Arc<str>)| *s == session && sid == id;
        match route {
            Route::FanOut(key) => {
                if let Some(subs) = self.fan_out.get_mut(key) {
                    subs.retain(|s| !is_this(s));
                    if subs.is_empty() {
                        self.fan_out.remove(key);
                        if self.forwarding {
                            events(BrokerEvent::Unwatch { key: key.clone() });
                        }
                    }
                }
                if let Some(users) = self.present.get_mut(key) {
                    if let Some(count) = users.get_mut(user) {
                        *count -= 1;
                        if *count == 0 {
                            users.remove(user);
                            events(BrokerEvent::Left {
                                topic: key.clone(),
                                user: user.clone(),
                                guest,
                            });
                        }
                    }
                    if users.is_empty() {
                        self.present.remove(key);
                    }
                }
            }
            Route::Queue(name) => {
                if let Some(q) = self.queues.get_mut(name) {
                    q.consumers.retain(|s| !is_this(s));
                }
            }
        }
    }

    /// Ends every subscription of `user`'s sessions to `/topic/<room>` and its side channels
    /// (`/topic/<room>.*`), e.g. when they lose access to it. Returns the ended subscriptions.
    pub fn revoke_room(
        &mut self,
        user: &str,
        room: &str,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Vec<(SessionId, Arc<str>)> {
        self.revoke_room_where(room, &|name, _| name == user, events)
    }

    /// Ends the subscriptions to `/topic/<room>` and `/topic/<room>.*` of every session whose
    /// `(user, guest)` matches `revoke` (e.g. everyone who is not a member of a room that just
    /// became private). Returns the ended subscriptions.
    pub fn revoke_room_where(
        &mut self,
        room: &str,
        revoke: &dyn Fn(&str, bool) -> bool,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Vec<(SessionId, Arc<str>)> {
        let topic = format!("/topic/{room}");
        let side = format!("/topic/{room}.");
        let ended: Vec<(SessionId, Arc<str>)> = self
            .sessions
            .iter()
            .filter(|(_, e)| revoke(&e.user, e.guest))
            .flat_map(|(&session, e)| {
                e.subscriptions
                    .iter()
                    .filter(|(_, sub)| {
                        matches!(&sub.route, Route::FanOut(k) if *k == topic || k.starts_with(&side))
                    })
                    .map(move |(id, _)| (session, id.clone()))
            })
            .collect();
        for (session, id) in &ended {
            let _ = self.unsubscribe(*session, id, events);
        }
        ended
    }

    /// The sessions of `user` that are guests (`guest`) or accounts.
    pub fn sessions_of(&self, user: &str, guest: bool) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, e)| &*e.user == user && e.guest == guest)
            .map(|(&id, _)| id)
            .collect()
    }

    /// True if `session` has a subscription with this id.
    pub fn has_subscription(&self, session: SessionId, id: &str) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|e| e.subscriptions.contains_key(id))
    }

    /// The users subscribed to a topic, sorted.
    pub fn members(&self, topic: &Destination) -> Vec<Arc<str>> {
        let mut users: Vec<Arc<str>> = self
            .present
            .get(&topic.to_string())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        users.sort_unstable();
        users
    }

    /// Publishes a message from `from` to `destination`.
    pub fn publish(
        &mut self,
        from: SessionId,
        destination: &Destination,
        publish: Publish,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<Published, BrokerError> {
        let entry = self
            .sessions
            .get(&from)
            .ok_or(BrokerError::UnknownSession)?;
        let (sender, guest) = (entry.user.clone(), entry.guest);
        self.publish_from(Some(from), sender, guest, destination, publish, events)
    }

    /// Publishes on behalf of `sender` without a session: messages the server itself generates,
    /// such as presence announcements.
    pub fn publish_as(
        &mut self,
        sender: Arc<str>,
        destination: &Destination,
        publish: Publish,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<Published, BrokerError> {
        self.publish_from(None, sender, false, destination, publish, events)
    }

    /// Continues a room's numbering (e.g. from storage after a restart).
    pub fn seed_room(&mut self, room: &str, last_id: u64) {
        let id = self.room_ids.entry(room.to_owned()).or_default();
        *id = (*id).max(last_id);
    }

    /// The last id given to a message of `room` (0 if none).
    pub fn room_last_id(&self, room: &str) -> u64 {
        self.room_ids.get(room).copied().unwrap_or(0)
    }

    fn publish_from(
        &mut self,
        session: Option<SessionId>,
        sender: Arc<str>,
        guest: bool,
        destination: &Destination,
        publish: Publish,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<Published, BrokerError> {
        let (route, shown) = match destination {
            Destination::Topic(_) => (
                Route::FanOut(destination.to_string()),
                destination.to_string(),
            ),
            Destination::Queue(name) => (Route::Queue(name.clone()), destination.to_string()),
            Destination::UserQueue { queue, .. } => (
                Route::FanOut(destination.to_string()),
                format!("/user/queue/{queue}"),
            ),
            Destination::OwnUserQueue(_) => {
                return Err(BrokerError::WrongUserDestination(
                    "send to /user/USER/queue/NAME to reach a user",
                ))
            }
        };
        if let Route::Queue(name) = &route {
            if self
                .queues
                .get(name)
                .is_some_and(|q| q.held.len() >= self.limits.max_queue_depth)
            {
                return Err(BrokerError::QueueFull(name.clone()));
            }
        }
        let room = match destination {
            Destination::Topic(name) if is_room(name) => Some(name.clone()),
            _ => None,
        };
        if let (true, Route::FanOut(key)) = (self.forwarding, &route) {
            let stored = room.is_some();
            events(BrokerEvent::Forward {
                session,
                message: Forwarded {
                    key: key.clone(),
                    shown,
                    room,
                    id: 0,
                    sender: sender.to_string(),
                    guest,
                    now_ms: publish.now_ms,
                    headers: publish.headers,
                    body: publish.body,
                },
                receipt: publish.receipt,
            });
            return Ok(Published { id: 0, stored });
        }
        let id = match &room {
            // Rooms number their messages themselves: consecutive, so a gap is visible.
            Some(room) => {
                let last = self.room_ids.entry(room.clone()).or_default();
                *last += 1;
                *last
            }
            None => {
                self.next_message_id += 1;
                self.next_message_id
            }
        };
        let message = build_message(
            shown,
            id,
            publish.now_ms,
            &sender,
            guest,
            publish.headers,
            publish.body,
        );
        let stored = room.is_some();
        if let Some(room) = room {
            events(BrokerEvent::Store {
                session,
                room,
                id,
                message: message.clone(),
                receipt: publish.receipt,
            });
        }
        match route {
            Route::FanOut(key) => self.fan_out_to(&key, id, &message, events),
            Route::Queue(name) => {
                self.queues
                    .entry(name.clone())
                    .or_default()
                    .held
                    .push_back((id, message));
                self.pump(&name, events);
                self.forget_idle_queue(&name);
            }
        }
        Ok(Published { id, stored })
    }

    /// Acknowledges: one message (`client-individual`) or it and all earlier ones of its
    /// subscription (`client`).
    pub fn ack(
        &mut self,
        session: SessionId,
        which: &AckRef,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), BrokerError> {
        let settled = self.settle(session, which)?;
        let queues: Vec<String> = settled.into_iter().filter_map(|u| u.queue).collect();
        for q in dedup(queues) {
            self.pump(&q, events);
            self.forget_idle_queue(&q);
        }
        Ok(())
    }

    /// Rejects like [`Broker::ack`] selects; queue messages are redelivered, preferably to another
    /// consumer, topic messages are dropped.
    pub fn nack(
        &mut self,
        session: SessionId,
        which: &AckRef,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), BrokerError> {
        let settled = self.settle(session, which)?;
        let avoid = settled.first().map(|u| (session, u.subscription.clone()));
        let requeue = settled
            .into_iter()
            .filter_map(|u| u.queue.map(|q| (q, u.message_id, u.message)))
            .collect();
        self.requeue(requeue, avoid.as_ref(), events);
        Ok(())
    }

    /// Messages held by `/queue/<name>`, for stats and tests.
    pub fn queue_depth(&self, name: &str) -> usize {
        self.queues.get(name).map_or(0, |q| q.held.len())
    }

    /// Removes the acknowledged entries from the session's unacked list.
    fn settle(&mut self, session: SessionId, which: &AckRef) -> Result<Vec<Unacked>, BrokerError> {
        let entry = self
            .sessions
            .get_mut(&session)
            .ok_or(BrokerError::UnknownSession)?;
        let unknown = || {
            BrokerError::UnknownAck(match which {
                AckRef::AckId(id) => id.to_string(),
                AckRef::MessageId { message_id, .. } => message_id.to_string(),
            })
        };
        let pos = entry
            .unacked
            .iter()
            .position(|u| match which {
                AckRef::AckId(id) => u.ack_id == *id,
                AckRef::MessageId {
                    message_id,
                    subscription,
                } => {
                    u.message_id == *message_id
                        && subscription
                            .as_deref()
                            .is_none_or(|s| s == &*u.subscription)
                }
            })
            .ok_or_else(unknown)?;
        let sub_id = entry.unacked[pos].subscription.clone();
        let mode = entry
            .subscriptions
            .get(&sub_id)
            .map_or(AckMode::ClientIndividual, |s| s.ack);
        let mut settled = Vec::new();
        if mode == AckMode::Client {
            // Cumulative: this one and every earlier one of the same subscription.
            let mut i = 0;
            let mut remaining = pos + 1;
            while remaining > 0 {
                remaining -= 1;
                if entry.unacked[i].subscription == sub_id {
                    settled.extend(entry.unacked.remove(i));
                } else {
                    i += 1;
                }
            }
        } else {
            settled.extend(entry.unacked.remove(pos));
        }
        if let Some(sub) = entry.subscriptions.get_mut(&sub_id) {
            sub.unacked -= settled.len().min(sub.unacked);
        }
        Ok(settled)
    }

    fn fan_out_to(
        &mut self,
        key: &str,
        id: u64,
        message: &Arc<SharedMessage>,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let Some(subs) = self.fan_out.get(key) else {
            return;
        };
        let max_unacked = self.limits.max_unacked;
        for (session, sub_id) in subs {
            let Some(entry) = self.sessions.get_mut(session) else {
                continue;
            };
            let Some(sub) = entry.subscriptions.get_mut(sub_id) else {
                continue;
            };
            let ack = match sub.ack {
                AckMode::Auto => None,
                _ if sub.unacked >= max_unacked => {
                    events(BrokerEvent::Evict {
                        session: *session,
                        reason: "too many unacknowledged messages",
                    });
                    continue;
                }
                _ => Some(track(entry, sub_id, id, None, message)),
            };
            events(BrokerEvent::Deliver(Delivery {
                session: *session,
                subscription: sub_id.clone(),
                ack,
                message: message.clone(),
            }));
        }
    }

    /// Hands held messages of a queue to consumers with room, round-robin.
    fn pump(&mut self, name: &str, events: &mut dyn FnMut(BrokerEvent)) {
        self.pump_avoiding(name, None, events);
    }

    /// [`Broker::pump`], handing messages to `avoid` only when no other consumer has room (a
    /// NACKed message should go to someone else).
    fn pump_avoiding(
        &mut self,
        name: &str,
        avoid: Option<&(SessionId, Arc<str>)>,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let max_unacked = self.limits.max_unacked;
        while !queue.held.is_empty() && !queue.consumers.is_empty() {
            let n = queue.consumers.len();
            let has_room = |i: usize| {
                let (session, sub_id) = &queue.consumers[i];
                let sub = self
                    .sessions
                    .get(session)
                    .and_then(|e| e.subscriptions.get(sub_id));
                sub.is_some_and(|s| s.ack == AckMode::Auto || s.unacked < max_unacked)
            };
            let order = || (0..n).map(|k| (queue.next + k) % n);
            let ready = order()
                .find(|&i| has_room(i) && avoid != Some(&queue.consumers[i]))
                .or_else(|| order().find(|&i| has_room(i)));
            let Some(i) = ready else { break };
            queue.next = (i + 1) % n;
            let (session, sub_id) = queue.consumers[i].clone();
            let Some((id, message)) = queue.held.pop_front() else {
                break;
            };
            let Some(entry) = self.sessions.get_mut(&session) else {
                continue;
            };
            let mode = entry
                .subscriptions
                .get(&sub_id)
                .map_or(AckMode::Auto, |s| s.ack);
            let ack =
                (mode != AckMode::Auto).then(|| track(entry, &sub_id, id, Some(name), &message));
            events(BrokerEvent::Deliver(Delivery {
                session,
                subscription: sub_id,
                ack,
                message,
            }));
        }
    }

    /// Puts messages back at the front of their queues, in their original order, and pumps.
    fn requeue(
        &mut self,
        messages: Vec<(String, u64, Arc<SharedMessage>)>,
        avoid: Option<&(SessionId, Arc<str>)>,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let mut names = Vec::new();
        for (name, id, message) in messages.into_iter().rev() {
            self.queues
                .entry(name.clone())
                .or_default()
                .held
                .push_front((id, message));
            names.push(name);
        }
        for name in dedup(names) {
            self.pump_avoiding(&name, avoid, events);
        }
    }

    /// Drops a queue's entry once it has neither consumers nor messages.
    fn forget_idle_queue(&mut self, name: &str) {
        if self
            .queues
            .get(name)
            .is_some_and(|q| q.consumers.is_empty() && q.held.is_empty())
        {
            self.queues.remove(name);
        }
    }
}

/// Records a client-ack delivery and returns its ack id.
fn track(
    entry: &mut SessionEntry,
    sub_id: &Arc<str>,
    message_id: u64,
    queue: Option<&str>,
    message: &Arc<SharedMessage>,
) -> u64 {
    entry.next_ack += 1;
    let ack_id = entry.next_ack;
    if let Some(sub) = entry.subscriptions.get_mut(sub_id) {
        sub.unacked += 1;
    }
    entry.unacked.push_back(Unacked {
        ack_id,
        message_id,
        subscription: sub_id.clone(),
        queue: queue.map(str::to_owned),
        message: message.clone(),
    });
    ack_id
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}
