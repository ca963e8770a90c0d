//! Publishing: numbering, fan-out to subscribers, and (cluster mode) forwarding.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::types::{build_message, deliver_to_all, is_room, last_mut, track, Route};
use super::{
    AckMode, Broker, BrokerError, BrokerEvent, Delivery, Forwarded, Publish, Published, SessionId,
};
use crate::codec::{charge_for, SharedMessage};
use crate::destination::Destination;

impl Broker {
    /// Delivers a forwarded message to this node's subscribers of its key. A room message's
    /// id becomes the room's last id here (the caller delivers each room's messages in order).
    pub fn deliver_forwarded(&mut self, message: Forwarded, events: &mut dyn FnMut(BrokerEvent)) {
        let id = match &message.room {
            Some(room) => {
                let last = last_mut(self.room_ids.entry(room.clone()).or_default());
                *last = (*last).max(message.id);
                message.id
            }
            None => {
                self.next_message_id += 1;
                self.next_message_id
            }
        };
        let shared = self.share(build_message(
            message.shown,
            id,
            message.now_ms,
            &message.sender,
            message.guest,
            message.headers,
            message.body,
        ));
        self.fan_out_to(&message.key, id, &shared, events);
        if let Some(also) = &message.also {
            self.fan_out_to(also, id, &shared, events);
        }
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

    pub(super) fn publish_from(
        &mut self,
        session: Option<SessionId>,
        sender: Arc<str>,
        guest: bool,
        destination: &Destination,
        publish: Publish,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<Published, BrokerError> {
        let (route, shown) = self.route_of(destination)?;
        if session.is_some() {
            self.check_budget()?;
        }
        if let Route::Queue(name) = &route {
            self.expire_queue(name, publish.now_ms);
            self.check_queue_room(&sender, &[(name, 1, publish.body.len())])?;
        }
        let room = match destination {
            Destination::Topic(name) if is_room(name) => Some(name.clone()),
            _ => publish.stream.clone(),
        };
        if room.is_some() && self.storage_failing.load(Ordering::Relaxed) {
            return Err(BrokerError::StorageUnavailable);
        }
        if let (true, Route::FanOut(key)) = (self.forwarding, &route) {
            let stored = room.is_some();
            events(BrokerEvent::Forward {
                session,
                message: Forwarded {
                    key: key.to_string(),
                    shown,
                    room,
                    id: 0,
                    sender: sender.to_string(),
                    guest,
                    now_ms: publish.now_ms,
                    headers: publish.headers,
                    body: publish.body,
                    also: publish.copy_to,
                },
                receipt: publish.receipt,
            });
            return Ok(Published { id: 0, stored });
        }
        let id = self.next_id(room.as_deref());
        let message = self.share(build_message(
            shown,
            id,
            publish.now_ms,
            &sender,
            guest,
            publish.headers,
            publish.body,
        ));
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
            Route::FanOut(key) => {
                self.fan_out_to(&key, id, &message, events);
                if let Some(copy) = publish.copy_to.filter(|copy| **copy != *key) {
                    self.fan_out_to(&copy, id, &message, events);
                }
            }
            Route::Queue(name) => {
                self.hold(&name, &sender, id, message);
                self.pump(&name, events);
                self.forget_idle_queue(&name);
            }
        }
        Ok(Published { id, stored })
    }

    /// Refuses, before anything is published, what [`Broker::publish`] would refuse of these
    /// messages from `session` taken together (one SEND, or all of a COMMIT's, which applies all
    /// of its frames or none): a destination it cannot send to, a room or stored conversation
    /// while storage fails, the memory budget spent, queues without room for them all. For a
    /// COMMIT the caller then holds their bytes with [`Broker::reserve`].
    pub fn check_publishes(
        &self,
        session: SessionId,
        sends: &[(&Destination, &Publish)],
    ) -> Result<(), BrokerError> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or(BrokerError::UnknownSession)?;
        if sends.is_empty() {
            return Ok(());
        }
        self.check_budget()?;
        let mut per_queue: HashMap<&str, (usize, usize)> = HashMap::new();
        for (destination, publish) in sends {
            self.route_of(destination)?;
            let stored = publish.stream.is_some()
                || matches!(destination, Destination::Topic(name) if is_room(name));
            if stored && self.storage_failing.load(Ordering::Relaxed) {
                return Err(BrokerError::StorageUnavailable);
            }
            if let Destination::Queue(name) = destination {
                let (count, bytes) = per_queue.entry(name).or_default();
                *count += 1;
                *bytes += publish.body.len();
            }
        }
        let adds: Vec<_> = per_queue
            .into_iter()
            .map(|(name, (count, bytes))| (name, count, bytes))
            .collect();
        self.check_queue_room(&entry.user, &adds)
    }

    /// Holds what a checked COMMIT's messages will be charged in the memory budget, or refuses
    /// with [`BrokerError::Busy`] if it does not fit under it. Until [`Broker::end_reservation`],
    /// sessions' publishes are not refused for the budget: the COMMIT's first messages,
    /// charged as they are made, must not refuse its last ones.
    pub fn reserve(&mut self, sends: &[(&Destination, &Publish)]) -> Result<(), BrokerError> {
        if let Some(budget) = &self.budget {
            let bytes = sends
                .iter()
                .map(|(_, publish)| {
                    let headers = publish.headers.iter().map(|(n, v)| n.len() + v.len());
                    charge_for(publish.body.len(), headers.sum())
                })
                .sum();
            self.reservation = Some(budget.try_charge(bytes).ok_or(BrokerError::Busy)?);
        }
        Ok(())
    }

    /// Returns what [`Broker::reserve`] held (the messages charge the budget themselves).
    pub fn end_reservation(&mut self) {
        self.reservation = None;
    }

    pub(super) fn fan_out_to(
        &mut self,
        key: &str,
        id: u64,
        message: &Arc<SharedMessage>,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let Some(subs) = self.fan_out.get(key) else {
            return;
        };
        if subs.acking == 0 {
            return deliver_to_all(subs, message, events);
        }
        let max_unacked = self.limits.max_unacked;
        for (session, sub_id) in &subs.list {
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

    /// The next message id: a room's own next one (consecutive, so a gap is visible), or the
    /// broker-wide one for everything else.
    fn next_id(&mut self, room: Option<&str>) -> u64 {
        match room {
            Some(room) => {
                let last = last_mut(self.room_ids.entry(room.to_owned()).or_default());
                *last += 1;
                *last
            }
            None => {
                self.next_message_id += 1;
                self.next_message_id
            }
        }
    }
}

impl Broker {
    /// Where a destination's messages are routed, and the `destination` subscribers see.
    fn route_of(&self, destination: &Destination) -> Result<(Route, String), BrokerError> {
        Ok(match destination {
            Destination::Topic(_) => (
                Route::FanOut(self.shared_key(destination.to_string())),
                destination.to_string(),
            ),
            Destination::Queue(name) => (Route::Queue(name.clone()), destination.to_string()),
            Destination::UserQueue { queue, .. } => (
                Route::FanOut(self.shared_key(destination.to_string())),
                format!("/user/queue/{queue}"),
            ),
            Destination::OwnUserQueue(_) => {
                return Err(BrokerError::WrongUserDestination(
                    "send to /user/USER/queue/NAME to reach a user",
                ))
            }
        })
    }
}
