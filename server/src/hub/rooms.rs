//! Rooms and their rules as the hub applies them: creating rooms, ending subscriptions a rule no
//! longer allows, and following rule changes made on other nodes.

use std::sync::Arc;

use parley_stomp::broker::{Publish, SessionId};
use parley_stomp::destination::Destination;
use parley_stomp::session::{Access, Identity};
use tracing::warn;

use super::direct::{address, is_conversation, DM_QUEUE};
use super::outbox::{Notice, CLOSE_UNAUTHORIZED};
use super::reads::READ_QUEUE;
use super::Hub;
use crate::acl::{room_of_topic, Refused};
use crate::store::{self, Room};

/// The room a fan-out key is, if it is a room itself (`/topic/general`; not its side channels
/// `/topic/general.typing`, nor user destinations).
pub(super) fn room_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("/topic/").filter(|r| !r.contains('.'))
}

/// The topic announcing new public rooms (`/topic/.rooms`): no room can have that name.
pub const ROOMS_TOPIC: &str = ".rooms";
/// The header naming the room a room-list MESSAGE is about.
pub const ROOM_HEADER: &str = "room";

impl Hub {
    /// Creates a room in memory for `owner` (an account, within its quota), under the broker's
    /// lock; if private, everyone but the owner loses subscriptions made while the name was
    /// free. `Ok(false)` if the room exists.
    pub fn claim_room(&self, room: &str, private: bool, owner: &Identity) -> Result<bool, Refused> {
        let ended = self.apply(|broker, events| {
            if !self.acl.create_for(owner, room, private, true)? {
                return Ok(None);
            }
            let name = &*owner.name;
            Ok(Some(if private {
                broker.revoke_room_where(room, &|user, guest| guest || user != name, events)
            } else {
                Vec::new()
            }))
        })?;
        match ended {
            None => Ok(false),
            Some(ended) => {
                self.tell_revoked(room, ended);
                if !private {
                    self.announce_room(room, &owner.name);
                }
                Ok(true)
            }
        }
    }

    /// Tells whoever watches the room list ([`ROOMS_TOPIC`]) on any node that public room
    /// `room` exists now: a MESSAGE with header `room`. Published after the step that created
    /// it, once the broker's lock is free.
    fn announce_room(&self, room: &str, by: &str) {
        let hub = self.me.clone();
        let (room, by): (String, Arc<str>) = (room.to_owned(), by.into());
        self.runtime.spawn(async move {
            let Some(hub) = hub.upgrade() else { return };
            let publish = Publish {
                headers: vec![(ROOM_HEADER.to_owned(), room)],
                now_ms: crate::clock::now_ms(),
                ..Publish::default()
            };
            let destination = Destination::Topic(ROOMS_TOPIC.to_owned());
            hub.apply(|broker, events| {
                let _ = broker.publish_as(by, &destination, publish, events);
            });
        });
    }

    /// Lets `who` use `room` (a join, a SUBSCRIBE, or an accepted SEND to `/topic/<room>`): an
    /// unknown room is created for them if the rules allow ([`Acl::enter`]) and stored through
    /// the journal, in order with the room's messages. The one explicit create besides
    /// [`Hub::claim_room`]; side channels never create ([`Acl::may_use_side_channel`]).
    pub fn enter_room(&self, who: &Identity, room: &str) -> Result<(), Refused> {
        if let Some(reason) = self.closed.reason(room) {
            return Err(Refused::Closed(room.to_owned(), reason));
        }
        // Cluster mode: another node may have created it (even private) without this one
        // hearing yet: no owner here until storage says who it is.
        let owner_now = self.bus.is_none();
        if self.acl.enter(who, room, owner_now)? {
            self.record_room(room, (!who.guest).then_some(&*who.name));
            self.announce_room(room, &who.name);
        }
        Ok(())
    }

    /// Records a room that a message brought here (from storage or another node): no rule to
    /// check, no owner.
    pub(super) fn ensure_room(&self, room: &str) {
        if is_conversation(room) {
            return; // two people's, not a room
        }
        if self.acl.create(room, false, None) {
            self.record_room(room, None);
        }
    }

    /// Stores a room just created in memory, off the async runtime. Cluster mode: then reads
    /// storage's rules, which hold who really created it, and tells the other nodes to as well.
    fn record_room(&self, room: &str, owner: Option<&str>) {
        self.journal.create_room(Room {
            name: room.to_owned(),
            private: false,
            owner: owner.map(str::to_owned),
        });
        if self.bus.is_some() {
            let (hub, room) = (self.me.clone(), room.to_owned());
            self.journal.barrier(Box::new(move |_| {
                if let Some(hub) = hub.upgrade() {
                    hub.acl_changed(&room);
                    hub.reload_rules_of(room);
                }
            }));
        }
    }

    /// Lets `who` use `topic`: the room itself ([`Hub::enter_room`]) or a side channel of it.
    fn use_topic(&self, who: &Identity, topic: &str) -> Result<(), String> {
        let room = room_of_topic(topic);
        if let Some(reason) = self.closed.reason(room) {
            return Err(Refused::Closed(room.to_owned(), reason).to_string());
        }
        let used = if room.len() == topic.len() {
            self.enter_room(who, room)
        } else {
            self.acl.may_use_side_channel(who, room)
        };
        used.map_err(|refused| refused.to_string())
    }

    /// Closes the sessions of guests named `name` in any case (it was just registered).
    pub fn evict_guests_named(&self, name: &str) {
        let guard = self.lock();
        for session in guard.broker.sessions_of(name, true) {
            if let Some(outbox) = guard.outboxes.get(&session) {
                outbox.evicted().evict(
                    CLOSE_UNAUTHORIZED,
                    format!("the name {name:?} now belongs to a registered user"),
                );
            }
        }
    }

    /// Ends `user`'s subscriptions to `room` and tells their sessions.
    pub fn revoke_room(&self, user: &str, room: &str) {
        let ended = self.apply(|broker, events| broker.revoke_room(user, room, events));
        self.tell_revoked(room, ended);
    }

    /// Tells each session that lost subscriptions to `room` (once per session).
    fn tell_revoked(&self, room: &str, ended: Vec<(SessionId, Arc<str>)>) {
        let reason = format!("forbidden: you were removed from room {room:?}");
        self.tell_ended(room, ended, reason);
    }

    /// Tells each session that lost subscriptions to `room` why (once per session).
    pub(super) fn tell_ended(&self, room: &str, ended: Vec<(SessionId, Arc<str>)>, reason: String) {
        let guard = self.lock();
        let mut told = Vec::new();
        for (session, _) in ended {
            if told.contains(&session) {
                continue;
            }
            told.push(session);
            if let Some(outbox) = guard.outboxes.get(&session) {
                outbox.notify(Notice::Revoked {
                    room: room.to_owned(),
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Tells the other nodes (cluster mode) that `room`'s rules changed here; they read them
    /// back from storage.
    pub fn acl_changed(&self, room: &str) {
        if let Some(bus) = &self.bus {
            bus.publish_rules_changed(room);
        }
    }

    /// Reads `room`'s rules from storage, which holds what was decided, and applies them (cluster
    /// mode): live subscriptions they no longer allow end as if the change had been made here.
    pub(super) fn reload_rules_of(&self, room: String) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.spawn(async move {
            let name = room.clone();
            match store::run(&me.store, move |s| s.room_rules(&name)).await {
                Ok(Some((private, members))) => {
                    me.acl.replace_room(&room, private, members);
                    if private {
                        me.end_subscriptions_not_allowed(&room);
                    }
                }
                Ok(None) => {}
                Err(error) => warn!(%error, %room, "reading a room's rules failed"),
            }
        });
    }

    /// Reads every room's rules from storage again (cluster mode: after a Redis outage or lag,
    /// changes announced meanwhile were missed).
    pub(super) fn reload_all_rules(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.spawn(async move {
            let acl = me.acl.clone();
            match store::run(&me.store, move |s| acl.reload(s)).await {
                Ok(private) => {
                    for room in private {
                        me.end_subscriptions_not_allowed(&room);
                    }
                }
                Err(error) => warn!(%error, "reloading room rules failed"),
            }
        });
    }

    /// Ends the subscriptions to private `room` (and its side channels) of guests and
    /// non-members.
    fn end_subscriptions_not_allowed(&self, room: &str) {
        let acl = self.acl.clone();
        let ended = self.apply(|broker, events| {
            broker.revoke_room_where(
                room,
                &|user, guest| guest || acl.role(room, user).is_none(),
                events,
            )
        });
        self.tell_revoked(room, ended);
    }
}

/// The server's rules for STOMP: under the broker's lock, a lookup (and for a new room, a
/// write to the journal's queue), never storage.
impl Access for Hub {
    fn subscribe(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        match destination {
            // A room's topic or side channel checks the credential's scope with the room.
            Destination::Topic(topic) if topic != ROOMS_TOPIC => self.use_topic(who, topic),
            // The room list, shared work lists and user queues (the subscriber's own: the
            // broker refuses anyone else's) are no room: a one-room credential may not.
            _ => who.scope.reads(None),
        }
    }

    fn send(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        self.send_all(who, std::slice::from_ref(destination))
    }

    /// Checks only: a new room is created when a SEND to it is accepted ([`Access::accept`]),
    /// so a SEND refused (too large, too fast, in a transaction aborted) creates nothing. The
    /// rooms a COMMIT would create count against the quota together.
    fn send_all(&self, who: &Identity, destinations: &[Destination]) -> Result<(), String> {
        let mut rooms = Vec::new();
        for destination in destinations {
            let room = match destination {
                Destination::Topic(topic) => Some(room_of_topic(topic)),
                _ => None,
            };
            who.scope.writes(room)?;
            let topic = match destination {
                Destination::Topic(topic) => topic,
                // Read marks are told by the server alone: no one forges another's.
                Destination::UserQueue { queue, .. } if queue == READ_QUEUE => {
                    return Err("it is written by the server".into());
                }
                _ => continue,
            };
            if topic.ends_with(".presence") || topic == ROOMS_TOPIC {
                return Err("it is written by the server".into());
            }
            let room = room_of_topic(topic);
            if let Some(reason) = self.closed.reason(room) {
                return Err(Refused::Closed(room.to_owned(), reason).to_string());
            }
            if room.len() == topic.len() {
                rooms.push(room);
            } else {
                (self.acl.may_use_side_channel(who, room)).map_err(|r| r.to_string())?;
            }
        }
        self.acl.may_enter(who, &rooms).map_err(|r| r.to_string())
    }

    /// A checked SEND to a room that does not exist yet creates it ([`Hub::enter_room`]).
    fn accept(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        match destination {
            Destination::Topic(topic) if room_of_topic(topic).len() == topic.len() => {
                self.enter_room(who, topic).map_err(|r| r.to_string())
            }
            _ => Ok(()),
        }
    }

    /// Direct messages (`/user/<name>/queue/messages`) become conversations, as for every
    /// protocol ([`address`]); the STOMP endpoint found the recipient before this step.
    fn route(
        &self,
        who: &Identity,
        destination: &mut Destination,
        publish: &mut Publish,
    ) -> Result<(), String> {
        let Destination::UserQueue { user, queue } = &*destination else {
            return Ok(());
        };
        if queue != DM_QUEUE {
            return Ok(());
        }
        let to = self.known_recipient(user);
        self.check_direct(&to, publish).map_err(|r| r.message)?;
        *destination = address(who, &to, publish);
        Ok(())
    }
}
