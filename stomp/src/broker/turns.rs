//! Publishing while the broker is shared: a room message is numbered and fanned out in its
//! room's turn, so publishes to different rooms run at the same time and each room keeps one
//! order.

use std::sync::atomic::Ordering;

use super::types::{build_message, is_room, lock, Shared, Turn};
use super::{Broker, BrokerError, BrokerEvent, Publish, Published, SessionId};
use crate::destination::Destination;

impl Broker {
    /// The turn of `room`, if its messages can be published while the broker is shared: it is
    /// numbered here (not in cluster mode) and has been before.
    pub fn turn(&self, room: &str) -> Option<Turn<'_>> {
        if self.forwarding {
            return None;
        }
        let (room, last) = self.room_ids.get_key_value(room)?;
        let key = Destination::Topic(room.clone()).to_string();
        Some(Turn {
            room,
            last: lock(last),
            subscribers: self.fan_out.get(key.as_str()),
            published: Vec::new(),
        })
    }

    /// Publishes a plain room message from `from` in `turn` (the room's), as
    /// [`Broker::publish`] would, except that its deliveries wait in the turn for
    /// [`Turn::deliver`]. Hands it back when it needs more than a shared broker: another
    /// destination, a copy or a stream, or a subscriber who acknowledges (tracked per session).
    pub fn publish_in_turn(
        &self,
        turn: &mut Turn<'_>,
        from: SessionId,
        destination: &Destination,
        publish: Publish,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Shared {
        let plain = matches!(destination, Destination::Topic(name) if name == turn.room && is_room(name))
            && publish.copy_to.is_none()
            && publish.stream.is_none();
        if !plain {
            return Shared::Exclusive(publish);
        }
        if turn.subscribers.is_some_and(|subs| subs.acking > 0) {
            return Shared::Exclusive(publish);
        }
        let Some(sender) = self.sessions.get(&from) else {
            return Shared::Refused(BrokerError::UnknownSession);
        };
        if let Err(refused) = self.check_budget() {
            return Shared::Refused(refused);
        }
        if self.storage_failing.load(Ordering::Relaxed) {
            return Shared::Refused(BrokerError::StorageUnavailable);
        }
        *turn.last += 1;
        let id = *turn.last;
        let message = self.share(build_message(
            destination.to_string(),
            id,
            publish.now_ms,
            &sender.user,
            sender.guest,
            publish.headers,
            publish.body,
        ));
        events(BrokerEvent::Store {
            session: Some(from),
            room: turn.room.to_owned(),
            id,
            message: message.clone(),
            receipt: publish.receipt,
        });
        if turn.subscribers.is_some() {
            turn.published.push(message);
        }
        Shared::Published(Published { id, stored: true })
    }
}
