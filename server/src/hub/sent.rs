//! Idempotent sends: the client ids of recent messages, per sender and destination, so that a
//! retry (after a lost ack, a reconnect, a restart) gets the first message's ack instead of
//! becoming a second message.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use parley_stomp::broker::Receipt;

use super::outbox::{tell, Notice};
use super::session::HubSession;
use super::Hub;
use crate::clock::now_ms;

/// How long a client id is remembered: a retry comes within seconds or minutes.
pub const REMEMBERED_MS: u64 = 60 * 60 * 1000;
/// Client ids remembered in all (about 150 bytes each).
pub const MAX_REMEMBERED: usize = 200_000;
/// Client ids remembered per sender: one user cannot push everyone else's out.
pub const MAX_PER_SENDER: usize = 1_000;

/// Sender, destination (`/topic/<room>`, `/user/<name>/queue/<q>`), client id.
type Key = (Arc<str>, String, String);

/// The table, oldest first for expiry.
#[derive(Default)]
pub(super) struct SentIds(Mutex<Table>);

#[derive(Default)]
struct Table {
    ids: HashMap<Key, u64>,
    order: VecDeque<(u64, Key)>,
    per_sender: HashMap<Arc<str>, usize>,
}

/// A send's place in the table: who, where, with which client id.
#[derive(Clone, Debug)]
pub struct SentKey(Key);

impl SentKey {
    /// The key of `client_id` sent by `sender` to `destination`.
    pub fn new(sender: Arc<str>, destination: String, client_id: String) -> Self {
        Self((sender, destination, client_id))
    }
}

impl SentIds {
    /// The id of the message sent earlier with this key (0: sent, id not known yet).
    pub(super) fn find(&self, key: &SentKey) -> Option<u64> {
        self.lock().ids.get(&key.0).copied()
    }

    /// Remembers a sent message's id (0 while storage has yet to number it).
    pub(super) fn record(&self, key: &SentKey, id: u64) {
        let now = now_ms();
        let mut table = self.lock();
        table.expire(now);
        if let Some(known) = table.ids.get_mut(&key.0) {
            *known = (*known).max(id);
            return;
        }
        let count = table.per_sender.entry(key.0 .0.clone()).or_default();
        if *count >= MAX_PER_SENDER {
            return;
        }
        *count += 1;
        if table.order.len() >= MAX_REMEMBERED {
            table.forget_oldest();
        }
        table.ids.insert(key.0.clone(), id);
        table.order.push_back((now, key.0.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent: a panic cannot break it half-way.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    fn expire(&mut self, now: u64) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > REMEMBERED_MS)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, key)) = self.order.pop_front() else {
            return;
        };
        self.ids.remove(&key);
        if let Some(count) = self.per_sender.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.per_sender.remove(&key.0);
            }
        }
    }
}

impl Hub {
    /// Remembers the client ids storage holds from the last [`REMEMBERED_MS`] (at start-up).
    pub fn remember_sent(&self, sent: Vec<crate::store::SentId>) {
        for (room, sender, client_id, id) in sent {
            let key = SentKey::new(sender.into(), format!("/topic/{room}"), client_id);
            self.sent.record(&key, id);
        }
    }

    /// The id of an earlier send with `key`, if there was one.
    pub fn sent_before(&self, key: &SentKey) -> Option<u64> {
        self.sent.find(key)
    }

    /// Remembers a send with `key` that became message `id` (0: numbered later, by storage).
    pub fn remember(&self, key: &SentKey, id: u64) {
        self.sent.record(key, id);
    }

    /// `receipt`, also remembering the id it is sent with: in cluster mode that is when the
    /// id becomes known.
    pub(super) fn remembering(&self, key: SentKey, receipt: Receipt) -> Receipt {
        let hub = self.me.clone();
        Receipt(Arc::new(move |id| {
            if let Some(hub) = hub.upgrade() {
                hub.sent.record(&key, id);
            }
            (receipt.0)(id)
        }))
    }

    /// Answers a retried send with the first one's acknowledgement, once everything sent
    /// before is durable (the first one included).
    pub fn acknowledge_again(&self, session: &HubSession, key: SentKey, receipt: Receipt) {
        let durable = self.durable_signal();
        let (notices, evicted) = session.notifier();
        let hub = self.me.clone();
        self.runtime.spawn(async move {
            if !matches!(durable.await, Ok(true)) {
                return;
            }
            let Some(id) = hub.upgrade().and_then(|hub| hub.sent.find(&key)) else {
                return;
            };
            tell(&notices, &evicted, Notice::Encoded((receipt.0)(id)));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_sender_up_to_the_caps() {
        let ids = SentIds::default();
        let key =
            |user: &str, n: usize| SentKey::new(user.into(), "/topic/r".into(), n.to_string());
        ids.record(&key("alice", 1), 0);
        assert_eq!(ids.find(&key("alice", 1)), Some(0));
        ids.record(&key("alice", 1), 7);
        assert_eq!(ids.find(&key("alice", 1)), Some(7), "the id, once known");
        assert_eq!(ids.find(&key("bob", 1)), None, "per sender");
        for n in 0..MAX_PER_SENDER + 10 {
            ids.record(&key("mallory", n), n as u64);
        }
        assert_eq!(ids.find(&key("mallory", MAX_PER_SENDER + 5)), None);
        assert_eq!(ids.find(&key("alice", 1)), Some(7), "others keep theirs");
    }
}
