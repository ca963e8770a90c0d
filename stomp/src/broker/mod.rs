//! The broker core: destinations, subscriptions, acknowledgements, queues. No sockets, no clock.
//!
//! Sessions are named by [`SessionId`]. Every operation reports what must happen elsewhere as
//! [`BrokerEvent`]s through a callback, in order, so a caller holding the broker under one lock
//! hands every subscriber a topic's messages in the same order. A plain room message can also be
//! published with the broker shared, in its room's turn (`turns`), so rooms publish at once.

mod online;
mod publish;
mod queues;
mod subscriptions;
mod turns;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::budget::{Charge, MemoryBudget};
use crate::codec::SharedMessage;
use crate::destination::Destination;

pub use self::online::OnlineChange;
use self::types::{dedup, last_mut, lock, Queue, Route, SessionEntry, Subscribers, Subscription};
pub use self::types::{
    is_room, AckMode, AckRef, BrokerError, BrokerEvent, BrokerLimits, Delivery, Forwarded, Publish,
    Published, Receipt, Run, SessionId, Shared, Turn,
};

/// Destinations, subscriptions and unacknowledged messages of every session.
#[derive(Default)]
pub struct Broker {
    limits: BrokerLimits,
    sessions: HashMap<SessionId, SessionEntry>,
    fan_out: HashMap<Arc<str>, Subscribers>,
    /// Per topic, each present user's number of subscriptions (several tabs are one member).
    present: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    /// Last message id of each room, locked from numbering a message until it is delivered
    /// when the broker is shared ([`Broker::turn`]).
    room_ids: HashMap<String, Mutex<u64>>,
    queues: HashMap<String, Queue>,
    next_message_id: u64,
    /// Cluster mode: topic and user messages are forwarded, not delivered here.
    forwarding: bool,
    /// What messages are charged to; sends are refused while it is spent.
    budget: Option<Arc<MemoryBudget>>,
    /// A COMMIT's bytes held while its messages are published ([`Broker::reserve`]).
    reservation: Option<Charge>,
    /// Body bytes held by all queues.
    queued_bytes: usize,
    /// Per user, the queues their sends or subscriptions created that still exist.
    queue_owners: HashMap<Arc<str>, usize>,
    /// Storage is failing: room messages are refused rather than numbered and delivered.
    storage_failing: AtomicBool,
    /// Who is connected, and changes of that not yet taken.
    online: online::Online,
}

/// How much a broker holds ([`Broker::sizes`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerSizes {
    /// Connected sessions.
    pub sessions: usize,
    /// Subscriptions to topics and user destinations (a session's subscription to a room and
    /// its side channels count apart).
    pub subscriptions: usize,
    /// Fan-out keys with at least one subscriber.
    pub topics: usize,
    /// `/queue/` destinations.
    pub queues: usize,
    /// Body bytes held by the queues.
    pub queued_bytes: usize,
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

    /// Charges every message the broker makes to `budget`, and refuses sessions' sends while it
    /// is spent.
    pub fn set_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.budget = Some(budget);
    }

    /// A message made shareable, charged to the budget.
    fn share(&self, message: SharedMessage) -> Arc<SharedMessage> {
        Arc::new(match &self.budget {
            Some(budget) => message.charged(budget),
            None => message,
        })
    }

    /// While storage is failing, a room message could be delivered and then never kept (a gap
    /// in its room's ids, in history and catch-up): publishing to a room is refused with
    /// [`BrokerError::StorageUnavailable`] until the server says storage works again.
    pub fn set_storage_failing(&self, failing: bool) {
        self.storage_failing.store(failing, Ordering::Relaxed);
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
            subscriptions: Default::default(),
            acks: None,
        };
        self.online.connected(&entry.user, guest);
        if let Some(old) = self.sessions.insert(session, entry) {
            self.online.disconnected(session, &old.user);
        }
    }

    /// Removes a session: its subscriptions end and its unacknowledged queue messages go to
    /// other consumers.
    pub fn disconnect(&mut self, session: SessionId, events: &mut dyn FnMut(BrokerEvent)) {
        // Unroute every subscription before redelivering anything, so nothing is handed back to
        // another subscription of the session that is leaving.
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.online.disconnected(session, &entry.user);
        let unacked = entry.acks.map(|acks| acks.unacked).unwrap_or_default();
        let requeue: Vec<_> = (unacked.into_iter())
            .filter_map(|u| u.queue.map(|q| (q, u.message_id, u.message)))
            .collect();
        let mut queues = Vec::new();
        for (id, sub) in entry.subscriptions.iter() {
            self.unroute(session, &entry.user, entry.guest, id, sub, events);
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
        let user = entry.user.clone();
        let route = match destination {
            Destination::Topic(_) => Route::FanOut(self.shared_key(destination.to_string())),
            Destination::OwnUserQueue(queue) => {
                Route::FanOut(self.shared_key(format!("/user/{user}/queue/{queue}")))
            }
            Destination::Queue(name) => Route::Queue(name.clone()),
            Destination::UserQueue { .. } => {
                return Err(BrokerError::WrongUserDestination(
                    "subscribe to /user/queue/NAME to receive your own messages",
                ))
            }
        };
        if let Route::Queue(name) = &route {
            if !self.queues.contains_key(name) {
                self.check_queue_quota(&user, 1)?;
            }
        }
        let Some(entry) = self.sessions.get_mut(&session) else {
            return Err(BrokerError::UnknownSession);
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
                            topic: key.to_string(),
                            user,
                            guest,
                        });
                    }
                }
                let subscribers = self.fan_out.entry(key.clone()).or_default();
                if subscribers.list.is_empty() && self.forwarding {
                    events(BrokerEvent::Watch {
                        key: key.to_string(),
                    });
                }
                subscribers.list.push((session, id));
                subscribers.acking += usize::from(ack != AckMode::Auto);
            }
            Route::Queue(name) => {
                self.queue_for(&name, &user).consumers.push((session, id));
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
        if let Some(acks) = &mut entry.acks {
            acks.unacked.retain(|u| {
                let mine = u.subscription == id;
                if mine {
                    if let Some(q) = &u.queue {
                        requeue.push((q.clone(), u.message_id, u.message.clone()));
                    }
                }
                !mine
            });
        }
        self.unroute(session, &user, guest, &id, &sub, events);
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
        sub: &Subscription,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let is_this = |(s, sid): &(SessionId, Arc<str>)| *s == session && sid == id;
        match &sub.route {
            Route::FanOut(key) => {
                if let Some(subs) = self.fan_out.get_mut(key) {
                    subs.list.retain(|s| !is_this(s));
                    subs.acking -= usize::from(sub.ack != AckMode::Auto);
                    if subs.list.is_empty() {
                        self.fan_out.remove(key);
                        if self.forwarding {
                            events(BrokerEvent::Unwatch {
                                key: key.to_string(),
                            });
                        }
                    }
                }
                if let Some(users) = self.present.get_mut(key) {
                    if let Some(count) = users.get_mut(user) {
                        *count -= 1;
                        if *count == 0 {
                            users.remove(user);
                            events(BrokerEvent::Left {
                                topic: key.to_string(),
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
                        matches!(&sub.route, Route::FanOut(k) if **k == *topic || k.starts_with(&side))
                    })
                    .map(move |(id, _)| (session, id.clone()))
            })
            .collect();
        for (session, id) in &ended {
            let _ = self.unsubscribe(*session, id, events);
        }
        ended
    }

    /// The sessions of `user` that are guests (`guest`) or accounts. Names that differ only by
    /// ASCII case are one name here: `Alice` is among the sessions of `alice`.
    pub fn sessions_of(&self, user: &str, guest: bool) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.user.eq_ignore_ascii_case(user) && e.guest == guest)
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
            .get(topic.to_string().as_str())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        users.sort_unstable();
        users
    }

    /// Marks `session` away (or back); its user is away while every session of theirs is.
    pub fn set_away(&mut self, session: SessionId, away: bool) {
        if let Some(user) = self.sessions.get(&session).map(|e| e.user.clone()) {
            self.online.set_away(session, &user, away);
        }
    }

    /// A guest named exactly `user` is connected here.
    pub fn is_guest_online(&self, user: &str) -> bool {
        self.online.is_guest_online(user)
    }

    /// Is `user` connected here (exactly this name), and if so, away?
    pub fn online_state(&self, user: &str) -> Option<bool> {
        self.online.state(user)
    }

    /// Every connected user here: (name, guest, away), in no order.
    pub fn online_users(&self) -> Vec<(Arc<str>, bool, bool)> {
        self.online.users()
    }

    /// Users who connected, left or changed their away state since the last call.
    pub fn take_online_changes(&mut self) -> Vec<OnlineChange> {
        self.online.take_changes()
    }

    /// Continues a room's numbering (e.g. from storage after a restart).
    pub fn seed_room(&mut self, room: &str, last_id: u64) {
        let id = last_mut(self.room_ids.entry(room.to_owned()).or_default());
        *id = (*id).max(last_id);
    }

    /// `key` as the fan-out table's own copy when somebody subscribes to it: one copy per key,
    /// however many subscriptions and publishes name it.
    pub(super) fn shared_key(&self, key: String) -> Arc<str> {
        match self.fan_out.get_key_value(key.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => key.into(),
        }
    }

    /// Somebody here subscribes to fan-out key `key` (`/topic/x`, `/user/bob/queue/messages`).
    pub fn has_subscribers(&self, key: &str) -> bool {
        self.fan_out
            .get(key)
            .is_some_and(|subs| !subs.list.is_empty())
    }

    /// How much the broker holds now, for monitoring: one pass over its tables.
    pub fn sizes(&self) -> BrokerSizes {
        BrokerSizes {
            sessions: self.sessions.len(),
            subscriptions: self.fan_out.values().map(|subs| subs.list.len()).sum(),
            topics: self
                .fan_out
                .values()
                .filter(|subs| !subs.list.is_empty())
                .count(),
            queues: self.queues.len(),
            queued_bytes: self.queued_bytes,
        }
    }

    /// The last id given to a message of `room` (0 if none).
    pub fn room_last_id(&self, room: &str) -> u64 {
        self.room_ids.get(room).map_or(0, |last| *lock(last))
    }
}
