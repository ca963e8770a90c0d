//! The broker's routing, acknowledgement and flow-control rules, through its public API only.
//!
//! Deliveries are checked the way a client would see them: the per-subscriber prefix and the
//! shared part are concatenated and decoded with [`Decoder`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parley_stomp::broker::{
    AckMode, AckRef, Broker, BrokerError, BrokerEvent, BrokerLimits, Delivery, Publish, SessionId,
};
use parley_stomp::destination::Destination;
use parley_stomp::{Command, Decoder, Frame, Limits, SharedMessage, Version};

const ALICE: SessionId = 1;
const BOB: SessionId = 2;
const CAROL: SessionId = 3;

fn dest(s: &str) -> Destination {
    Destination::parse(s).unwrap()
}

fn msg(body: &str) -> Publish {
    Publish {
        headers: Vec::new(),
        body: Bytes::from(body.to_owned()),
        now_ms: 1_700_000_000_000,
        ..Publish::default()
    }
}

/// Records an event; presence (Joined/Left) and storage (Store) are tested on their own and kept
/// out of the way here.
fn keep(events: &mut Vec<BrokerEvent>, e: BrokerEvent) {
    if !matches!(
        e,
        BrokerEvent::Joined { .. } | BrokerEvent::Left { .. } | BrokerEvent::Store { .. }
    ) {
        events.push(e);
    }
}

/// A broker plus the events its operations reported, in order.
struct Harness {
    broker: Broker,
    events: Vec<BrokerEvent>,
}

impl Harness {
    fn new() -> Self {
        Self::with_limits(BrokerLimits::default())
    }

    fn with_limits(limits: BrokerLimits) -> Self {
        Self {
            broker: Broker::new(limits),
            events: Vec::new(),
        }
    }

    /// Connects each `(session, user)`.
    fn connect(&mut self, sessions: &[(SessionId, &str)]) {
        for &(id, user) in sessions {
            self.broker.connect(id, Arc::from(user));
        }
    }

    fn subscribe(
        &mut self,
        session: SessionId,
        id: &str,
        to: &str,
        ack: AckMode,
    ) -> Result<(), BrokerError> {
        let events = &mut self.events;
        self.broker
            .subscribe(session, id, &dest(to), ack, &mut |e| keep(events, e))
    }

    fn unsubscribe(&mut self, session: SessionId, id: &str) -> Result<(), BrokerError> {
        let events = &mut self.events;
        self.broker
            .unsubscribe(session, id, &mut |e| keep(events, e))
    }

    fn publish(&mut self, from: SessionId, to: &str, body: &str) -> Result<u64, BrokerError> {
        self.publish_with(from, to, msg(body))
    }

    fn publish_with(
        &mut self,
        from: SessionId,
        to: &str,
        publish: Publish,
    ) -> Result<u64, BrokerError> {
        let events = &mut self.events;
        self.broker
            .publish(from, &dest(to), publish, &mut |e| keep(events, e))
            .map(|published| published.id)
    }

    fn ack(&mut self, session: SessionId, ack: u64) -> Result<(), BrokerError> {
        let events = &mut self.events;
        self.broker
            .ack(session, &AckRef::AckId(ack), &mut |e| keep(events, e))
    }

    fn nack(&mut self, session: SessionId, ack: u64) -> Result<(), BrokerError> {
        let events = &mut self.events;
        self.broker
            .nack(session, &AckRef::AckId(ack), &mut |e| keep(events, e))
    }

    fn disconnect(&mut self, session: SessionId) {
        let events = &mut self.events;
        self.broker.disconnect(session, &mut |e| keep(events, e));
    }

    /// Takes every event reported so far.
    fn take(&mut self) -> Vec<BrokerEvent> {
        std::mem::take(&mut self.events)
    }

    /// Takes the events, which must all be deliveries.
    fn deliveries(&mut self) -> Vec<Delivery> {
        self.take()
            .into_iter()
            .map(|e| match e {
                BrokerEvent::Deliver(d) => d,
                other => panic!("expected only deliveries, got {other:?}"),
            })
            .collect()
    }
}

/// What a 1.2 client receives for `d`.
fn wire(d: &Delivery) -> Frame {
    wire_in(d, Version::V1_2)
}

fn wire_in(d: &Delivery, version: Version) -> Frame {
    let ack = d.ack.map(|a| a.to_string());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&SharedMessage::prefix(
        &d.subscription,
        ack.as_deref(),
        version,
    ));
    buf.extend_from_slice(d.message.shared(version));
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(version);
    let frame = decoder.decode(&mut buf).unwrap().expect("a complete frame");
    assert!(buf.is_empty(), "one delivery is exactly one frame");
    assert_eq!(frame.command, Command::Message);
    frame
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body().to_vec()).unwrap()
}

fn message_id(d: &Delivery) -> u64 {
    wire(d).get("message-id").unwrap().parse().unwrap()
}

/// `(session, body)` of each delivery, in order.
fn who_got_what(ds: &[Delivery]) -> Vec<(SessionId, String)> {
    ds.iter().map(|d| (d.session, body(d))).collect()
}

fn bodies_of(ds: &[Delivery], session: SessionId) -> Vec<String> {
    ds.iter()
        .filter(|d| d.session == session)
        .map(body)
        .collect()
}

#[test]
fn topic_fans_out_to_every_subscriber_in_the_same_order() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "a", "/topic/chat", AckMode::Auto)
        .unwrap();
    h.subscribe(BOB, "b1", "/topic/chat", AckMode::Auto)
        .unwrap();
    // A second subscription of the same session gets its own copy.
    h.subscribe(BOB, "b2", "/topic/chat", AckMode::Auto)
        .unwrap();
    h.subscribe(CAROL, "other", "/topic/elsewhere", AckMode::Auto)
        .unwrap();
    assert!(
        h.take().is_empty(),
        "subscribing to a topic delivers nothing"
    );

    let sent: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let mut ids = Vec::new();
    for (i, m) in sent.iter().enumerate() {
        // Publishers alternate; the publisher is a subscriber like any other.
        let from = if i % 2 == 0 { CAROL } else { ALICE };
        ids.push(h.publish(from, "/topic/chat", m).unwrap());
    }
    let ds = h.deliveries();
    assert_eq!(ds.len(), 15, "three subscriptions x five messages");
    for sub in ["a", "b1", "b2"] {
        let got: Vec<&Delivery> = ds.iter().filter(|d| &*d.subscription == sub).collect();
        let got_bodies: Vec<String> = got.iter().map(|d| body(d)).collect();
        assert_eq!(
            got_bodies, sent,
            "subscription {sub} sees every message, in publish order"
        );
        let got_ids: Vec<u64> = got.iter().map(|d| message_id(d)).collect();
        assert_eq!(got_ids, ids);
        for d in got {
            let f = wire(d);
            assert_eq!(f.get("destination"), Some("/topic/chat"));
            assert_eq!(f.get("subscription"), Some(sub));
            assert_eq!(f.get("ack"), None, "auto mode has no ack header");
            assert!(d.ack.is_none());
        }
    }
    assert!(
        ds.iter().all(|d| d.session != CAROL),
        "carol only listens to another topic"
    );
    // Every subscriber of one publish shares one encoded message.
    assert!(Arc::ptr_eq(&ds[0].message, &ds[1].message));
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "message ids are unique: {ids:?}");
}

#[test]
fn queue_is_round_robin_and_exactly_once() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "qa", "/queue/jobs", AckMode::Auto)
        .unwrap();
    h.subscribe(BOB, "qb", "/queue/jobs", AckMode::Auto)
        .unwrap();
    h.subscribe(CAROL, "qc", "/queue/jobs", AckMode::Auto)
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(h.publish(ALICE, "/queue/jobs", &format!("job{i}")).unwrap());
    }
    let ds = h.deliveries();
    assert_eq!(ds.len(), 9, "each message goes to exactly one consumer");
    let order: Vec<SessionId> = ds.iter().map(|d| d.session).collect();
    assert_eq!(
        order,
        [ALICE, BOB, CAROL, ALICE, BOB, CAROL, ALICE, BOB, CAROL],
        "round-robin"
    );
    let got_ids: Vec<u64> = ds.iter().map(message_id).collect();
    assert_eq!(got_ids, ids, "in publish order, no duplicates");
    for d in &ds {
        assert_eq!(wire(d).get("destination"), Some("/queue/jobs"));
    }
    assert_eq!(h.broker.queue_depth("jobs"), 0);
}

#[test]
fn queue_holds_messages_until_a_consumer_subscribes() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    for i in 0..3 {
        h.publish(ALICE, "/queue/inbox", &format!("m{i}")).unwrap();
    }
    assert!(h.take().is_empty());
    assert_eq!(h.broker.queue_depth("inbox"), 3);
    assert_eq!(h.broker.queue_depth("other"), 0);

    h.subscribe(BOB, "s", "/queue/inbox", AckMode::Auto)
        .unwrap();
    let ds = h.deliveries();
    assert_eq!(
        who_got_what(&ds),
        [(BOB, "m0".into()), (BOB, "m1".into()), (BOB, "m2".into())]
    );
    assert_eq!(h.broker.queue_depth("inbox"), 0);

    // Later messages go straight through.
    h.publish(ALICE, "/queue/inbox", "m3").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "m3".into())]);
}

#[test]
fn queue_depth_is_bounded() {
    let mut limits = BrokerLimits::default();
    limits.max_queue_depth = 2;
    let mut h = Harness::with_limits(limits);
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.publish(ALICE, "/queue/jobs", "1").unwrap();
    h.publish(ALICE, "/queue/jobs", "2").unwrap();
    assert_eq!(
        h.publish(ALICE, "/queue/jobs", "3"),
        Err(BrokerError::QueueFull("jobs".into()))
    );
    assert_eq!(
        h.broker.queue_depth("jobs"),
        2,
        "the refused message is not held"
    );
    // Other queues are not affected.
    h.publish(ALICE, "/queue/other", "x").unwrap();

    h.subscribe(BOB, "s", "/queue/jobs", AckMode::Auto).unwrap();
    assert_eq!(
        bodies_of(&h.deliveries(), BOB),
        ["1", "2"],
        "the refused message never arrives"
    );
    // Drained: there is room again.
    h.publish(ALICE, "/queue/jobs", "4").unwrap();
    assert_eq!(bodies_of(&h.deliveries(), BOB), ["4"]);
}

#[test]
fn user_destinations_reach_every_session_of_that_user_and_nobody_else() {
    const ALICE2: SessionId = 11;
    const EVE: SessionId = 4;
    let mut h = Harness::new();
    h.connect(&[
        (ALICE, "alice"),
        (ALICE2, "alice"),
        (BOB, "bob"),
        (CAROL, "carol"),
        (EVE, "eve"),
    ]);
    h.subscribe(ALICE, "in", "/user/queue/inbox", AckMode::Auto)
        .unwrap();
    h.subscribe(ALICE2, "in2", "/user/queue/inbox", AckMode::Auto)
        .unwrap();
    h.subscribe(BOB, "in", "/user/queue/inbox", AckMode::Auto)
        .unwrap();
    // Same queue name, but a regular queue / a different user queue.
    h.subscribe(EVE, "q", "/queue/inbox", AckMode::Auto)
        .unwrap();
    h.subscribe(ALICE, "other", "/user/queue/other", AckMode::Auto)
        .unwrap();

    h.publish(CAROL, "/user/alice/queue/inbox", "hi alice")
        .unwrap();
    let ds = h.deliveries();
    let mut got: Vec<(SessionId, &str)> =
        ds.iter().map(|d| (d.session, &*d.subscription)).collect();
    got.sort_unstable();
    assert_eq!(got, [(ALICE, "in"), (ALICE2, "in2")]);
    for d in &ds {
        let f = wire(d);
        assert_eq!(
            f.get("destination"),
            Some("/user/queue/inbox"),
            "shown as the subscriber's own queue"
        );
        assert_eq!(f.get("sender"), Some("carol"));
        assert_eq!(&f.body[..], b"hi alice");
    }

    h.publish(ALICE, "/user/bob/queue/inbox", "hi bob").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "hi bob".into())]);

    // A user with no subscribed session: nothing is delivered, nothing is held in /queue/inbox.
    h.publish(ALICE, "/user/dave/queue/inbox", "hi dave")
        .unwrap();
    assert!(h.take().is_empty());
    assert_eq!(h.broker.queue_depth("inbox"), 0);

    // Sending to `/user/queue/...` names nobody.
    assert!(matches!(
        h.publish(ALICE, "/user/queue/inbox", "to whom?"),
        Err(BrokerError::WrongUserDestination(_))
    ));
    assert!(h.take().is_empty());
}

#[test]
fn subscribing_to_a_named_user_queue_is_refused() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    // Neither someone else's queue nor one's own, spelled with the name.
    for to in ["/user/alice/queue/x", "/user/bob/queue/x"] {
        assert!(
            matches!(
                h.subscribe(BOB, "s", to, AckMode::Auto),
                Err(BrokerError::WrongUserDestination(_))
            ),
            "{to}"
        );
    }
    h.publish(ALICE, "/user/alice/queue/x", "secret").unwrap();
    h.publish(ALICE, "/user/bob/queue/x", "for bob").unwrap();
    assert!(
        h.take().is_empty(),
        "the refused subscriptions do not exist"
    );
    // The id is still free.
    h.subscribe(BOB, "s", "/user/queue/x", AckMode::Auto)
        .unwrap();
}

#[test]
fn subscription_ids_are_unique_per_session_and_bounded() {
    let mut limits = BrokerLimits::default();
    limits.max_subscriptions = 2;
    let mut h = Harness::with_limits(limits);
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(ALICE, "s", "/topic/a", AckMode::Auto).unwrap();
    assert_eq!(
        h.subscribe(ALICE, "s", "/topic/b", AckMode::Auto),
        Err(BrokerError::DuplicateSubscription("s".into()))
    );
    h.subscribe(BOB, "s", "/topic/a", AckMode::Auto).unwrap();
    h.subscribe(ALICE, "t", "/topic/b", AckMode::Auto).unwrap();
    assert_eq!(
        h.subscribe(ALICE, "u", "/topic/c", AckMode::Auto),
        Err(BrokerError::TooManySubscriptions(2))
    );
    assert_eq!(
        h.unsubscribe(ALICE, "nope"),
        Err(BrokerError::UnknownSubscription("nope".into()))
    );
    assert_eq!(
        h.subscribe(99, "s", "/topic/a", AckMode::Auto),
        Err(BrokerError::UnknownSession)
    );
    assert_eq!(
        h.publish(99, "/topic/a", "x"),
        Err(BrokerError::UnknownSession)
    );
}

#[test]
fn client_ack_is_cumulative_per_subscription() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "sa", "/queue/a", AckMode::Client)
        .unwrap();
    h.subscribe(ALICE, "sb", "/queue/b", AckMode::Client)
        .unwrap();
    for m in ["a1", "b1", "a2", "b2", "a3"] {
        h.publish(BOB, &format!("/queue/{}", &m[..1]), m).unwrap();
    }
    let ds = h.deliveries();
    assert_eq!(bodies_of(&ds, ALICE), ["a1", "b1", "a2", "b2", "a3"]);
    let ack_of = |b: &str| {
        ds.iter()
            .find(|d| body(d) == b)
            .unwrap()
            .ack
            .expect("client mode has ack ids")
    };
    for d in &ds {
        assert_eq!(
            wire(d).get("ack"),
            Some(d.ack.unwrap().to_string().as_str())
        );
    }

    // Acknowledging a2 settles a1 and a2, not b1 (another subscription) nor a3 (later).
    h.ack(ALICE, ack_of("a2")).unwrap();
    assert!(h.take().is_empty());
    assert_eq!(
        h.ack(ALICE, ack_of("a1")),
        Err(BrokerError::UnknownAck(ack_of("a1").to_string()))
    );
    assert_eq!(
        h.ack(ALICE, ack_of("a2")),
        Err(BrokerError::UnknownAck(ack_of("a2").to_string()))
    );

    // What is still unacknowledged comes back when alice leaves: a3, b1, b2.
    h.subscribe(CAROL, "ca", "/queue/a", AckMode::Auto).unwrap();
    h.subscribe(CAROL, "cb", "/queue/b", AckMode::Auto).unwrap();
    assert!(h.take().is_empty());
    h.disconnect(ALICE);
    let mut redelivered = bodies_of(&h.deliveries(), CAROL);
    redelivered.sort_unstable();
    assert_eq!(redelivered, ["a3", "b1", "b2"]);
}

#[test]
fn client_ack_by_message_id_is_cumulative_too() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(ALICE, "s", "/topic/t", AckMode::Client)
        .unwrap();
    let ids: Vec<u64> = (0..3)
        .map(|i| h.publish(BOB, "/topic/t", &format!("{i}")).unwrap())
        .collect();
    h.take();
    let by_id = |id: u64, sub: Option<&str>| AckRef::MessageId {
        message_id: id,
        subscription: sub.map(str::to_owned),
    };
    let mut events = Vec::new();
    assert!(matches!(
        h.broker
            .ack(ALICE, &by_id(ids[1], Some("other")), &mut |e| events
                .push(e)),
        Err(BrokerError::UnknownAck(_))
    ));
    h.broker
        .ack(ALICE, &by_id(ids[1], Some("s")), &mut |e| {
            keep(&mut events, e)
        })
        .unwrap();
    assert!(matches!(
        h.broker
            .ack(ALICE, &by_id(ids[0], None), &mut |e| keep(&mut events, e)),
        Err(BrokerError::UnknownAck(_))
    ));
    h.broker
        .ack(ALICE, &by_id(ids[2], None), &mut |e| keep(&mut events, e))
        .unwrap();
    assert!(events.is_empty());
}

#[test]
fn client_individual_ack_settles_exactly_one_message() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    for m in ["m1", "m2", "m3"] {
        h.publish(BOB, "/queue/jobs", m).unwrap();
    }
    let ds = h.deliveries();
    assert_eq!(bodies_of(&ds, ALICE), ["m1", "m2", "m3"]);
    let acks: Vec<u64> = ds.iter().map(|d| d.ack.unwrap()).collect();

    h.ack(ALICE, acks[1]).unwrap();
    assert_eq!(
        h.ack(ALICE, acks[1]),
        Err(BrokerError::UnknownAck(acks[1].to_string())),
        "already settled"
    );
    // Bob cannot settle alice's deliveries.
    assert!(matches!(
        h.ack(BOB, acks[0]),
        Err(BrokerError::UnknownAck(_))
    ));

    h.subscribe(CAROL, "c", "/queue/jobs", AckMode::Auto)
        .unwrap();
    assert!(h.take().is_empty());
    h.disconnect(ALICE);
    assert_eq!(
        bodies_of(&h.deliveries(), CAROL),
        ["m1", "m3"],
        "only the unsettled ones, in order"
    );
}

#[test]
fn nack_redelivers_a_queue_message_to_the_other_consumer() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    let id = h.publish(CAROL, "/queue/jobs", "job").unwrap();
    let first = h.deliveries();
    assert_eq!(who_got_what(&first), [(ALICE, "job".into())]);

    h.nack(ALICE, first[0].ack.unwrap()).unwrap();
    let again = h.deliveries();
    assert_eq!(who_got_what(&again), [(BOB, "job".into())]);
    assert_eq!(message_id(&again[0]), id, "the same message");
    assert_eq!(
        h.nack(ALICE, first[0].ack.unwrap()),
        Err(BrokerError::UnknownAck(first[0].ack.unwrap().to_string()))
    );

    // A sole consumer gets it back.
    h.unsubscribe(ALICE, "s").unwrap();
    h.nack(BOB, again[0].ack.unwrap()).unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "job".into())]);
}

#[test]
fn nack_prefers_another_consumer_even_when_round_robin_points_back() {
    // Bob subscribes after alice got the message; he is idle with room to spare.
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    h.publish(CAROL, "/queue/jobs", "one").unwrap();
    let ds = h.deliveries();
    assert_eq!(who_got_what(&ds), [(ALICE, "one".into())]);
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    h.nack(ALICE, ds[0].ack.unwrap()).unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "one".into())]);

    // Both subscribed from the start, but round-robin happens to point back at alice.
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    h.publish(CAROL, "/queue/jobs", "one").unwrap();
    h.publish(CAROL, "/queue/jobs", "two").unwrap();
    let ds = h.deliveries();
    assert_eq!(
        who_got_what(&ds),
        [(ALICE, "one".into()), (BOB, "two".into())]
    );
    // Bob has room (max_unacked is 1000), so alice's rejected message should go to him.
    h.nack(ALICE, ds[0].ack.unwrap()).unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "one".into())]);
}

#[test]
fn nack_of_a_topic_message_drops_it() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(ALICE, "s", "/topic/t", AckMode::ClientIndividual)
        .unwrap();
    h.subscribe(BOB, "s", "/topic/t", AckMode::ClientIndividual)
        .unwrap();
    h.publish(BOB, "/topic/t", "x").unwrap();
    let ds = h.deliveries();
    let alices = ds.iter().find(|d| d.session == ALICE).unwrap();
    h.nack(ALICE, alices.ack.unwrap()).unwrap();
    assert!(h.take().is_empty());
    assert_eq!(
        h.ack(ALICE, alices.ack.unwrap()),
        Err(BrokerError::UnknownAck(alices.ack.unwrap().to_string()))
    );
}

#[test]
fn disconnect_redelivers_unacked_queue_messages() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::Client)
        .unwrap();
    for m in ["m1", "m2"] {
        h.publish(CAROL, "/queue/jobs", m).unwrap();
    }
    assert_eq!(bodies_of(&h.deliveries(), ALICE), ["m1", "m2"]);

    // Nobody else yet: the messages are held again.
    h.disconnect(ALICE);
    assert!(h.take().is_empty());
    assert_eq!(h.broker.queue_depth("jobs"), 2);
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::Auto).unwrap();
    assert_eq!(
        bodies_of(&h.deliveries(), BOB),
        ["m1", "m2"],
        "original order"
    );

    // With another consumer present they go straight to it.
    h.broker.connect(ALICE, "alice".into());
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::Client)
        .unwrap();
    h.unsubscribe(BOB, "s").unwrap();
    h.publish(CAROL, "/queue/jobs", "m3").unwrap();
    assert_eq!(bodies_of(&h.deliveries(), ALICE), ["m3"]);
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::Auto).unwrap();
    h.disconnect(ALICE);
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "m3".into())]);
    assert_eq!(h.broker.queue_depth("jobs"), 0);
    // The disconnected session is gone.
    assert_eq!(
        h.publish(ALICE, "/queue/jobs", "x"),
        Err(BrokerError::UnknownSession)
    );
}

/// Alice has a client-mode and an auto-mode subscription on the same queue. When she
/// disconnects, her unacknowledged message must go to bob — not to her own auto subscription,
/// which is being torn down in the same call (that would hand it to a closing connection and,
/// being auto, count it as delivered: lost).
///
/// Which subscription the broker tears down first follows `HashMap` order, which differs between
/// broker instances, so the scenario is repeated on fresh brokers.
#[test]
fn disconnect_never_redelivers_to_the_disconnecting_session() {
    for round in 0..64 {
        let mut h = Harness::new();
        h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
        h.subscribe(ALICE, "client", "/queue/jobs", AckMode::Client)
            .unwrap();
        h.subscribe(ALICE, "auto", "/queue/jobs", AckMode::Auto)
            .unwrap();
        h.subscribe(BOB, "s", "/queue/jobs", AckMode::Auto).unwrap();
        for m in ["m1", "m2", "m3"] {
            h.publish(CAROL, "/queue/jobs", m).unwrap();
        }
        let ds = h.deliveries();
        assert_eq!(
            ds.iter()
                .map(|d| (d.session, &*d.subscription))
                .collect::<Vec<_>>(),
            [(ALICE, "client"), (ALICE, "auto"), (BOB, "s")]
        );
        h.disconnect(ALICE);
        assert_eq!(
            who_got_what(&h.deliveries()),
            [(BOB, "m1".into())],
            "round {round}"
        );
    }
}

#[test]
fn unsubscribe_stops_delivery() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(ALICE, "t", "/topic/t", AckMode::Auto).unwrap();
    h.subscribe(ALICE, "q", "/queue/q", AckMode::ClientIndividual)
        .unwrap();
    h.subscribe(BOB, "t", "/topic/t", AckMode::Auto).unwrap();
    h.publish(BOB, "/topic/t", "t1").unwrap();
    h.publish(BOB, "/queue/q", "q1").unwrap();
    assert_eq!(bodies_of(&h.deliveries(), ALICE), ["t1", "q1"]);

    h.unsubscribe(ALICE, "t").unwrap();
    h.publish(BOB, "/topic/t", "t2").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "t2".into())]);

    // Unsubscribing a queue returns its unacked messages; new ones are held.
    h.unsubscribe(ALICE, "q").unwrap();
    assert!(h.take().is_empty());
    assert_eq!(h.broker.queue_depth("q"), 1);
    h.publish(BOB, "/queue/q", "q2").unwrap();
    assert!(h.take().is_empty());
    assert_eq!(h.broker.queue_depth("q"), 2);
    assert_eq!(
        h.unsubscribe(ALICE, "q"),
        Err(BrokerError::UnknownSubscription("q".into()))
    );

    // The id can be reused, for another destination.
    h.subscribe(ALICE, "q", "/queue/other", AckMode::Auto)
        .unwrap();
    assert!(h.take().is_empty());
    h.subscribe(BOB, "q", "/queue/q", AckMode::Auto).unwrap();
    assert_eq!(bodies_of(&h.deliveries(), BOB), ["q1", "q2"]);
}

#[test]
fn topic_subscriber_past_max_unacked_is_evicted() {
    let mut limits = BrokerLimits::default();
    limits.max_unacked = 2;
    for mode in [AckMode::Client, AckMode::ClientIndividual] {
        let mut h = Harness::with_limits(limits.clone());
        h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
        h.subscribe(ALICE, "slow", "/topic/t", mode).unwrap();
        h.subscribe(BOB, "fast", "/topic/t", AckMode::Auto).unwrap();
        h.publish(BOB, "/topic/t", "1").unwrap();
        h.publish(BOB, "/topic/t", "2").unwrap();
        let ds = h.deliveries();
        assert_eq!(
            bodies_of(&ds, ALICE),
            ["1", "2"],
            "{mode:?}: up to the limit"
        );
        let alice_acks: Vec<u64> = ds
            .iter()
            .filter(|d| d.session == ALICE)
            .map(|d| d.ack.unwrap())
            .collect();

        h.publish(BOB, "/topic/t", "3").unwrap();
        let events = h.take();
        let evicted: Vec<SessionId> = events
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::Evict { session, reason } => {
                    assert!(!reason.is_empty());
                    Some(*session)
                }
                _ => None,
            })
            .collect();
        assert_eq!(evicted, [ALICE], "{mode:?}");
        let delivered: Vec<(SessionId, String)> = events
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::Deliver(d) => Some((d.session, body(d))),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered,
            [(BOB, "3".into())],
            "{mode:?}: the evicted session gets no more, others do"
        );

        // Acknowledging makes room again: no eviction.
        h.ack(ALICE, alice_acks[1]).unwrap();
        if mode == AckMode::ClientIndividual {
            h.ack(ALICE, alice_acks[0]).unwrap();
        }
        h.publish(BOB, "/topic/t", "4").unwrap();
        let ds = h.deliveries();
        assert_eq!(bodies_of(&ds, ALICE), ["4"], "{mode:?}");
    }
}

#[test]
fn queue_stops_dispatching_to_a_consumer_at_max_unacked() {
    let mut limits = BrokerLimits::default();
    limits.max_unacked = 2;
    let mut h = Harness::with_limits(limits);
    h.connect(&[(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]);
    h.subscribe(ALICE, "s", "/queue/jobs", AckMode::ClientIndividual)
        .unwrap();
    for i in 1..=4 {
        h.publish(CAROL, "/queue/jobs", &i.to_string()).unwrap();
    }
    let ds = h.deliveries(); // never an eviction for queues
    assert_eq!(bodies_of(&ds, ALICE), ["1", "2"]);
    assert_eq!(h.broker.queue_depth("jobs"), 2);

    h.ack(ALICE, ds[0].ack.unwrap()).unwrap();
    let more = h.deliveries();
    assert_eq!(
        bodies_of(&more, ALICE),
        ["3"],
        "one slot freed, one message"
    );
    assert_eq!(h.broker.queue_depth("jobs"), 1);

    // A consumer with room takes the rest while alice is full.
    h.subscribe(BOB, "s", "/queue/jobs", AckMode::Client)
        .unwrap();
    assert_eq!(bodies_of(&h.deliveries(), BOB), ["4"]);
    h.publish(CAROL, "/queue/jobs", "5").unwrap();
    h.publish(CAROL, "/queue/jobs", "6").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "5".into())]);
    assert_eq!(h.broker.queue_depth("jobs"), 1);
    // Auto consumers are never paused.
    h.subscribe(CAROL, "s", "/queue/jobs", AckMode::Auto)
        .unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(CAROL, "6".into())]);
    for i in 7..=9 {
        h.publish(CAROL, "/queue/jobs", &i.to_string()).unwrap();
    }
    assert_eq!(bodies_of(&h.deliveries(), CAROL), ["7", "8", "9"]);
}

#[test]
fn broker_headers_cannot_be_forged() {
    let mut h = Harness::new();
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(BOB, "s", "/topic/t", AckMode::Client).unwrap();
    let forged = Publish {
        headers: vec![
            ("sender".into(), "mallory".into()),
            ("message-id".into(), "999".into()),
            ("timestamp".into(), "1".into()),
            ("destination".into(), "/topic/elsewhere".into()),
            ("content-type".into(), "text/plain".into()),
            ("x-custom".into(), "kept".into()),
        ],
        body: Bytes::from_static(b"hello"),
        now_ms: 42,
        ..Publish::default()
    };
    let id = h.publish_with(ALICE, "/topic/t", forged).unwrap();
    let ds = h.deliveries();
    assert_eq!(ds.len(), 1);
    for version in Version::ALL {
        let f = wire_in(&ds[0], version);
        assert_eq!(f.get("sender"), Some("alice"), "{version:?}");
        assert_eq!(f.get("message-id"), Some(id.to_string().as_str()));
        assert_eq!(f.get("timestamp"), Some("42"));
        assert_eq!(f.get("destination"), Some("/topic/t"));
        assert_eq!(f.get("subscription"), Some("s"));
        assert_eq!(f.get("content-type"), Some("text/plain"));
        assert_eq!(f.get("x-custom"), Some("kept"));
        assert_eq!(f.get("content-length"), Some("5"));
        assert_eq!(&f.body[..], b"hello");
    }
}

/// Presence: a user joins a topic with their first subscription and leaves with their last, so
/// several tabs are one member; queues have no presence.
#[test]
fn presence_counts_users_not_sessions() {
    let mut broker = Broker::new(BrokerLimits::default());
    let mut events = Vec::new();
    broker.connect(1, "alice".into());
    broker.connect(2, "alice".into());
    broker.connect(3, "bob".into());
    let general = dest("/topic/general");
    let mut push = |e: BrokerEvent| events.push(e);
    broker
        .subscribe(1, "a", &general, AckMode::Auto, &mut push)
        .unwrap();
    broker
        .subscribe(2, "a", &general, AckMode::Auto, &mut push)
        .unwrap();
    broker
        .subscribe(3, "b", &general, AckMode::Auto, &mut push)
        .unwrap();
    broker
        .subscribe(3, "q", &dest("/queue/jobs"), AckMode::Auto, &mut push)
        .unwrap();
    let members: Vec<String> = broker
        .members(&general)
        .iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    broker.unsubscribe(1, "a", &mut push).unwrap();
    broker.disconnect(3, &mut push);
    broker.disconnect(2, &mut push);
    let seen: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::Joined { topic, user, .. } => Some(format!("+{user}@{topic}")),
            BrokerEvent::Left { topic, user, .. } => Some(format!("-{user}@{topic}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        [
            "+alice@/topic/general",
            "+bob@/topic/general",
            "-bob@/topic/general",
            "-alice@/topic/general"
        ]
    );
    assert!(broker.members(&general).is_empty());
}

/// Room topics (no dot) are numbered per room, consecutively, and handed to storage with the
/// sender's receipt; side channels and queues are not.
#[test]
fn room_messages_are_numbered_per_room_and_stored() {
    let mut broker = Broker::new(BrokerLimits::default());
    broker.connect(1, "alice".into());
    broker.seed_room("general", 41);
    let mut stored = Vec::new();
    let mut sink = |e: BrokerEvent| {
        if let BrokerEvent::Store {
            room, id, receipt, ..
        } = e
        {
            stored.push((room, id, receipt.is_some()));
        }
    };
    let receipt = parley_stomp::broker::Receipt(Arc::new(|id| Bytes::from(id.to_string())));
    let with_receipt = Publish {
        receipt: Some(receipt),
        ..msg("a")
    };
    let p = broker
        .publish(1, &dest("/topic/general"), with_receipt, &mut sink)
        .unwrap();
    assert_eq!((p.id, p.stored), (42, true));
    assert_eq!(
        broker
            .publish(1, &dest("/topic/other"), msg("b"), &mut sink)
            .unwrap()
            .id,
        1
    );
    assert!(
        !broker
            .publish(1, &dest("/topic/general.typing"), msg(""), &mut sink)
            .unwrap()
            .stored
    );
    assert!(
        !broker
            .publish(1, &dest("/queue/jobs"), msg("q"), &mut sink)
            .unwrap()
            .stored
    );
    assert_eq!(
        broker
            .publish(1, &dest("/topic/general"), msg("c"), &mut sink)
            .unwrap()
            .id,
        43
    );
    assert_eq!(
        stored,
        [
            ("general".to_owned(), 42, true),
            ("other".to_owned(), 1, false),
            ("general".to_owned(), 43, false)
        ]
    );
    assert_eq!(broker.room_last_id("general"), 43);
}

/// Losing access to a room ends a user's subscriptions to it and its side channels, on every
/// session of that user, and nothing else.
#[test]
fn revoke_room_ends_the_users_room_subscriptions_only() {
    let mut h = Harness::new();
    h.connect(&[(1, "bob"), (2, "bob"), (3, "alice")]);
    for (session, id, to) in [
        (1, "r", "/topic/plans"),
        (1, "t", "/topic/plans.typing"),
        (1, "o", "/topic/other"),
        (1, "l", "/topic/plansx"),
        (2, "r", "/topic/plans"),
        (3, "r", "/topic/plans"),
    ] {
        h.subscribe(session, id, to, AckMode::Auto).unwrap();
    }
    h.take();
    let mut all = Vec::new();
    let mut ended = h.broker.revoke_room("bob", "plans", &mut |e| all.push(e));
    ended.sort();
    let ended: Vec<(SessionId, &str)> = ended.iter().map(|(s, id)| (*s, &**id)).collect();
    assert_eq!(ended, [(1, "r"), (1, "t"), (2, "r")]);
    let mut left: Vec<String> = all
        .into_iter()
        .filter_map(|e| match e {
            BrokerEvent::Left { topic, user, .. } => Some(format!("-{user}@{topic}")),
            _ => None,
        })
        .collect();
    left.sort();
    assert_eq!(left, ["-bob@/topic/plans", "-bob@/topic/plans.typing"]);
    h.publish(3, "/topic/plans", "secret").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(3, "secret".to_owned())]);
    h.publish(3, "/topic/other", "open").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(1, "open".to_owned())]);
}

/// A guest's messages and presence carry the guest mark.
#[test]
fn guests_are_marked_in_messages_and_presence() {
    let mut broker = Broker::new(BrokerLimits::default());
    broker.connect_as(1, Arc::from("visitor"), true);
    let mut events = Vec::new();
    broker
        .subscribe(1, "r", &dest("/topic/lobby"), AckMode::Auto, &mut |e| {
            events.push(e)
        })
        .unwrap();
    assert!(matches!(
        &events[0],
        BrokerEvent::Joined { guest: true, .. }
    ));
    events.clear();
    broker
        .publish(1, &dest("/topic/lobby"), msg("hi"), &mut |e| events.push(e))
        .unwrap();
    let delivered = events.iter().find_map(|e| match e {
        BrokerEvent::Deliver(d) => Some(d.message.header("sender-guest")),
        _ => None,
    });
    assert_eq!(delivered, Some(Some("true")));
}

// ---------------------------------------------------------------------------------------------
// Forwarding mode (a cluster): topic and user messages leave the broker unnumbered and come
// back through `deliver_forwarded`, numbered, on every node.
// ---------------------------------------------------------------------------------------------

#[test]
fn forwarding_hands_out_topic_messages_instead_of_delivering_them() {
    let mut h = Harness::new();
    h.broker.set_forwarding(true);
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(BOB, "s", "/topic/general", AckMode::Auto)
        .unwrap();
    assert!(
        matches!(&h.take()[..], [BrokerEvent::Watch { key }] if key == "/topic/general"),
        "the first subscriber here makes the node watch the topic"
    );
    h.subscribe(ALICE, "s", "/topic/general", AckMode::Auto)
        .unwrap();
    assert!(
        h.take().is_empty(),
        "only the first subscriber asks to watch"
    );

    let mut publish = msg("hello");
    publish.headers.push(("sender".into(), "mallory".into()));
    publish.headers.push(("x-note".into(), "kept".into()));
    let events = &mut h.events;
    let published = h
        .broker
        .publish(ALICE, &dest("/topic/general"), publish, &mut |e| {
            events.push(e)
        })
        .unwrap();
    assert!(
        published.stored,
        "a room message is stored by whoever numbers it"
    );
    let forwarded = match &h.take()[..] {
        [BrokerEvent::Forward {
            session: Some(ALICE),
            message,
            ..
        }] => message.clone(),
        other => panic!("expected one Forward and no delivery, got {other:?}"),
    };
    assert_eq!(forwarded.room.as_deref(), Some("general"));
    assert_eq!(
        (forwarded.key.as_str(), forwarded.sender.as_str()),
        ("/topic/general", "alice")
    );

    // Back from the bus with the id the cluster gave it: both subscribers get it once.
    let mut numbered = forwarded.clone();
    numbered.id = 41;
    let events = &mut h.events;
    h.broker
        .deliver_forwarded(numbered, &mut |e| keep(events, e));
    let ds = h.deliveries();
    assert_eq!(
        who_got_what(&ds),
        [(BOB, "hello".into()), (ALICE, "hello".into())]
    );
    let frame = wire(&ds[0]);
    assert_eq!(frame.get("message-id"), Some("41"));
    assert_eq!(
        frame.get("sender"),
        Some("alice"),
        "a forged sender stays dropped"
    );
    assert_eq!(frame.get("x-note"), Some("kept"));
    assert_eq!(h.broker.room_last_id("general"), 41);

    h.unsubscribe(BOB, "s").unwrap();
    assert!(h.take().is_empty(), "alice still subscribes here");
    h.disconnect(ALICE);
    assert!(
        matches!(&h.take()[..], [BrokerEvent::Unwatch { key }] if key == "/topic/general"),
        "the last subscriber gone, the node stops watching"
    );
}

#[test]
fn forwarding_leaves_queues_on_this_node() {
    let mut h = Harness::new();
    h.broker.set_forwarding(true);
    h.connect(&[(ALICE, "alice"), (BOB, "bob")]);
    h.subscribe(BOB, "q", "/queue/jobs", AckMode::Auto).unwrap();
    h.publish(ALICE, "/queue/jobs", "work").unwrap();
    assert_eq!(who_got_what(&h.deliveries()), [(BOB, "work".into())]);
}
