//! The hub in cluster mode: room messages numbered by storage, delivered in id order on every
//! node with gaps read from storage, and which bus channels this node receives.

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::CloseCode;
use parley_stomp::broker::{Broker, BrokerEvent, Forwarded};
use tokio::sync::watch;
use tracing::warn;

use super::direct::is_conversation;
use super::message::{forwarded_from_stored, stored_from_forwarded};
use super::order::MAX_AHEAD;
use super::outbox::{tell, Notice};
use super::rooms::room_of_key;
use super::{Hub, HubInner, MAX_REPLAY};
use crate::bus::{channel_of, BusEvents};
use crate::metrics;
use crate::store;

/// Longest wait for storage's last ids of rooms about to be joined.
const PREPARE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for this node's bus subscriptions before answering a client anyway.
const LIVE_WAIT: Duration = Duration::from_secs(5);

impl Hub {
    /// After an operation: watch and unwatch channels, number and store room messages, and
    /// send everything forwarded to the other nodes (delivering side-channel and user messages
    /// here at once).
    pub(super) fn flush_to_bus(&self, inner: &mut HubInner) {
        let Some(bus) = &self.bus else { return };
        for (key, on) in std::mem::take(&mut inner.watch_changes) {
            let Some(channel) = channel_of(&key) else {
                continue;
            };
            let watching = &mut inner.watching;
            if on {
                watching.keys.insert(key);
                let refs = watching.refs.entry(channel.clone()).or_default();
                *refs += 1;
                if *refs == 1 {
                    let (live, is_live) = watch::channel(false);
                    watching.pending.insert(channel.clone(), is_live);
                    bus.watch(channel, live);
                }
            } else {
                if let Some(room) = room_of_key(&key) {
                    inner.order.remove(room);
                }
                watching.keys.remove(&key);
                if let Some(refs) = watching.refs.get_mut(&channel) {
                    *refs -= 1;
                    if *refs == 0 {
                        watching.refs.remove(&channel);
                        watching.pending.remove(&channel);
                        bus.unwatch(channel);
                    }
                }
            }
        }
        for (session, message, receipt) in std::mem::take(&mut inner.forwards) {
            let Some(room) = message.room.clone() else {
                // Not numbered, not stored: here now, and on its way to the others.
                bus.publish(&message);
                self.accept_locked(inner, message);
                continue;
            };
            self.ensure_room(&room);
            if !is_conversation(&room) {
                // Two people's conversations are nobody's business.
                self.activity.count(&room, crate::clock::now_ms());
            }
            let stored = stored_from_forwarded(room, &message);
            let sender = session.and_then(|s| inner.outboxes.get(&s));
            let ack = sender.map(|o| o.mail.clone());
            let hub = self.me.clone();
            let done: crate::journal::Numbered = Box::new(move |numbered| {
                let Some(id) = numbered else {
                    if let Some(mail) = ack {
                        mail.companion().evict(
                            CloseCode::INTERNAL_ERROR,
                            "storage error: the message could not be stored".to_owned(),
                        );
                    }
                    return;
                };
                let mut message = message;
                message.id = id;
                if let Some(hub) = hub.upgrade() {
                    if let Some(bus) = &hub.bus {
                        bus.publish(&message);
                    }
                    hub.accept_forwarded(message);
                }
                if let (Some(mail), Some(receipt)) = (ack, receipt) {
                    tell(&mail, Notice::Encoded((receipt.0)(id)));
                }
            });
            if self.journal.push_numbered(stored, done).is_err() {
                warn!("storage cannot keep up; closing the sender");
                if let Some(outbox) = session.and_then(|s| inner.outboxes.get(&s)) {
                    outbox.evicted().evict_slow("storage overloaded");
                }
            }
        }
    }

    /// Delivers a message from the bus (or numbered here) to this node's subscribers, each
    /// room's in id order: one ahead of the next expected id waits while the ones before it
    /// are read from storage.
    fn accept_forwarded(&self, message: Forwarded) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.accept_locked(inner, message);
        self.deliver(&inner.outboxes, &mut inner.pending);
    }

    fn accept_locked(&self, inner: &mut HubInner, message: Forwarded) {
        let HubInner {
            broker,
            outboxes,
            pending,
            order,
            watching,
            ..
        } = inner;
        let mut deliver = |broker: &mut Broker, m: Forwarded| {
            broker.deliver_forwarded(m, &mut |e| match e {
                BrokerEvent::Deliver(d) => pending.push(d),
                BrokerEvent::Evict { session, reason } => {
                    if let Some(outbox) = outboxes.get(&session) {
                        self.evict_slow(outbox, session, reason);
                    }
                }
                _ => {}
            });
        };
        let Some(room) = message.room.clone() else {
            deliver(broker, message);
            return;
        };
        if is_conversation(&room) {
            // Two people's: delivered as it comes (a client fills a gap with `since`).
            deliver(broker, message);
            return;
        }
        if !watching.keys.contains(&message.key) {
            // Nobody here reads the room itself (perhaps only its side channels): keep count.
            broker.seed_room(&room, message.id);
            return;
        }
        let last = broker.room_last_id(&room);
        if message.id <= last {
            return; // already delivered (say, read from storage while it was on its way)
        }
        if message.id > last + 1 {
            let waiting = order.entry(room.clone()).or_default();
            if waiting.ahead.len() < MAX_AHEAD {
                waiting.ahead.insert(message.id, message);
            }
            if !waiting.filling {
                waiting.filling = true;
                if let Some(me) = self.me.upgrade() {
                    self.runtime.spawn(me.fill(room));
                }
            }
            return;
        }
        deliver(broker, message);
        if let Some(waiting) = order.get_mut(&room) {
            while let Some(entry) = waiting.ahead.first_entry() {
                let last = broker.room_last_id(&room);
                if *entry.key() <= last {
                    entry.remove();
                } else if *entry.key() == last + 1 {
                    deliver(broker, entry.remove());
                } else {
                    break;
                }
            }
        }
    }

    /// Reads a room's missing messages from storage until nothing is missing: up to the first
    /// one waiting, and up to what storage was seen to hold.
    async fn fill(self: Arc<Self>, room: String) {
        // A message only slightly behind its successor on the bus needs no read.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut fruitless = 0;
        let mut errors = 0;
        loop {
            let Some((after, upto)) = self.missing(&room, fruitless) else {
                return;
            };
            let name = room.clone();
            let limit = usize::try_from(upto - after)
                .unwrap_or(MAX_REPLAY)
                .min(MAX_REPLAY);
            match store::run(&self.store, move |s| s.after(&name, after, limit)).await {
                Ok(messages) => {
                    let progressed = {
                        let mut guard = self.lock();
                        let inner = &mut *guard;
                        for m in messages.into_iter().filter(|m| m.id <= upto) {
                            metrics::handles().bus_gap_fills.increment(1);
                            self.accept_locked(inner, forwarded_from_stored(m));
                        }
                        self.deliver(&inner.outboxes, &mut inner.pending);
                        inner.broker.room_last_id(&room) > after
                    };
                    // Storage held none of what is missing: count it; gave some: go on.
                    if progressed {
                        fruitless = 0;
                    } else {
                        fruitless += 1;
                        tokio::time::sleep(Duration::from_millis(50 * fruitless)).await;
                    }
                }
                // Storage unreachable: never skip for that, try again (up to every 2 s).
                Err(_) => {
                    errors = (errors + 1).min(40);
                    tokio::time::sleep(Duration::from_millis(50 * errors)).await;
                }
            }
        }
    }

    /// What `room` still misses, `(delivered up to, needed up to)`; `None` once nothing is
    /// missing (or storage did not have it after several tries: skipped so the room does not
    /// stall), delivering whatever waited.
    fn missing(&self, room: &str, fruitless: u64) -> Option<(u64, u64)> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let last = inner.broker.room_last_id(room);
        let waiting = inner.order.get_mut(room)?;
        let first_ahead = waiting.ahead.keys().next().map(|id| id - 1);
        let upto = first_ahead.unwrap_or(0).max(waiting.upto);
        if upto > last && fruitless <= 5 {
            return Some((last, upto));
        }
        if upto > last {
            // Storage should hold these and does not: do not stall the room.
            warn!(%room, from = last + 1, to = upto, "messages missing from storage; skipped");
            inner.broker.seed_room(room, upto);
        }
        waiting.filling = false;
        let ahead = std::mem::take(&mut waiting.ahead);
        for (_, m) in ahead {
            self.accept_locked(inner, m);
        }
        self.deliver(&inner.outboxes, &mut inner.pending);
        None
    }

    /// Delivers what storage holds of `rooms` beyond what this node delivered: after
    /// subscribing to their channel, a reconnect to Redis, or messages lost on the bus.
    fn resync(&self, rooms: Vec<String>) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.spawn(async move {
            let Ok(stored) = store::run(&me.store, move |s| s.last_ids_of(&rooms)).await else {
                return; // the next resync (a quarter of the presence TTL) tries again
            };
            let mut guard = me.lock();
            let inner = &mut *guard;
            for (room, last) in stored {
                if !inner.watching.keys.contains(&format!("/topic/{room}")) {
                    continue;
                }
                let behind = last > inner.broker.room_last_id(&room);
                let waiting = inner.order.entry(room.clone()).or_default();
                waiting.upto = waiting.upto.max(last);
                if behind && !waiting.filling {
                    waiting.filling = true;
                    me.runtime.spawn(me.clone().fill(room));
                }
            }
        });
    }

    /// Before subscribing to rooms this node does not watch yet: what this node knows of them
    /// may be old, so their last id jumps to storage's (without delivering anything). Catch-up
    /// then replays up to it and the channel brings what follows. Rooms unknown here get their
    /// rules from storage. The read runs off the runtime; a single node has nothing to prepare.
    pub async fn prepare_rooms(&self, rooms: Vec<String>) {
        if self.bus.is_none() || rooms.is_empty() {
            return;
        }
        let unwatched: Vec<String> = {
            let inner = self.lock();
            rooms
                .into_iter()
                .filter(|room| !inner.watching.keys.contains(&format!("/topic/{room}")))
                .collect()
        };
        if unwatched.is_empty() {
            return;
        }
        // Rooms created on another node that this one has not heard of yet: their rules come
        // from storage too, so the join is judged as it would be there.
        let unknown: Vec<String> = unwatched
            .iter()
            .filter(|room| !self.acl.exists(room))
            .cloned()
            .collect();
        let read = store::run(&self.store, move |s| {
            let mut rules = Vec::new();
            for room in unknown {
                if let Some(found) = s.room_rules(&room)? {
                    rules.push((room, found));
                }
            }
            Ok((s.last_ids_of(&unwatched)?, rules))
        });
        match tokio::time::timeout(PREPARE_WAIT, read).await {
            // Too slow: go on as for a failed read; the first message ahead shows the gap,
            // which is then read from storage.
            Err(_) => warn!("reading rooms' last ids timed out"),
            Ok(Ok((stored, rules))) => {
                for (room, (private, members)) in rules {
                    self.acl.replace_room(&room, private, members);
                }
                let mut inner = self.lock();
                for (room, last) in stored {
                    // Checked again under the lock: if another session started watching the
                    // room meanwhile, its last id stands (jumping it would drop messages).
                    if last > 0 && !inner.watching.keys.contains(&format!("/topic/{room}")) {
                        inner.broker.seed_room(&room, last);
                    }
                }
            }
            Ok(Err(error)) => warn!(%error, "reading rooms' last ids failed"),
        }
    }

    /// Waits (at most 5 s) until this node receives the channels of `keys` (cluster mode), so a
    /// client told its subscription is active misses nothing sent after.
    pub async fn until_live(&self, keys: &[String]) {
        let waits: Vec<watch::Receiver<bool>> = {
            if self.bus.is_none() || keys.is_empty() {
                return;
            }
            let inner = self.lock();
            keys.iter()
                .filter_map(|key| channel_of(key))
                .filter_map(|channel| inner.watching.pending.get(&channel).cloned())
                .filter(|live| !*live.borrow())
                .collect()
        };
        let all = async {
            for mut live in waits {
                let _ = live.wait_for(|is| *is).await;
            }
        };
        if tokio::time::timeout(LIVE_WAIT, all).await.is_err() {
            // The client is answered anyway; what another node sends it meanwhile may be missed.
            warn!(
                ?keys,
                "bus subscription not live after {LIVE_WAIT:?}; answering anyway"
            );
        }
    }
}

impl BusEvents for Hub {
    fn accept_forwarded(&self, message: Forwarded) {
        Hub::accept_forwarded(self, message);
    }

    fn reload_room_rules(&self, room: String) {
        self.reload_rules_of(room);
    }

    fn reload_acl(&self) {
        self.reload_all_rules();
        self.reload_admin_soon();
    }

    fn admin(&self, event: crate::bus::AdminEvent) {
        self.admin_here(&event);
    }

    fn resync_room(&self, room: String) {
        self.resync(vec![room]);
    }

    fn resync_rooms(&self) {
        let rooms = self.watched_rooms();
        if !rooms.is_empty() {
            self.resync(rooms);
        }
    }

    fn watched_rooms(&self) -> Vec<String> {
        self.lock()
            .watching
            .keys
            .iter()
            .filter_map(|k| room_of_key(k))
            .map(str::to_owned)
            .collect()
    }

    fn is_present_here(&self, room: &str, user: &str) -> bool {
        self.is_member_here(room, user)
    }

    fn announce_gone(&self, room: &str, user: &str, guest: bool) {
        self.announce_departed(room, user, guest);
    }
}
