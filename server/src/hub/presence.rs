//! Who is in which room: presence changes announced on `/topic/<room>.presence`, and the member
//! list, here and (cluster mode) on every node.

use parley_stomp::broker::{BrokerEvent, Publish};
use parley_stomp::destination::Destination;

use super::rooms::room_of_key;
use super::{Effects, Hub, HubInner};
use crate::clock::now_ms;

impl Hub {
    /// Publishes presence changes of rooms to `/topic/<room>.presence` with headers `user` and
    /// `event` (`join` or `leave`, and `guest: true` for guests). `share` also records the change
    /// in the cluster's presence hashes (not for a departure the cluster told us about).
    pub(super) fn announce_presence(
        &self,
        inner: &mut HubInner,
        presence: Vec<BrokerEvent>,
        now_ms: u64,
        share: bool,
    ) {
        for event in presence {
            let (topic, user, guest, joined) = match event {
                BrokerEvent::Joined { topic, user, guest } => (topic, user, guest, true),
                BrokerEvent::Left { topic, user, guest } => (topic, user, guest, false),
                _ => continue,
            };
            let Some(room) = room_of_key(&topic) else {
                continue;
            };
            if let (Some(bus), true) = (&self.bus, share) {
                bus.presence_changed(room, &user, guest, joined);
            }
            let Ok(destination) = Destination::parse(&format!("/topic/{room}.presence")) else {
                continue;
            };
            let mut headers = vec![
                ("user".to_owned(), user.to_string()),
                (
                    "event".to_owned(),
                    if joined { "join" } else { "leave" }.to_owned(),
                ),
            ];
            if guest {
                headers.push(("guest".to_owned(), "true".to_owned()));
            }
            let publish = Publish {
                headers,
                now_ms,
                ..Publish::default()
            };
            // Presence announcements cause no further presence changes.
            let _ = inner
                .broker
                .publish_as(user, &destination, publish, &mut |e| {
                    self.dispatch(
                        &inner.outboxes,
                        e,
                        &mut Vec::new(),
                        &mut Effects {
                            pending: &mut inner.pending,
                            forwards: &mut inner.forwards,
                            watch_changes: &mut inner.watch_changes,
                        },
                    )
                });
        }
    }

    /// Announces that `user` left `room` because the node they were on is gone (cluster mode:
    /// their presence entry expired).
    pub(super) fn announce_departed(&self, room: &str, user: &str, guest: bool) {
        let left = BrokerEvent::Left {
            topic: format!("/topic/{room}"),
            user: user.into(),
            guest,
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.announce_presence(inner, vec![left], now_ms(), false);
        self.flush_to_bus(inner);
        self.deliver(&inner.outboxes, &mut inner.pending);
    }

    /// `user` has a subscription to `room` on this node.
    pub(super) fn is_member_here(&self, room: &str, user: &str) -> bool {
        self.members_here(room).iter().any(|u| u == user)
    }

    /// Who is in `room` on this node.
    pub fn members_here(&self, room: &str) -> Vec<String> {
        let topic = Destination::Topic(room.to_owned());
        self.apply(|broker, _| broker.members(&topic))
            .iter()
            .map(|u| u.to_string())
            .collect()
    }

    /// Who is in `room`: here, and in cluster mode on every node.
    pub async fn present(&self, room: &str) -> Vec<String> {
        let mut users = self.members_here(room);
        if let Some(bus) = &self.bus {
            users.extend(bus.present(room).await);
            users.sort();
            users.dedup();
        }
        users
    }
}
