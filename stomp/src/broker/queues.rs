//! Queues and acknowledgements: round-robin delivery to queue consumers, ACK and NACK,
//! redelivery.

use std::sync::Arc;

use super::types::{dedup, track, Queue, Unacked};
use super::{AckMode, AckRef, Broker, BrokerError, BrokerEvent, Delivery, SessionId};
use crate::codec::SharedMessage;

impl Broker {
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

    /// Is `which` a message `session` has yet to acknowledge?
    pub fn is_unacked(&self, session: SessionId, which: &AckRef) -> bool {
        self.sessions
            .get(&session)
            .and_then(|entry| entry.acks.as_deref())
            .is_some_and(|acks| acks.unacked.iter().any(|u| settles(which, u)))
    }

    /// Messages held by `/queue/<name>`, for stats and tests.
    pub fn queue_depth(&self, name: &str) -> usize {
        self.queues.get(name).map_or(0, |q| q.held.len())
    }

    /// Removes the acknowledged entries from the session's unacked list.
    pub(super) fn settle(
        &mut self,
        session: SessionId,
        which: &AckRef,
    ) -> Result<Vec<Unacked>, BrokerError> {
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
        let unacked = match entry.acks.as_deref_mut() {
            Some(acks) => &mut acks.unacked,
            None => return Err(unknown()),
        };
        let pos = (unacked.iter())
            .position(|u| settles(which, u))
            .ok_or_else(unknown)?;
        let sub_id = unacked[pos].subscription.clone();
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
                if unacked[i].subscription == sub_id {
                    settled.extend(unacked.remove(i));
                } else {
                    i += 1;
                }
            }
        } else {
            settled.extend(unacked.remove(pos));
        }
        if let Some(sub) = entry.subscriptions.get_mut(&sub_id) {
            sub.unacked -= settled.len().min(sub.unacked);
        }
        Ok(settled)
    }

    /// Hands held messages of a queue to consumers with room, round-robin.
    pub(super) fn pump(&mut self, name: &str, events: &mut dyn FnMut(BrokerEvent)) {
        self.pump_avoiding(name, None, events);
    }

    /// [`Broker::pump`], handing messages to `avoid` only when no other consumer has room (a
    /// NACKed message should go to someone else).
    pub(super) fn pump_avoiding(
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
            queue.bytes -= message.body().len();
            self.queued_bytes -= message.body().len();
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
    pub(super) fn requeue(
        &mut self,
        messages: Vec<(String, u64, Arc<SharedMessage>)>,
        avoid: Option<&(SessionId, Arc<str>)>,
        events: &mut dyn FnMut(BrokerEvent),
    ) {
        let mut names = Vec::new();
        for (name, id, message) in messages.into_iter().rev() {
            let queue = self.queues.entry(name.clone()).or_default();
            queue.bytes += message.body().len();
            self.queued_bytes += message.body().len();
            queue.held.push_front((id, message));
            names.push(name);
        }
        for name in dedup(names) {
            self.pump_avoiding(&name, avoid, events);
        }
    }

    /// Drops a queue's entry once it has neither consumers nor messages; it no longer counts
    /// against its creator's quota.
    pub(super) fn forget_idle_queue(&mut self, name: &str) {
        if !self
            .queues
            .get(name)
            .is_some_and(|q| q.consumers.is_empty() && q.held.is_empty())
        {
            return;
        }
        if let Some(owner) = self.queues.remove(name).and_then(|q| q.owner) {
            if let Some(count) = self.queue_owners.get_mut(&owner) {
                *count -= 1;
                if *count == 0 {
                    self.queue_owners.remove(&owner);
                }
            }
        }
    }

    /// Refuses messages from `user` that the queues cannot hold: per queue `(name, messages,
    /// body bytes)`, the queue's messages or bytes, all queues' bytes, or the user's quota for
    /// the queues that would be new. One SEND is one entry; a COMMIT passes all of its SENDs.
    pub(super) fn check_queue_room(
        &self,
        user: &Arc<str>,
        adds: &[(&str, usize, usize)],
    ) -> Result<(), BrokerError> {
        let limits = &self.limits;
        let total: usize = adds.iter().map(|&(_, _, bytes)| bytes).sum();
        if self.queued_bytes + total > limits.max_queued_bytes {
            return Err(BrokerError::QueuesFull);
        }
        let mut new_queues = 0;
        for &(name, count, bytes) in adds {
            let (held, held_bytes) = match self.queues.get(name) {
                Some(q) => (q.held.len(), q.bytes),
                None => {
                    new_queues += 1;
                    (0, 0)
                }
            };
            if held + count > limits.max_queue_depth || held_bytes + bytes > limits.max_queue_bytes
            {
                return Err(BrokerError::QueueFull(name.to_owned()));
            }
        }
        self.check_queue_quota(user, new_queues)
    }

    /// Refuses `new` more queues for `user` past their quota.
    pub(super) fn check_queue_quota(&self, user: &Arc<str>, new: usize) -> Result<(), BrokerError> {
        let max = self.limits.max_queues_per_user;
        let owned = self.queue_owners.get(user).copied().unwrap_or(0);
        if new > 0 && owned + new > max {
            return Err(BrokerError::TooManyQueues(max));
        }
        Ok(())
    }

    /// Refuses a session's new work while the memory budget is spent (but for a COMMIT's
    /// messages, whose bytes are reserved).
    pub(super) fn check_budget(&self) -> Result<(), BrokerError> {
        match &self.budget {
            Some(budget) if self.reservation.is_none() && budget.is_exhausted() => {
                Err(BrokerError::Busy)
            }
            _ => Ok(()),
        }
    }

    /// The queue `name`, created for `user` (counting against their quota) if it is new.
    pub(super) fn queue_for(&mut self, name: &str, user: &Arc<str>) -> &mut Queue {
        if !self.queues.contains_key(name) {
            *self.queue_owners.entry(user.clone()).or_default() += 1;
            let queue = Queue {
                owner: Some(user.clone()),
                ..Queue::default()
            };
            self.queues.insert(name.to_owned(), queue);
        }
        self.queues.get_mut(name).expect("inserted above")
    }

    /// Adds a published message to the back of its queue.
    pub(super) fn hold(
        &mut self,
        name: &str,
        user: &Arc<str>,
        id: u64,
        message: Arc<SharedMessage>,
    ) {
        let body = message.body().len();
        let queue = self.queue_for(name, user);
        queue.bytes += body;
        queue.held.push_back((id, message));
        self.queued_bytes += body;
    }

    /// Drops the messages of `/queue/<name>` that waited longer than the queue time-to-live.
    pub(super) fn expire_queue(&mut self, name: &str, now_ms: u64) {
        let ttl = self.limits.queue_ttl_ms;
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        // Held messages are oldest first (requeued ones go back to the front, older still).
        while let Some((_, m)) = queue.held.front() {
            let sent: u64 = m
                .header("timestamp")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if sent.saturating_add(ttl) > now_ms {
                break;
            }
            queue.bytes -= m.body().len();
            self.queued_bytes -= m.body().len();
            queue.held.pop_front();
        }
        self.forget_idle_queue(name);
    }

    /// Drops every queued message older than the queue time-to-live (the server calls this
    /// now and then, so queues nobody sends to are emptied too).
    pub fn expire_queues(&mut self, now_ms: u64) {
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            self.expire_queue(&name, now_ms);
        }
    }

    /// Body bytes held by all queues, for stats and tests.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

/// Does `which` name the unacknowledged delivery `u`?
fn settles(which: &AckRef, u: &Unacked) -> bool {
    match which {
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
    }
}
