//! Queues and acknowledgements: round-robin delivery to queue consumers, ACK and NACK,
//! redelivery.

use std::sync::Arc;

use super::types::{dedup, track, Unacked};
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
    pub(super) fn forget_idle_queue(&mut self, name: &str) {
        if self
            .queues
            .get(name)
            .is_some_and(|q| q.consumers.is_empty() && q.held.is_empty())
        {
            self.queues.remove(name);
        }
    }
}
