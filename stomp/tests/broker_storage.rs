//! While the server says storage is failing, room messages are refused before they are
//! numbered or delivered; everything that is not stored still flows.

use std::sync::Arc;

use bytes::Bytes;
use parley_stomp::broker::{AckMode, Broker, BrokerError, BrokerEvent, BrokerLimits, Publish};
use parley_stomp::destination::Destination;

fn publish(
    broker: &mut Broker,
    to: &str,
    events: &mut Vec<BrokerEvent>,
) -> Result<u64, BrokerError> {
    let message = Publish {
        body: Bytes::from_static(b"hi"),
        now_ms: 1,
        ..Publish::default()
    };
    let destination = Destination::parse(to).unwrap();
    broker
        .publish(1, &destination, message, &mut |e| events.push(e))
        .map(|p| p.id)
}

#[test]
fn room_messages_are_refused_while_storage_fails_and_ids_stay_consecutive() {
    let mut broker = Broker::new(BrokerLimits::default());
    broker.connect(1, Arc::from("alice"));
    broker.connect(2, Arc::from("bob"));
    let mut events = Vec::new();
    for to in [
        "/topic/lobby",
        "/topic/lobby.typing",
        "/user/queue/messages",
    ] {
        let destination = Destination::parse(to).unwrap();
        let id = format!("s-{to}");
        broker
            .subscribe(2, &id, &destination, AckMode::Auto, &mut |e| events.push(e))
            .unwrap();
    }
    assert_eq!(publish(&mut broker, "/topic/lobby", &mut events), Ok(1));

    broker.set_storage_failing(true);
    events.clear();
    assert_eq!(
        publish(&mut broker, "/topic/lobby", &mut events),
        Err(BrokerError::StorageUnavailable)
    );
    assert!(events.is_empty(), "nothing delivered or stored: {events:?}");
    // Side channels and direct messages are not stored: they go on.
    assert!(publish(&mut broker, "/topic/lobby.typing", &mut events).is_ok());
    assert!(publish(&mut broker, "/user/bob/queue/messages", &mut events).is_ok());
    let delivered = events
        .iter()
        .filter(|e| matches!(e, BrokerEvent::Deliver(_)))
        .count();
    assert_eq!(delivered, 2);

    broker.set_storage_failing(false);
    assert_eq!(
        publish(&mut broker, "/topic/lobby", &mut events),
        Ok(2),
        "the refused message took no id"
    );
}
