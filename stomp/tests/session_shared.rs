//! A SEND checked without the broker (`Session::send_shared`), for publishing in its room's
//! turn: only a connected session's plain room message outside a transaction is taken, checked
//! as `Session::handle` would check it; anything else is left untouched for `handle`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parley_stomp::broker::{Broker, BrokerEvent, BrokerLimits, Shared};
use parley_stomp::destination::Destination;
use parley_stomp::session::{Flow, Identity, Session, SessionConfig, SharedSend};
use parley_stomp::{Command, Decoder, Frame, Limits, Version};

const NOW: u64 = 1_700_000_000_123;

fn send(to: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", to)
        .body(Bytes::from(body.to_owned()))
}

/// Alice connected (STOMP 1.2) to a broker in which `lobby` has had one message.
fn alice(config: SessionConfig) -> (Broker, Session) {
    let mut broker = Broker::new(BrokerLimits::default());
    let mut session = Session::new(1, Arc::new(config));
    session.authenticate(Identity::new("alice", false));
    let connect = Frame::new(Command::Connect).header("accept-version", "1.2");
    let flow = session.handle(connect, &mut broker, NOW, &mut Vec::new(), &mut drop);
    assert_eq!(flow, Flow::Continue);
    let flow = session.handle(
        send("/topic/lobby", "first"),
        &mut broker,
        NOW,
        &mut Vec::new(),
        &mut drop,
    );
    assert_eq!(flow, Flow::Continue);
    (broker, session)
}

fn decode(bytes: &[u8]) -> Frame {
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(Version::V1_2);
    let mut buf = BytesMut::from(bytes);
    let frame = decoder.decode(&mut buf).unwrap().expect("one whole frame");
    assert!(buf.is_empty());
    frame
}

#[test]
fn a_room_message_is_checked_then_published_in_its_turn_with_its_receipt() {
    let (broker, mut session) = alice(SessionConfig::default());
    let frame = send("/topic/lobby", "hello")
        .header("receipt", "r-1")
        .header("x-note", "kept");
    assert_eq!(session.shared_room(&frame), Some("lobby"));
    let SharedSend::Ready(destination, publish) = session.send_shared(&frame, NOW) else {
        panic!("a plain room message is taken");
    };
    assert_eq!(destination, Destination::Topic("lobby".into()));
    let mut turn = broker.turn("lobby").expect("lobby was published to");
    let mut events = Vec::new();
    let shared =
        broker.publish_in_turn(&mut turn, 1, &destination, publish, &mut |e| events.push(e));
    assert!(matches!(shared, Shared::Published(p) if p.id == 2 && p.stored));
    let [BrokerEvent::Store {
        id: 2,
        message,
        receipt: Some(receipt),
        ..
    }] = &events[..]
    else {
        panic!("stored with its receipt: {events:?}");
    };
    assert_eq!(message.header("x-note"), Some("kept"));
    assert_eq!(message.header("receipt"), None, "the sender's own header");
    let receipt = decode(&(receipt.0)(2));
    assert_eq!(receipt.command, Command::Receipt);
    assert_eq!(receipt.get("receipt-id"), Some("r-1"));
}

#[test]
fn anything_but_a_plain_room_message_is_left_untouched() {
    let mut config = SessionConfig::default();
    config.guest_queues = true;
    config.rate_limit = 1;
    let (_broker, mut session) = alice(config);
    let others = [
        send("/topic/lobby", "in a transaction").header("transaction", "tx"),
        send("/topic/lobby.typing", "a side channel"),
        send("/queue/work", "a queue"),
        send("/user/bob/queue/messages", "a direct message"),
        send("/topic/", "no room"),
        Frame::new(Command::Subscribe).header("destination", "/topic/lobby"),
    ];
    for frame in &others {
        assert!(
            matches!(session.send_shared(frame, NOW), SharedSend::Exclusive),
            "{frame:?}"
        );
    }
    // Nothing was charged to the rate limit (one a second, a burst of two; the first message
    // used one): one more is taken, the next refused.
    assert!(matches!(
        session.send_shared(&send("/topic/lobby", "x"), NOW),
        SharedSend::Ready(..)
    ));
    assert!(matches!(
        session.send_shared(&send("/topic/lobby", "y"), NOW),
        SharedSend::Refused(_)
    ));
}

#[test]
fn a_refused_message_is_an_error_with_its_receipt_id() {
    let mut config = SessionConfig::default();
    config.max_room_body = 5;
    let (_broker, mut session) = alice(config);
    let frame = send("/topic/lobby", "too long").header("receipt", "r-9");
    let SharedSend::Refused(error) = session.send_shared(&frame, NOW) else {
        panic!("a body over the room limit is refused");
    };
    let error = decode(&error);
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.get("receipt-id"), Some("r-9"));
    assert!(error
        .get("message")
        .unwrap()
        .contains("body exceeds 5 bytes"));
}

#[test]
fn a_session_not_connected_is_left_to_handle() {
    let mut session = Session::new(7, Arc::new(SessionConfig::default()));
    let frame = send("/topic/lobby", "early");
    assert_eq!(session.shared_room(&frame), None);
    assert!(matches!(
        session.send_shared(&frame, NOW),
        SharedSend::Exclusive
    ));
}
