//! Who is online on any node (cluster mode): one Redis hash, `parley:online`, with an entry per
//! user and node (`user\nnode` → `expiry_ms guest(0|1) away(0|1)`). Each node writes its own
//! entries when they change and refreshes them every quarter of the presence TTL; a node that
//! dies stops refreshing, and its entries expire and are swept by the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::HashesInterface as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::clock::now_ms;

/// The hash of who is online.
const ONLINE_KEY: &str = "parley:online";

/// Changes waiting to be written; beyond this they wait for the next refresh.
const OPS_CAPACITY: usize = 65_536;

/// How long a read of the whole hash is reused: directory pages do not each read Redis.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Longest wait for Redis when reading.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A user online somewhere in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// A guest, not an account.
    pub guest: bool,
    /// Every session of theirs, on every node, said it is away.
    pub away: bool,
}

/// Who is online on any node, as last read.
pub type OnlineMap = Arc<HashMap<String, Seen>>;

/// A change of this node's users.
struct Op {
    user: String,
    /// `None`: gone from this node.
    seen: Option<Seen>,
}

/// This node's side of the shared online hash.
pub struct OnlineShare {
    ops: mpsc::Sender<Op>,
    /// The receiving end, until [`OnlineShare::start`] takes it.
    parts: Mutex<Option<mpsc::Receiver<Op>>>,
    reader: Client,
    /// The last read of the hash and when it was made. Guarded by a mutex held only to swap it.
    cache: Mutex<Option<(Instant, OnlineMap)>>,
}

impl OnlineShare {
    /// A share writing and reading through `client`.
    pub fn new(client: Client) -> Self {
        let (ops, rx) = mpsc::channel(OPS_CAPACITY);
        Self {
            ops,
            parts: Mutex::new(Some(rx)),
            reader: client,
            cache: Mutex::new(None),
        }
    }

    /// Starts keeping this node's entries (`node` is its id) fresh.
    pub fn start(&self, node: String, ttl: Duration) {
        let Some(ops) = self.parts.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        tokio::spawn(keep_entries(self.reader.clone(), node, ttl, ops));
    }

    /// Records that `user` is online here (`Some`) or no longer (`None`); never blocks.
    pub fn changed(&self, user: &str, seen: Option<Seen>) {
        let op = Op {
            user: user.to_owned(),
            seen,
        };
        if self.ops.try_send(op).is_err() {
            warn!("online backlog full: a change waits for the next refresh");
        }
    }

    /// Everyone online on any node (entries not expired); empty if Redis cannot say. A read at
    /// most [`CACHE_FOR`] old is reused.
    pub async fn everyone(&self) -> OnlineMap {
        if let Some((at, map)) = self.cache.lock().ok().and_then(|c| c.clone()) {
            if at.elapsed() < CACHE_FOR {
                return map;
            }
        }
        let read = tokio::time::timeout(
            READ_TIMEOUT,
            self.reader
                .hgetall::<HashMap<String, String>, _>(ONLINE_KEY),
        )
        .await;
        let Ok(Ok(entries)) = read else {
            return OnlineMap::default();
        };
        let map: OnlineMap = Arc::new(merge(&entries, now_ms()));
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), map.clone()));
        }
        map
    }
}

/// One user per name from the live entries: a guest if any entry says so, away if all do.
fn merge(entries: &HashMap<String, String>, now: u64) -> HashMap<String, Seen> {
    let mut users: HashMap<String, Seen> = HashMap::new();
    for (field, value) in entries {
        let (Some((user, _node)), Some((expiry, seen))) = (field.split_once('\n'), parse(value))
        else {
            continue;
        };
        if expiry <= now {
            continue;
        }
        users
            .entry(user.to_owned())
            .and_modify(|u| {
                u.guest |= seen.guest;
                u.away &= seen.away;
            })
            .or_insert(seen);
    }
    users
}

/// `expiry_ms guest away` from an entry's value.
fn parse(value: &str) -> Option<(u64, Seen)> {
    let mut parts = value.split(' ');
    let expiry = parts.next()?.parse().ok()?;
    let guest = parts.next()? == "1";
    let away = parts.next().unwrap_or("0") == "1";
    Some((expiry, Seen { guest, away }))
}

/// Writes this node's entries as they change, refreshes them every quarter of the TTL (so they
/// come back after a Redis restart too) and removes other nodes' expired ones.
async fn keep_entries(client: Client, node: String, ttl: Duration, mut ops: mpsc::Receiver<Op>) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let field = |user: &str| format!("{user}\n{node}");
    let value = |seen: Seen| {
        let expiry = now_ms().saturating_add(ttl_ms);
        format!("{expiry} {} {}", u8::from(seen.guest), u8::from(seen.away))
    };
    let mut mine: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval((ttl / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(Op { user, seen }) = op else { return };
                let written = match seen {
                    Some(seen) => {
                        mine.insert(user.clone(), seen);
                        client.hset::<(), _, _>(ONLINE_KEY, vec![(field(&user), value(seen))]).await
                    }
                    None => {
                        mine.remove(&user);
                        client.hdel::<(), _, _>(ONLINE_KEY, field(&user)).await
                    }
                };
                if let Err(error) = written {
                    debug!(%error, "online state not written; the next refresh retries");
                }
            }
            _ = tick.tick() => {
                if !mine.is_empty() {
                    let entries: Vec<(String, String)> =
                        mine.iter().map(|(u, s)| (field(u), value(*s))).collect();
                    if let Err(error) = client.hset::<(), _, _>(ONLINE_KEY, entries).await {
                        debug!(%error, "refreshing online state failed; retried next time");
                    }
                }
                sweep(&client, &node).await;
            }
        }
    }
}

/// Removes other nodes' expired entries (a dead node's users go offline within about the TTL).
async fn sweep(client: &Client, node: &str) {
    let Ok(entries) = client
        .hgetall::<HashMap<String, String>, _>(ONLINE_KEY)
        .await
    else {
        return;
    };
    let now = now_ms();
    let expired: Vec<&String> = entries
        .iter()
        .filter(|(f, v)| {
            !f.ends_with(&format!("\n{node}")) && parse(v).is_some_and(|(expiry, _)| expiry <= now)
        })
        .map(|(f, _)| f)
        .collect();
    for field in expired {
        let _ = client.hdel::<(), _, _>(ONLINE_KEY, field.as_str()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_merge_per_user_and_expired_ones_are_left_out() {
        let entries = HashMap::from([
            ("alice\nn1".to_owned(), "2000 0 1".to_owned()),
            ("alice\nn2".to_owned(), "2000 0 0".to_owned()),
            ("bob\nn1".to_owned(), "2000 0 1".to_owned()),
            ("carol\nn2".to_owned(), "500 0 0".to_owned()),
            ("guest-1\nn2".to_owned(), "2000 1 0".to_owned()),
            ("junk".to_owned(), "2000 0 0".to_owned()),
        ]);
        let users = merge(&entries, 1000);
        assert_eq!(users.len(), 3);
        assert_eq!(
            users["alice"],
            Seen {
                guest: false,
                away: false
            }
        );
        assert_eq!(
            users["bob"],
            Seen {
                guest: false,
                away: true
            }
        );
        assert!(users["guest-1"].guest);
    }
}
