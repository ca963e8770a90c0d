//! Publishing with the broker shared ([`Broker::publish_in_turn`]): a room numbered before
//! publishes in its turn and counts on from where the broker left it; anything a shared broker
//! cannot do is handed back untouched; two threads publishing to two rooms at once keep each
//! room in order.

use std::sync::Arc;

use bytes::Bytes;
use parley_stomp::broker::{
    AckMode, Broker, BrokerError, BrokerEvent, BrokerLimits, Delivery, Publish, SessionId, Shared,
    Turn,
};
use parley_stomp::budget::MemoryBudget;
use parley_stomp::destination::Destination;

const ALICE: SessionId = 1;
const BOB: SessionId = 2;
const CAROL: SessionId = 3;

fn topic(room: &str) -> Destination {
    Destination::Topic(room.to_owned())
}

fn msg(body: &str) -> Publish {
    Publish {
        body: Bytes::from(body.to_owned()),
        now_ms: 1_700_000_000_000,
        ..Publish::default()
    }
}

/// Alice and Bob connected, Bob subscribed to `lobby` (auto), one message published to it
/// with the broker alone (so the room is numbered).
fn lobby() -> Broker {
    let mut broker = Broker::new(BrokerLimits::default());
    broker.connect(ALICE, Arc::from("alice"));
    broker.connect(BOB, Arc::from("bob"));
    broker
        .subscribe(BOB, "s", &topic("lobby"), AckMode::Auto, &mut drop)
        .unwrap();
    broker
        .publish(ALICE, &topic("lobby"), msg("first"), &mut drop)
        .unwrap();
    broker
}

/// Publishes in `room`'s turn, returning the outcome and the events.
fn in_turn(broker: &Broker, room: &str, to: &str, publish: Publish) -> (Shared, Vec<BrokerEvent>) {
    let mut turn = broker.turn(room).expect("a numbered room has a turn");
    let mut events = Vec::new();
    let shared = broker.publish_in_turn(&mut turn, ALICE, &topic(to), publish, &mut |e| {
        events.push(e)
    });
    deliver(&mut turn, &mut |e| events.push(e));
    (shared, events)
}

/// Hands the turn's deliveries on as the events the broker held alone would have made.
fn deliver(turn: &mut Turn<'_>, events: &mut dyn FnMut(BrokerEvent)) {
    turn.deliver(&mut |session, subscription, messages| {
        for message in messages.iter() {
            events(BrokerEvent::Deliver(Delivery {
                session,
                subscription: subscription.clone(),
                ack: None,
                message: message.clone(),
            }));
        }
    });
}

#[test]
fn a_numbered_room_publishes_in_its_turn_and_counts_on() {
    let mut broker = lobby();
    let (shared, events) = in_turn(&broker, "lobby", "lobby", msg("second"));
    assert!(matches!(shared, Shared::Published(p) if p.id == 2 && p.stored));
    let [BrokerEvent::Store { room, id: 2, .. }, BrokerEvent::Deliver(delivery)] = &events[..]
    else {
        panic!("expected the message stored then delivered, got {events:?}");
    };
    assert_eq!(room, "lobby");
    assert_eq!(delivery.session, BOB);
    assert_eq!(delivery.message.header("message-id"), Some("2"));
    assert_eq!(delivery.message.header("sender"), Some("alice"));
    assert_eq!(&delivery.message.body()[..], b"second");
    // The broker alone counts on from the turn's number.
    let third = broker
        .publish(ALICE, &topic("lobby"), msg("third"), &mut drop)
        .unwrap();
    assert_eq!(third.id, 3);
    assert_eq!(broker.room_last_id("lobby"), 3);
}

#[test]
fn only_a_room_numbered_here_has_a_turn() {
    let mut broker = lobby();
    assert!(broker.turn("never-used").is_none());
    broker.seed_room("restored", 41);
    let mut turn = broker.turn("restored").expect("a room seeded from storage");
    let shared = broker.publish_in_turn(&mut turn, ALICE, &topic("restored"), msg("m"), &mut drop);
    assert!(matches!(shared, Shared::Published(p) if p.id == 42));
    drop(turn);
    // Cluster mode numbers rooms through the bus.
    broker.set_forwarding(true);
    assert!(broker.turn("lobby").is_none());
}

#[test]
fn what_a_shared_broker_cannot_do_is_handed_back_untouched() {
    let mut broker = lobby();
    broker.seed_room("other", 0);
    // Another room than the turn's.
    let (shared, events) = in_turn(&broker, "lobby", "other", msg("x"));
    assert!(matches!(shared, Shared::Exclusive(p) if &p.body[..] == b"x"));
    assert!(events.is_empty());
    // A side channel, a stream or a copy.
    assert!(matches!(
        in_turn(&broker, "lobby", "lobby.typing", msg("t")).0,
        Shared::Exclusive(_)
    ));
    let streamed = Publish {
        stream: Some("lobby".to_owned()),
        ..msg("s")
    };
    assert!(matches!(
        in_turn(&broker, "lobby", "lobby", streamed).0,
        Shared::Exclusive(_)
    ));
    // A subscriber who acknowledges is tracked per session: the broker alone.
    broker.connect(CAROL, Arc::from("carol"));
    broker
        .subscribe(CAROL, "c", &topic("lobby"), AckMode::Client, &mut drop)
        .unwrap();
    let (shared, events) = in_turn(&broker, "lobby", "lobby", msg("y"));
    assert!(matches!(shared, Shared::Exclusive(_)));
    assert!(events.is_empty());
    assert_eq!(broker.room_last_id("lobby"), 1, "nothing numbered");
    // Once Carol leaves, the turn publishes again.
    broker.unsubscribe(CAROL, "c", &mut drop).unwrap();
    assert!(
        matches!(in_turn(&broker, "lobby", "lobby", msg("z")).0, Shared::Published(p) if p.id == 2)
    );
}

#[test]
fn failing_storage_and_a_spent_budget_refuse_in_turn() {
    let mut broker = lobby();
    broker.set_storage_failing(true);
    let (shared, events) = in_turn(&broker, "lobby", "lobby", msg("x"));
    assert!(matches!(
        shared,
        Shared::Refused(BrokerError::StorageUnavailable)
    ));
    assert!(events.is_empty());
    broker.set_storage_failing(false);
    let budget = MemoryBudget::new(1);
    let _spent = budget.try_charge(1).unwrap();
    broker.set_budget(budget);
    let (shared, _) = in_turn(&broker, "lobby", "lobby", msg("x"));
    assert!(matches!(shared, Shared::Refused(BrokerError::Busy)));
    assert_eq!(broker.room_last_id("lobby"), 1);
}

#[test]
fn two_threads_in_two_rooms_at_once_keep_each_room_in_order() {
    const EACH: u64 = 2_000;
    let mut broker = Broker::new(BrokerLimits::default());
    broker.connect(ALICE, Arc::from("alice"));
    broker.connect(BOB, Arc::from("bob"));
    for room in ["a", "b"] {
        broker
            .subscribe(BOB, room, &topic(room), AckMode::Auto, &mut drop)
            .unwrap();
        broker.seed_room(room, 0);
    }
    let broker = &broker;
    let received: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|room| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for n in 0..EACH {
                        let mut turn = broker.turn(room).unwrap();
                        let shared = broker.publish_in_turn(
                            &mut turn,
                            ALICE,
                            &topic(room),
                            msg(&n.to_string()),
                            &mut drop,
                        );
                        assert!(matches!(shared, Shared::Published(_)));
                        deliver(&mut turn, &mut |e| {
                            if let BrokerEvent::Deliver(d) = e {
                                ids.push(d.message.header("message-id").unwrap().parse().unwrap());
                            }
                        });
                    }
                    ids
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for ids in received {
        assert_eq!(ids, (1..=EACH).collect::<Vec<_>>());
    }
    assert_eq!(broker.room_last_id("a"), EACH);
    assert_eq!(broker.room_last_id("b"), EACH);
}

#[test]
fn a_turn_hands_each_subscription_its_messages_as_one_run() {
    let mut broker = lobby();
    broker.connect(CAROL, Arc::from("carol"));
    broker
        .subscribe(CAROL, "c", &topic("lobby"), AckMode::Auto, &mut drop)
        .unwrap();
    let mut turn = broker.turn("lobby").unwrap();
    for body in ["a", "b", "c"] {
        let shared =
            broker.publish_in_turn(&mut turn, ALICE, &topic("lobby"), msg(body), &mut drop);
        assert!(matches!(shared, Shared::Published(_)));
    }
    assert_eq!(turn.waiting(), 3);
    let mut runs = Vec::new();
    turn.deliver(&mut |session, subscription, messages| {
        let ids: Vec<_> = messages
            .iter()
            .map(|m| m.header("message-id").unwrap().to_owned())
            .collect();
        runs.push((session, subscription.to_string(), ids));
    });
    runs.sort();
    let ids = || vec!["2".to_owned(), "3".to_owned(), "4".to_owned()];
    assert_eq!(
        runs,
        [(BOB, "s".to_owned(), ids()), (CAROL, "c".to_owned(), ids())]
    );
    // Handed on once: a second call has nothing.
    assert_eq!(turn.waiting(), 0);
    turn.deliver(&mut |_, _, _| panic!("delivered twice"));
}
