//! Chat commands for clients that speak in rooms rather than STOMP destinations (the raw JSON
//! protocol today): join with catch-up, leave, send, typing and history on top of a
//! [`HubSession`]. Each refusal carries a machine-readable code the endpoint passes on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use parley_stomp::broker::{is_room, AckMode, Publish, Published, Receipt};
use parley_stomp::destination::{Destination, RoomName};
use parley_stomp::rate::TokenBucket;
use parley_stomp::session::Identity;

use super::direct::{address, direct, dm_key, Recipient, DM_QUEUE};
use super::history::catch_up_range;
use super::message::{chat_headers, check_client_id};
use super::outbox::{tell, Notice};
use super::reads::READ_QUEUE;
use super::refusal::{publish_refusal, Refusal};
use super::registry::Origin;
use super::rooms::ROOMS_TOPIC;
use super::session::{Held, HubSession};
use super::tables::SentKey;
use super::{Hub, Outcome, Step};
use crate::clock::now_ms;
use crate::store::Kind;

/// The id of a session's subscription to its read marks.
pub const READ_SUBSCRIPTION: &str = "read";

/// A joined room's channels: the room itself, and its side channels (`<room>.typing`,
/// `<room>.presence`). The session subscribes to each as `<channel>:<room>`.
const ROOM: &str = "room";
const TYPING: &str = "typing";
const PRESENCE: &str = "presence";

/// The id of a session's subscription to `channel` of the joined `room`.
fn subscription_id(channel: &str, room: &str) -> String {
    format!("{channel}:{room}")
}

/// Whether a chat session's subscription (by id) is a joined room's typing channel: endpoints
/// tell deliveries apart by their subscription, not by reading each message's headers.
pub fn is_typing_subscription(id: &str) -> bool {
    id.strip_prefix(TYPING)
        .is_some_and(|rest| rest.starts_with(':'))
}

/// Limits of chat clients.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    /// Largest message body, in bytes.
    pub max_body: usize,
    /// Commands per second a session may send; 0 disables the limit.
    pub rate_limit: u32,
}

/// Where a message goes.
#[derive(Clone, Debug)]
pub enum Target<'a> {
    /// A room the session joined.
    Room(&'a str),
    /// Every session of a user and of the sender (a direct message), found by
    /// [`Hub::recipient`].
    User(Recipient),
}

/// What a message may carry besides its text.
#[derive(Clone, Debug, Default)]
pub struct SendExtras {
    /// The message it replies to.
    pub reply_to: Option<u64>,
    /// The sender's own id for it: a retry with the same one is not a second message.
    pub client_id: Option<String>,
}

/// What a join answers.
#[derive(Debug)]
pub enum JoinAnswer {
    /// Joined; these are in the room, whose newest id was `last_id` when the client joined.
    Members {
        /// Who is in the room.
        members: Vec<String>,
        /// The room's newest id at the join: everything after it arrives live.
        last_id: u64,
    },
    /// Cluster mode: the answer comes as [`Held::Joined`] once this node receives the room.
    Later,
}

/// A chat client's session: its identity, joined rooms, rate limit and the sends of one read.
pub struct ChatSession {
    session: HubSession,
    identity: Identity,
    settings: Arc<ChatSettings>,
    rooms: HashSet<String>,
    bucket: TokenBucket,
    /// Sends of the current read, published together in one step (see [`ChatSession::flush`]),
    /// each with its client id's key.
    sends: Vec<(Destination, Publish, Option<SentKey>)>,
}

impl ChatSession {
    /// Connects `identity` to the hub from `origin`, subscribed to its direct messages (and an
    /// account to its read marks).
    pub fn open(
        hub: &Arc<Hub>,
        identity: Identity,
        settings: Arc<ChatSettings>,
        origin: Origin,
    ) -> Self {
        let session = hub.open_session(origin);
        session.identify(&identity);
        let (id, user, guest) = (session.id(), identity.name.clone(), identity.guest);
        // A one-room credential reads no direct messages.
        let reads_dms = identity.scope.reads(None).is_ok();
        hub.apply(|broker, events| {
            broker.connect_as(id, user, guest);
            if reads_dms {
                let dms = Destination::OwnUserQueue(DM_QUEUE.to_owned());
                let _ = broker.subscribe(id, "dm", &dms, AckMode::Auto, events);
            }
            if !guest {
                // An account's read marks, from this session and its others.
                let reads = Destination::OwnUserQueue(READ_QUEUE.to_owned());
                let _ = broker.subscribe(id, READ_SUBSCRIPTION, &reads, AckMode::Auto, events);
            }
        });
        Self {
            session,
            identity,
            settings,
            rooms: HashSet::new(),
            bucket: TokenBucket::default(),
            sends: Vec::new(),
        }
    }

    /// The hub session, to wait on for what to send.
    pub fn session(&mut self) -> &mut HubSession {
        &mut self.session
    }

    /// Whether its connection may wait parked ([`HubSession::parks`]).
    pub fn parks(&self) -> bool {
        self.session.parks()
    }

    /// Names the session in the current span's log lines ([`HubSession::name_span`]).
    pub fn name_span(&self) {
        self.session.name_span(Some(&self.identity.name));
    }

    /// Cluster mode: waits (a few seconds at most) until this node hears the user's channel
    /// from the bus, so what another node sends the user from then on (direct messages, read
    /// marks) reaches this session. At once on a single node.
    pub async fn until_live(&self) {
        let key = dm_key(&self.identity.name);
        self.session.hub().until_live(&[key]).await;
    }

    /// The hub it belongs to.
    pub fn hub(&self) -> &Arc<Hub> {
        self.session.hub()
    }

    /// Who this is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Takes one command from the rate limit.
    pub fn admit(&mut self) -> Result<(), Refusal> {
        let limit = self.settings.rate_limit;
        if self.bucket.take(now_ms(), limit) {
            Ok(())
        } else {
            Err(Refusal::new(
                "rate_limited",
                format!("more than {limit} messages per second"),
            ))
        }
    }

    /// Joins `room` (creating it if new and this client may: [`Hub::enter_room`]), catching up
    /// from `since`. The access check, the
    /// subscription and the room's last id happen in one step under the broker's lock: a
    /// removal cannot slip in between, everything after that id arrives live and everything up
    /// to it is replayed. The room first, announced to the others as its own step, then its
    /// side channels, so the joiner does not receive its own join.
    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Result<JoinAnswer, Refusal> {
        let room = parse_room(room)?;
        let hub = self.session.hub().clone();
        hub.prepare_rooms(vec![room.clone()]).await;
        let (id, sub) = (self.session.id(), subscription_id(ROOM, &room));
        let topic = Destination::Topic(room.clone());
        let identity = &self.identity;
        // The broker, not our own list, says whether we are subscribed: a removal may have
        // ended it. Joining an unknown room creates it, if this client may.
        let (last_id, joined) = hub.apply(|broker, events| {
            hub.enter_room(identity, &room)
                .map_err(|refused| Refusal::new(refused.code(), refused.to_string()))?;
            let last_id = broker.room_last_id(&room);
            if broker.has_subscription(id, &sub) {
                return Ok((last_id, None));
            }
            broker
                .subscribe(id, &sub, &topic, AckMode::Auto, events)
                .map_err(|e| Refusal::new("join_failed", e.to_string()))?;
            Ok((
                last_id,
                Some(since.and_then(|s| catch_up_range(broker, &room, s))),
            ))
        })?;
        // Cluster mode: the answer goes first among the held ones, before the catch-up.
        let answer_slot = hub.is_clustered().then(|| self.session.hold());
        if let Some(catch_up) = joined {
            hub.apply(|broker, events| {
                for channel in [TYPING, PRESENCE] {
                    let dest = Destination::Topic(format!("{room}.{channel}"));
                    let sub = subscription_id(channel, &room);
                    let _ = broker.subscribe(id, &sub, &dest, AckMode::Auto, events);
                }
            });
            if let Some((since, last)) = catch_up {
                self.session.replay(room.clone(), sub, since, last);
            }
        }
        self.rooms.insert(room.clone());
        let Some(slot) = answer_slot else {
            let members = hub.members_here(&room);
            return Ok(JoinAnswer::Members { members, last_id });
        };
        tokio::spawn(async move {
            hub.until_live(&[format!("/topic/{room}")]).await;
            let members = hub.present(&room).await;
            let _ = slot.send(Held::Joined {
                room,
                members,
                last_id,
            });
        });
        Ok(JoinAnswer::Later)
    }

    /// Hears of every public room created from now on, on any node ([`ROOMS_TOPIC`]).
    pub fn watch_rooms(&mut self) -> Result<(), Refusal> {
        self.identity
            .scope
            .reads(None)
            .map_err(|why| Refusal::new("forbidden", why))?;
        let id = self.session.id();
        let topic = Destination::Topic(ROOMS_TOPIC.to_owned());
        self.session.hub().apply(|broker, events| {
            if broker.has_subscription(id, "rooms") {
                return Ok(());
            }
            broker
                .subscribe(id, "rooms", &topic, AckMode::Auto, events)
                .map_err(|e| Refusal::new("join_failed", e.to_string()))
        })
    }

    /// Leaves a joined room.
    pub fn leave(&mut self, room: &str) -> Result<(), Refusal> {
        let room = self.joined(room)?;
        let id = self.session.id();
        self.session.hub().apply(|broker, events| {
            for channel in [PRESENCE, TYPING, ROOM] {
                let sub = subscription_id(channel, &room);
                let _ = broker.unsubscribe(id, &sub, events);
            }
        });
        self.rooms.remove(&room);
        Ok(())
    }

    /// Tells a joined room this user is typing.
    pub fn typing(&mut self, room: &str) -> Result<(), Refusal> {
        let room = self.joined(room)?;
        self.may_post(&room)?;
        let id = self.session.id();
        let destination = Destination::Topic(format!("{room}.{TYPING}"));
        let publish = Publish {
            now_ms: now_ms(),
            ..Publish::default()
        };
        let hub = self.session.hub();
        hub.apply(|broker, events| broker.publish(id, &destination, publish, events))
            .map_err(publish_refusal)?;
        self.session.count_messages_in(1);
        hub.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a message for `target`; it is published with the others of this read by
    /// [`ChatSession::flush`]. A room message's `receipt` is sent once it is durable.
    pub fn send(
        &mut self,
        target: Target<'_>,
        body: &str,
        extras: SendExtras,
        receipt: Receipt,
    ) -> Result<(), Refusal> {
        if let Target::Room(room) = &target {
            self.joined(room)?;
        }
        self.queue(target, body, extras, receipt)
    }

    /// Queues a message for `room` without joining it (a post over HTTP, whose session lives
    /// for that one message): the same checks, limits and durable receipt as
    /// [`ChatSession::send`], without the subscription and presence a join brings.
    pub fn post(
        &mut self,
        room: &str,
        body: &str,
        extras: SendExtras,
        receipt: Receipt,
    ) -> Result<(), Refusal> {
        self.queue(Target::Room(room), body, extras, receipt)
    }

    /// [`ChatSession::send`] once the target is known to be one this session may address.
    fn queue(
        &mut self,
        target: Target<'_>,
        body: &str,
        extras: SendExtras,
        receipt: Receipt,
    ) -> Result<(), Refusal> {
        self.check_body(body)?;
        if let Some(client_id) = &extras.client_id {
            check_client_id(client_id)?;
        }
        let headers = chat_headers(
            Kind::Message,
            None,
            extras.reply_to,
            extras.client_id.as_deref(),
        );
        let body = Bytes::copy_from_slice(body.as_bytes());
        let (destination, mut publish) = match target {
            Target::Room(room) => {
                let room = parse_room(room)?;
                self.may_post(&room)?;
                let publish = Publish {
                    headers,
                    body,
                    now_ms: now_ms(),
                    ..Publish::default()
                };
                (Destination::Topic(room), publish)
            }
            Target::User(to) => {
                self.identity
                    .scope
                    .writes(None)
                    .map_err(|why| Refusal::new("forbidden", why))?;
                direct(&self.identity, &to, headers, body)
            }
        };
        let key = extras.client_id.map(|client_id| {
            SentKey::new(
                self.identity.name.clone(),
                destination.to_string(),
                client_id,
            )
        });
        let receipt = match &key {
            Some(key) => self.session.hub().remembering(key.clone(), receipt),
            None => receipt,
        };
        publish.receipt = Some(receipt);
        self.sends.push((destination, publish, key));
        Ok(())
    }

    /// Before a send with `client_id` to `target`: in cluster mode, whether it was sent before
    /// through another node ([`Hub::recall_sent`]).
    pub async fn recall(&self, target: &Target<'_>, client_id: &str) {
        let (destination, stream) = match target {
            Target::Room(room) => (
                Destination::Topic((*room).to_owned()),
                Some(room.to_string()),
            ),
            Target::User(to) => {
                let mut publish = Publish::default();
                let destination = address(&self.identity, to, &mut publish);
                (destination, publish.stream)
            }
        };
        let key = SentKey::new(
            self.identity.name.clone(),
            destination.to_string(),
            client_id.to_owned(),
        );
        self.session.hub().recall_sent(&key, stream).await;
    }

    /// Publishes the queued sends in order, room messages in their rooms' turns: each turn's
    /// fan-out reaches each subscriber as one batch (one wake-up, one write). One result per
    /// send, in order.
    pub fn flush(&mut self) -> Vec<Result<Published, Refusal>> {
        if self.sends.is_empty() {
            return Vec::new();
        }
        let id = self.session.id();
        let mut sends = std::mem::take(&mut self.sends);
        let hub = self.session.hub().clone();
        let mut retried = Vec::new();
        let results = hub.publish_each(
            sends.drain(..),
            |(destination, ..)| !matches!(destination, Destination::Topic(t) if is_room(t)),
            |(destination, mut publish, key), publisher| {
                // In the room's turn, so a retry racing its first send sees it.
                publisher.enter(&destination);
                if let Some(key) = &key {
                    // A retry: the first one's ack, never a second message.
                    if let Some(first) = hub.sent_before(key) {
                        let stored = matches!(&destination, Destination::Topic(_))
                            || publish.stream.is_some();
                        if let (true, Some(receipt)) = (stored, publish.receipt.take()) {
                            retried.push((key.clone(), receipt));
                        }
                        return Step::Done(Ok(Published { id: first, stored }));
                    }
                }
                let published = match publisher.publish(id, &destination, publish) {
                    Outcome::Alone(publish) => return Step::Alone((destination, publish, key)),
                    Outcome::Done(published) => published.map_err(publish_refusal),
                };
                if let (Some(key), Ok(published)) = (&key, &published) {
                    hub.remember(key, published.id);
                }
                Step::Done(published)
            },
        );
        for (key, receipt) in retried {
            hub.acknowledge_again(&self.session, key, receipt);
        }
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        hub.stats
            .messages_in
            .fetch_add(accepted as u64, Ordering::Relaxed);
        self.session.count_messages_in(accepted as u64);
        // Keep the (now empty) allocation for the next read.
        self.sends = sends;
        results
    }

    /// Refuses a body over the size limit.
    pub fn check_body(&self, body: &str) -> Result<(), Refusal> {
        if body.len() > self.settings.max_body {
            return Err(Refusal::new(
                "body_too_large",
                format!("body exceeds {} bytes", self.settings.max_body),
            ));
        }
        Ok(())
    }

    /// `room` if this client may read it (its history, say).
    pub fn readable(&self, room: &str) -> Result<RoomName, Refusal> {
        self.session.hub().usable_room(&self.identity, room)
    }

    /// A room name, or the `invalid_room` refusal stating the rule.
    pub fn room_name(room: &str) -> Result<String, Refusal> {
        parse_room(room)
    }

    /// Replays this user's conversation with `peer` after `since`, then goes on live (live
    /// direct messages wait until the replay is written; a client drops what it has by id).
    pub async fn catch_up_direct(&mut self, peer: &str, since: u64) -> Result<(), Refusal> {
        let hub = self.session.hub().clone();
        let stream = hub.conversation_with(&self.identity, peer).await?;
        // In cluster mode the latest may have been numbered elsewhere: storage says.
        let last = hub.last_id_of(&stream, u64::MAX).await?;
        if since < last {
            self.session.replay(stream, "dm".to_owned(), since, last);
        }
        Ok(())
    }

    /// Reads a page of this user's conversation with `peer`; it arrives as
    /// [`Notice::History`].
    pub async fn direct_history(
        &self,
        peer: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(), Refusal> {
        let stream = self
            .session
            .hub()
            .conversation_with(&self.identity, peer)
            .await?;
        self.read_history(stream, before, limit);
        Ok(())
    }

    /// Reads a page of a readable `room`'s history ([`ChatSession::readable`]); it arrives
    /// as [`Notice::History`].
    pub fn history(&self, room: RoomName, before: Option<u64>, limit: usize) {
        self.read_history(room.into_string(), before, limit);
    }

    fn read_history(&self, room: String, before: Option<u64>, limit: usize) {
        let hub = self.session.hub().clone();
        let mail = self.session.notifier();
        tokio::spawn(async move {
            let messages = hub
                .history(room.clone(), before, limit)
                .await
                .map_err(|error| tracing::error!(%error, "storage error"));
            tell(&mail, Notice::History { room, messages });
        });
    }

    /// Ends the session; sends already read are published first.
    pub fn close(&mut self) {
        self.flush();
        let id = self.session.id();
        self.session
            .close(|broker, events| broker.disconnect(id, events));
    }

    /// Refuses a room this client may not post in ([`crate::acl::Acl::may_post`]), or one an
    /// operator closed.
    fn may_post(&self, room: &str) -> Result<(), Refusal> {
        let hub = self.session.hub();
        hub.acl()
            .may_post(&self.identity, room)
            .map_err(|why| Refusal::new("forbidden", why))?;
        match hub.closed.reason(room) {
            Some(why) => {
                let closed = crate::acl::Refused::Closed(room.to_owned(), why);
                Err(Refusal::new(closed.code(), closed.to_string()))
            }
            None => Ok(()),
        }
    }

    /// `room`, if this session joined it.
    fn joined(&self, room: &str) -> Result<String, Refusal> {
        let room = parse_room(room)?;
        if !self.rooms.contains(&room) {
            return Err(Refusal::new(
                "not_joined",
                format!("join room {room:?} first"),
            ));
        }
        Ok(room)
    }
}

/// A room name, or the `invalid_room` refusal stating the rule.
fn parse_room(room: &str) -> Result<String, Refusal> {
    RoomName::parse(room)
        .map(RoomName::into_string)
        .map_err(|e| Refusal::new("invalid_room", e.to_string()))
}
