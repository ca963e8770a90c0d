//! Random operation sequences against the broker, checked against a small model of where every
//! queue message is: held by its queue, unacknowledged by exactly one subscription, or done.
//!
//! Each session subscribes to each queue at most once (the subscription id is the queue's
//! name), which keeps the model simple.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::BytesMut;
use parley_stomp::broker::{
    AckMode, AckRef, Broker, BrokerError, BrokerEvent, BrokerLimits, Publish, SessionId,
};
use parley_stomp::destination::Destination;
use parley_stomp::{Decoder, Limits, SharedMessage, Version};
use proptest::prelude::*;
use proptest::sample::Index;

const SESSIONS: usize = 3;
const QUEUES: usize = 2;
const MAX_QUEUE_DEPTH: usize = 4;
const MAX_UNACKED: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    Subscribe(usize, usize, AckMode),
    Unsubscribe(usize, usize),
    Publish(usize, usize),
    /// Acknowledge one of the session's unacknowledged deliveries (or a bogus id if none).
    Ack(usize, Index),
    Nack(usize, Index),
    /// Disconnect, then connect again under the same id.
    Reconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..SESSIONS;
    let q = 0..QUEUES;
    let mode = prop_oneof![
        Just(AckMode::Auto),
        Just(AckMode::Client),
        Just(AckMode::ClientIndividual)
    ];
    prop_oneof![
        3 => (s.clone(), q.clone(), mode).prop_map(|(s, q, m)| Op::Subscribe(s, q, m)),
        1 => (s.clone(), q.clone()).prop_map(|(s, q)| Op::Unsubscribe(s, q)),
        5 => (s.clone(), q).prop_map(|(s, q)| Op::Publish(s, q)),
        3 => (s.clone(), any::<Index>()).prop_map(|(s, i)| Op::Ack(s, i)),
        2 => (s.clone(), any::<Index>()).prop_map(|(s, i)| Op::Nack(s, i)),
        1 => s.prop_map(Op::Reconnect),
    ]
}

fn queue_name(q: usize) -> String {
    format!("q{q}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Where {
    Held,
    Unacked {
        session: SessionId,
        sub: String,
        ack: u64,
    },
    Done,
}

#[derive(Default)]
struct Model {
    /// Message id -> (queue, where it is).
    messages: HashMap<u64, (usize, Where)>,
    /// Per session: subscription id -> (queue, mode).
    subs: Vec<BTreeMap<String, (usize, AckMode)>>,
}

impl Model {
    fn held(&self, q: usize) -> usize {
        self.messages
            .values()
            .filter(|(mq, w)| *mq == q && *w == Where::Held)
            .count()
    }

    fn unacked_of(&self, session: SessionId, sub: &str) -> usize {
        self.messages
            .values()
            .filter(|(_, w)| matches!(w, Where::Unacked { session: s, sub: u, .. } if *s == session && u == sub))
            .count()
    }

    /// The session's unacknowledged deliveries, by ack id.
    fn unacked(&self, session: SessionId) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .messages
            .values()
            .filter_map(|(_, w)| match w {
                Where::Unacked {
                    session: s,
                    sub,
                    ack,
                } if *s == session => Some((*ack, sub.clone())),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Moves the selected unacknowledged messages to `to`.
    fn settle(&mut self, pick: impl Fn(SessionId, &str, u64) -> bool, to: Where) {
        for (_, w) in self.messages.values_mut() {
            if let Where::Unacked { session, sub, ack } = w {
                if pick(*session, sub, *ack) {
                    *w = to.clone();
                }
            }
        }
    }

    /// Applies one broker event, checking it is allowed.
    fn apply(&mut self, event: BrokerEvent) -> Result<(), TestCaseError> {
        let d = match event {
            BrokerEvent::Deliver(d) => d,
            BrokerEvent::Evict { session, .. } => {
                return Err(TestCaseError::fail(format!(
                    "queue consumers are never evicted ({session})"
                )))
            }
            // Presence concerns topics only; this model has queues.
            BrokerEvent::Joined { .. } | BrokerEvent::Left { .. } | BrokerEvent::Store { .. } => {
                return Ok(())
            }
            other @ (BrokerEvent::Forward { .. }
            | BrokerEvent::Watch { .. }
            | BrokerEvent::Unwatch { .. }) => {
                return Err(TestCaseError::fail(format!(
                    "no cluster events without forwarding: {other:?}"
                )))
            }
        };
        let (destination, message_id) = decode(&d.subscription, d.ack, &d.message);
        let (q, w) = self
            .messages
            .get(&message_id)
            .cloned()
            .ok_or_else(|| TestCaseError::fail(format!("unknown message {message_id}")))?;
        prop_assert_eq!(destination, format!("/queue/{}", queue_name(q)));
        prop_assert_eq!(
            &w,
            &Where::Held,
            "message {} delivered to {}/{} while not held",
            message_id,
            d.session,
            &*d.subscription
        );
        let Some(&(sub_queue, mode)) = self.subs[d.session as usize].get(&*d.subscription) else {
            return Err(TestCaseError::fail(format!(
                "delivery to a subscription that does not exist: {}/{}",
                d.session, &*d.subscription
            )));
        };
        prop_assert_eq!(sub_queue, q);
        let now = match (mode, d.ack) {
            (AckMode::Auto, None) => Where::Done,
            (AckMode::Auto, Some(_)) => {
                return Err(TestCaseError::fail("auto delivery with an ack id"))
            }
            (_, None) => {
                return Err(TestCaseError::fail(
                    "client-mode delivery without an ack id",
                ))
            }
            (_, Some(ack)) => {
                prop_assert!(
                    self.unacked_of(d.session, &d.subscription) < MAX_UNACKED,
                    "queue dispatched past max_unacked"
                );
                prop_assert!(
                    self.unacked(d.session).iter().all(|(a, _)| *a != ack),
                    "ack id {} reused",
                    ack
                );
                Where::Unacked {
                    session: d.session,
                    sub: d.subscription.to_string(),
                    ack,
                }
            }
        };
        self.messages.insert(message_id, (q, now));
        Ok(())
    }

    /// What must hold between operations.
    fn check(&self, broker: &Broker) -> Result<(), TestCaseError> {
        for q in 0..QUEUES {
            let held = self.held(q);
            prop_assert_eq!(
                broker.queue_depth(&queue_name(q)),
                held,
                "held count of {}",
                queue_name(q)
            );
            if held > 0 {
                // Nothing is held while a consumer of that queue has room.
                for (s, subs) in self.subs.iter().enumerate() {
                    for (id, &(sq, mode)) in subs {
                        if sq == q {
                            prop_assert!(
                                mode != AckMode::Auto
                                    && self.unacked_of(s as SessionId, id) >= MAX_UNACKED,
                                "{} holds {} messages while {}/{} ({:?}) has room",
                                queue_name(q),
                                held,
                                s,
                                id,
                                mode
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `destination` and `message-id` a 1.2 client would read.
fn decode(subscription: &str, ack: Option<u64>, message: &SharedMessage) -> (String, u64) {
    let ack = ack.map(|a| a.to_string());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&SharedMessage::prefix(
        subscription,
        ack.as_deref(),
        Version::V1_2,
    ));
    buf.extend_from_slice(message.shared(Version::V1_2));
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(Version::V1_2);
    let frame = decoder.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    (
        frame.get("destination").unwrap().to_owned(),
        frame.get("message-id").unwrap().parse().unwrap(),
    )
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut limits = BrokerLimits::default();
    limits.max_queue_depth = MAX_QUEUE_DEPTH;
    limits.max_unacked = MAX_UNACKED;
    let mut broker = Broker::new(limits);
    let mut model = Model {
        subs: vec![BTreeMap::new(); SESSIONS],
        ..Model::default()
    };
    let user = |s: usize| -> Arc<str> { format!("user{s}").into() };
    for s in 0..SESSIONS {
        broker.connect(s as SessionId, user(s));
    }
    for op in ops {
        let mut events = Vec::new();
        let mut sink = |e| events.push(e);
        match op {
            Op::Subscribe(s, q, mode) => {
                let id = queue_name(q);
                let to = Destination::Queue(id.clone());
                let result = broker.subscribe(s as SessionId, &id, &to, mode, &mut sink);
                match model.subs[s].entry(id) {
                    Entry::Occupied(e) => prop_assert_eq!(
                        result,
                        Err(BrokerError::DuplicateSubscription(e.key().clone()))
                    ),
                    Entry::Vacant(e) => {
                        prop_assert_eq!(result, Ok(()));
                        e.insert((q, mode));
                    }
                }
            }
            Op::Unsubscribe(s, q) => {
                let id = queue_name(q);
                let result = broker.unsubscribe(s as SessionId, &id, &mut sink);
                if model.subs[s].remove(&id).is_some() {
                    prop_assert_eq!(result, Ok(()));
                    model.settle(
                        |session, sub, _| session == s as SessionId && sub == id,
                        Where::Held,
                    );
                } else {
                    prop_assert_eq!(result, Err(BrokerError::UnknownSubscription(id)));
                }
            }
            Op::Publish(s, q) => {
                let publish = Publish {
                    headers: vec![],
                    body: "x".into(),
                    now_ms: 0,
                    ..Publish::default()
                };
                let to = Destination::Queue(queue_name(q));
                let result = broker
                    .publish(s as SessionId, &to, publish, &mut sink)
                    .map(|published| published.id);
                if model.held(q) >= MAX_QUEUE_DEPTH {
                    prop_assert_eq!(result, Err(BrokerError::QueueFull(queue_name(q))));
                } else {
                    let id = result.map_err(|e| TestCaseError::fail(format!("publish: {e}")))?;
                    prop_assert!(
                        !model.messages.contains_key(&id),
                        "message id {} reused",
                        id
                    );
                    model.messages.insert(id, (q, Where::Held));
                }
            }
            Op::Ack(s, pick) | Op::Nack(s, pick) => {
                let is_ack = matches!(op, Op::Ack(..));
                let session = s as SessionId;
                let unacked = model.unacked(session);
                let which = if unacked.is_empty() {
                    None
                } else {
                    Some(unacked[pick.index(unacked.len())].clone())
                };
                let ack_id = which.as_ref().map_or(u64::MAX, |(a, _)| *a);
                let reference = AckRef::AckId(ack_id);
                let result = if is_ack {
                    broker.ack(session, &reference, &mut sink)
                } else {
                    broker.nack(session, &reference, &mut sink)
                };
                match which {
                    None => {
                        prop_assert_eq!(result, Err(BrokerError::UnknownAck(ack_id.to_string())))
                    }
                    Some((ack, sub)) => {
                        prop_assert_eq!(result, Ok(()));
                        let cumulative = model.subs[s][&sub].1 == AckMode::Client;
                        let to = if is_ack { Where::Done } else { Where::Held };
                        model.settle(
                            |ses, su, a| {
                                ses == session && su == sub && (a == ack || (cumulative && a < ack))
                            },
                            to,
                        );
                    }
                }
            }
            Op::Reconnect(s) => {
                let session = s as SessionId;
                broker.disconnect(session, &mut sink);
                model.subs[s].clear();
                model.settle(|ses, _, _| ses == session, Where::Held);
                // Deliveries caused by the disconnect are checked before the session returns.
                for e in events.drain(..) {
                    model.apply(e)?;
                }
                broker.connect(session, user(s));
            }
        }
        for e in events {
            model.apply(e)?;
        }
        model.check(&broker)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn queue_messages_are_never_with_two_consumers(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// A fixed sequence that exercises pausing, QueueFull and redelivery on reconnect.
#[test]
fn a_fixed_sequence_satisfies_the_model() {
    let ops = vec![
        Op::Subscribe(0, 0, AckMode::Client),
        Op::Subscribe(1, 0, AckMode::ClientIndividual),
        Op::Publish(2, 0),
        Op::Publish(2, 0),
        Op::Publish(2, 0),
        Op::Publish(2, 0),
        Op::Publish(2, 0),
        Op::Reconnect(0),
        Op::Subscribe(2, 0, AckMode::Auto),
        Op::Publish(1, 0),
    ];
    run(ops).unwrap();
}
