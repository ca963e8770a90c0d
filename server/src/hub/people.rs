//! Who is online, server-wide: each node's connected users (the broker counts every session of
//! every protocol), shared with the other nodes through the bus in cluster mode. A user is
//! online while any session of theirs is connected on any node, and away while every one of
//! them said so.

use std::collections::HashMap;

use super::{Hub, HubInner};
use crate::bus::Seen;

/// A user online now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineUser {
    /// Their name.
    pub name: String,
    /// A guest, not an account.
    pub guest: bool,
    /// Every session of theirs said it is away.
    pub away: bool,
}

impl Hub {
    /// Cluster mode: hands the operation's online changes to the bus. Without a bus they are
    /// dropped (the broker's index is all there is to know).
    pub(super) fn share_online(&self, inner: &mut HubInner) {
        let changes = inner.broker.take_online_changes();
        let Some(bus) = &self.bus else { return };
        for change in changes {
            let seen = change.state.map(|away| Seen {
                guest: change.guest,
                away,
            });
            bus.online_changed(&change.user, seen);
        }
    }

    /// Marks a session away (or back).
    pub fn set_away(&self, session: parley_stomp::broker::SessionId, away: bool) {
        self.apply(|broker, _| broker.set_away(session, away));
    }

    /// Everyone online now, on every node, by name ignoring case.
    pub async fn online_users(&self) -> Vec<OnlineUser> {
        let mut users: HashMap<String, Seen> = self.online_here();
        if let Some(bus) = &self.bus {
            for (name, seen) in bus.online().await.iter() {
                users
                    .entry(name.clone())
                    .and_modify(|u| u.away &= seen.away)
                    .or_insert(*seen);
            }
        }
        let mut users: Vec<OnlineUser> = users
            .into_iter()
            .map(|(name, seen)| OnlineUser {
                name,
                guest: seen.guest,
                away: seen.away,
            })
            .collect();
        users.sort_by(|a, b| {
            let key = |u: &OnlineUser| u.name.to_ascii_lowercase();
            key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
        });
        users
    }

    /// Whether each of `names` is online now (`Some(away)`), on any node.
    pub async fn online_states(&self, names: &[String]) -> Vec<Option<bool>> {
        let here: Vec<Option<bool>> = {
            let inner = self.lock();
            names.iter().map(|n| inner.broker.online_state(n)).collect()
        };
        let Some(bus) = &self.bus else { return here };
        let everyone = bus.online().await;
        names
            .iter()
            .zip(here)
            .map(|(name, here)| match (here, everyone.get(name.as_str())) {
                (Some(a), Some(seen)) => Some(a && seen.away),
                (Some(a), None) => Some(a),
                (None, seen) => seen.map(|s| s.away),
            })
            .collect()
    }

    /// This node's connected users.
    fn online_here(&self) -> HashMap<String, Seen> {
        self.lock()
            .broker
            .online_users()
            .into_iter()
            .map(|(name, guest, away)| (name.to_string(), Seen { guest, away }))
            .collect()
    }
}
