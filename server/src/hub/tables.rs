//! The hub's small bounded tables for messages: each user's rate of changes, the accounts
//! direct messages went to, the client ids of recent sends; and the limits of changes. Plain data
//! behind their own locks, never held across an await or together with another.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use parley_stomp::rate::TokenBucket;

use crate::clock::now_ms;

/// Users whose change rate is remembered; past it the table starts afresh (which only ever
/// grants a fresh burst).
const MAX_TRACKED_USERS: usize = 65_536;
/// Accounts whose spelling is remembered; past it the cache starts afresh.
const MAX_KNOWN: usize = 100_000;

/// How often and how long after a message its author may change it.
#[derive(Clone, Debug)]
pub struct EditLimits {
    /// How long after sending an author may edit or delete a message (room admins delete any
    /// message at any time); 0 means forever.
    pub window_ms: u64,
    /// Changes (edits, deletions, reactions) per second per user, bursts of twice that.
    pub per_second: u32,
    /// Largest edited text, in bytes: a room message's limit (`--max-body`).
    pub max_body: usize,
}

impl Default for EditLimits {
    fn default() -> Self {
        Self {
            window_ms: 24 * 60 * 60 * 1000,
            per_second: 5,
            max_body: 64 * 1024,
        }
    }
}

/// Each user's rate of something (changes here; posts over HTTP in the API).
#[derive(Default)]
pub struct ChangeRates(Mutex<HashMap<Arc<str>, TokenBucket>>);

impl ChangeRates {
    /// Takes one change from `user`'s bucket at `rate` per second.
    pub fn take(&self, user: &Arc<str>, rate: u32) -> bool {
        let mut rates = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if rates.len() >= MAX_TRACKED_USERS && !rates.contains_key(user) {
            rates.clear();
        }
        rates.entry(user.clone()).or_default().take(now_ms(), rate)
    }
}

/// Accounts seen, by user key: accounts are never removed, so a name found stays true.
#[derive(Default)]
pub struct KnownAccounts(Mutex<HashMap<String, Arc<str>>>);

impl KnownAccounts {
    /// The account whose key is `key`, as it is spelt, if seen.
    pub fn get(&self, key: &str) -> Option<Arc<str>> {
        self.lock().get(key).cloned()
    }

    /// Remembers account `name` under `key`; returns the name.
    pub fn insert(&self, key: String, name: String) -> Arc<str> {
        let name: Arc<str> = name.into();
        let mut known = self.lock();
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(key, name.clone());
        name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

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
pub struct SentIds(Mutex<Table>);

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

    /// Who sent it.
    pub fn sender(&self) -> &Arc<str> {
        &self.0 .0
    }

    /// Where it was sent.
    pub fn destination(&self) -> &str {
        &self.0 .1
    }

    /// The sender's id for it.
    pub fn client_id(&self) -> &str {
        &self.0 .2
    }
}

impl SentIds {
    /// The id of the message sent earlier with this key (0: sent, id not known yet).
    pub fn find(&self, key: &SentKey) -> Option<u64> {
        self.lock().ids.get(&key.0).copied()
    }

    /// Remembers a sent message's id (0 while storage has yet to number it).
    pub fn record(&self, key: &SentKey, id: u64) {
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
