//! Operators' actions on the hub: kicking sessions, banning users, closing rooms and deleting
//! messages, carried out here and (through the bus) on every other node; and what operators
//! see: who is connected, the slow consumers, the busiest rooms. The admin API checks who may.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::CloseCode;
use parley_stomp::broker::{Publish, Published, SessionId};
use parley_stomp::destination::{Destination, RoomName};
use parley_stomp::session::{Identity, Scope};
use tracing::{error, info, warn};

use super::message::chat_headers;
use super::refusal::{publish_refusal, Refusal};
use super::registry::{Connection, Eviction, SessionInfo};
use super::Hub;
use crate::auth::bans::banned;
use crate::auth::Bans;
use crate::bus::AdminEvent;
use crate::clock::now_ms;
use crate::store::{self, user_key, Kind, MAX_HELD};

/// Close code (4403, like HTTP 403) of a session an operator ended: kicked, or its user banned.
/// The reason says which (`kicked: …`, `banned: …`).
pub const CLOSE_REMOVED: CloseCode = match CloseCode::from_wire(4403) {
    Some(code) => code,
    None => CloseCode::POLICY_VIOLATION,
};

/// How often, in cluster mode, a node reads the bans and closed rooms back from storage: what
/// it holds is storage's within this long even if a bus message was lost.
pub const ADMIN_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// How often audit rows past their retention are deleted.
const AUDIT_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Reads of storage a reload makes at most while operators' actions keep changing the bans and
/// closed rooms under it; the next reload tries again.
const RELOAD_TRIES: usize = 3;

impl Hub {
    /// This node's name: its id in the cluster, or `local` alone.
    pub fn node(&self) -> &str {
        self.bus.as_ref().map_or("local", |bus| bus.node())
    }

    /// Banned users (shared with auth).
    pub fn bans(&self) -> &Arc<Bans> {
        &self.settings.bans
    }

    /// Is `who` an operator: an account (not a guest) with a full-scope credential, named by
    /// `--operator` (in any case, as account names are unique) or granted in storage (`parley
    /// admin grant`)? Storage is read every time (one indexed row), so a grant or revocation
    /// holds at once on every node. A configured name counts only once it is an account's:
    /// another identity (an external provider's user) may otherwise carry it.
    pub async fn is_operator(&self, who: &Identity) -> anyhow::Result<bool> {
        if who.guest || who.scope != Scope::All {
            return Ok(false);
        }
        let name = who.name.to_string();
        let key = user_key(&name);
        let configured = self.settings.operators.iter().any(|o| user_key(o) == key);
        store::run(&self.store, move |s| {
            if configured && s.account_like(&name)?.is_some_and(|a| a == name) {
                return Ok(true);
            }
            s.is_operator(&name)
        })
        .await
    }

    /// Warns, at start, of each `--operator` name no account has yet: whoever registers it
    /// first becomes an operator.
    pub async fn warn_unclaimed_operators(&self) -> anyhow::Result<()> {
        let names = self.settings.operators.clone();
        let unclaimed = store::run(&self.store, move |s| {
            let mut unclaimed = Vec::new();
            for name in names {
                if s.account_like(&name)?.is_none() {
                    unclaimed.push(name);
                }
            }
            Ok(unclaimed)
        })
        .await?;
        for name in unclaimed {
            warn!(operator = %name, "--operator {name}: no account has this name yet, and \
                whoever creates it becomes an operator; create it now (parley user add {name})");
        }
        Ok(())
    }

    /// The accounts that are operators by configuration (`--operator`).
    pub fn configured_operators(&self) -> &[String] {
        &self.settings.operators
    }

    /// Carries out an operator's `event` here and on every other node; how many sessions (or
    /// subscriptions, for a closed room) it ended here.
    pub fn admin_everywhere(&self, event: AdminEvent) -> usize {
        let ended = self.admin_here(&event);
        if let Some(bus) = &self.bus {
            bus.publish_admin(&event);
        }
        ended
    }

    /// Carries out an operator's `event` on this node (storage already holds what it changes).
    pub fn admin_here(&self, event: &AdminEvent) -> usize {
        info!(?event, node = self.node(), "operator action");
        match event {
            AdminEvent::KickUser { user, reason } => self.remove_user(user, &kicked(reason)),
            AdminEvent::KickSession {
                node,
                session,
                reason,
            } if node == self.node() => usize::from(self.remove_session(*session, &kicked(reason))),
            AdminEvent::KickSession { .. } => 0,
            AdminEvent::Ban { user, reason } => {
                self.admin_generation
                    .change(|| self.bans().ban(user, reason));
                self.remove_user(user, &banned(reason))
            }
            AdminEvent::Unban { user } => {
                self.admin_generation.change(|| self.bans().unban(user));
                0
            }
            AdminEvent::CloseRoom { room, reason } => {
                self.admin_generation
                    .change(|| self.closed.close(room, reason));
                self.end_room(room, reason)
            }
            AdminEvent::ReopenRoom { room } => {
                self.admin_generation.change(|| self.closed.reopen(room));
                0
            }
        }
    }

    /// Closes every session of `user` (any spelling, account or guest) with `reason`.
    fn remove_user(&self, user: &str, reason: &str) -> usize {
        let guard = self.lock();
        guard
            .outboxes
            .values()
            .filter(|o| is_user(&o.info, user))
            .filter(|o| o.evicted().evict(CLOSE_REMOVED, reason.to_owned()))
            .count()
    }

    /// Closes session `session` of this node with `reason`; `false` if there is none.
    fn remove_session(&self, session: SessionId, reason: &str) -> bool {
        let guard = self.lock();
        guard
            .outboxes
            .get(&session)
            .is_some_and(|o| o.evicted().evict(CLOSE_REMOVED, reason.to_owned()))
    }

    /// Ends every subscription to closed `room` and its side channels, telling their sessions.
    fn end_room(&self, room: &str, reason: &str) -> usize {
        let ended =
            self.apply(|broker, events| broker.revoke_room_where(room, &|_, _| true, events));
        let count = ended.len();
        let why = if reason.is_empty() {
            format!("room_closed: room {room:?} was closed by an operator")
        } else {
            format!("room_closed: room {room:?} was closed: {reason}")
        };
        self.tell_ended(room, ended, why);
        count
    }

    /// Says who session `session` is, once authenticated: operators see it under that name, and
    /// a banned user's session is closed at once (the ban may have come after the credential
    /// was checked).
    pub(super) fn identify(&self, session: SessionId, identity: &Identity) {
        let mut guard = self.lock();
        let Some(outbox) = guard.outboxes.get_mut(&session) else {
            return;
        };
        outbox.info.user = Some(identity.name.clone());
        outbox.info.guest = identity.guest;
        // Under the hub's lock, after the name is set: a ban made meanwhile either finds the
        // session by its name or is seen here.
        if let Some(reason) = self.bans().reason(&identity.name) {
            outbox.evicted().evict(CLOSE_REMOVED, banned(&reason));
        }
    }

    /// This node's sessions (of `user` only, any spelling, if given): at most `limit`, oldest
    /// first, and how many there are in all. Under the hub's lock: one pass keeping the keys of
    /// the `limit` oldest (no allocation per session), then those `limit` built.
    pub fn connections(&self, user: Option<&str>, limit: usize) -> (Vec<Connection>, usize) {
        let guard = self.lock();
        let mut total = 0;
        let mut oldest = BinaryHeap::with_capacity(limit.saturating_add(1).min(1024));
        for (&id, outbox) in &guard.outboxes {
            if user.is_some_and(|u| !is_user(&outbox.info, u)) {
                continue;
            }
            total += 1;
            oldest.push((outbox.info.since_ms, id));
            if oldest.len() > limit {
                oldest.pop();
            }
        }
        let list = oldest
            .into_sorted_vec()
            .into_iter()
            .filter_map(|(_, id)| guard.outboxes.get(&id).map(|o| connection(id, o)))
            .collect();
        (list, total)
    }

    /// The `n` sessions with the most waiting in their outbox now (none with an empty one),
    /// and the slow consumers evicted lately, newest first. Under the hub's lock: one pass
    /// reading each outbox's depth and keeping the `n` deepest keys, then those `n` built.
    pub fn slow_consumers(&self, n: usize) -> (Vec<Connection>, Vec<Eviction>) {
        let guard = self.lock();
        // Smallest key first is deepest first; the heap drops its largest, the shallowest.
        let mut deepest = BinaryHeap::with_capacity(n.saturating_add(1).min(1024));
        for (&id, outbox) in &guard.outboxes {
            let (waiting, bytes) = outbox_depth(outbox);
            if waiting == 0 {
                continue;
            }
            deepest.push((Reverse(bytes), id));
            if deepest.len() > n {
                deepest.pop();
            }
        }
        let list = deepest
            .into_sorted_vec()
            .into_iter()
            .filter_map(|(_, id)| guard.outboxes.get(&id).map(|o| connection(id, o)))
            .collect();
        drop(guard);
        (list, self.evictions.list())
    }

    /// The `n` rooms with the most messages numbered here lately, busiest first, and the
    /// milliseconds that covers.
    pub fn busiest_rooms(&self, n: usize) -> (Vec<(String, u64)>, u64) {
        self.activity.top(n, now_ms())
    }

    /// Deletes message `id` of `room` as operator `operator`, whatever the room's rules: the same
    /// deletion event its author's would be, so every client applies it alike.
    pub async fn delete_as_operator(
        &self,
        operator: &Identity,
        room: &str,
        id: u64,
    ) -> Result<Published, Refusal> {
        let room = RoomName::parse(room)
            .map_err(|e| Refusal::new("invalid_room", e.to_string()))?
            .into_string();
        self.target_of(&room, id).await?;
        let publish = Publish {
            headers: chat_headers(Kind::Delete, Some(id), None, None),
            body: Bytes::new(),
            now_ms: now_ms(),
            ..Publish::default()
        };
        let destination = Destination::Topic(room);
        let name = operator.name.clone();
        self.apply(|broker, events| broker.publish_as(name, &destination, publish, events))
            .map_err(publish_refusal)
    }

    /// Reads the bans and closed rooms back from storage (at start, in cluster mode every
    /// [`ADMIN_RELOAD_EVERY`] and when the bus may have lost an operator's action), closing
    /// what they newly forbid. An action applied here while storage was read makes it read
    /// again, so the older read never erases it.
    pub async fn reload_admin(&self) -> anyhow::Result<()> {
        for _ in 0..RELOAD_TRIES {
            let seen = self.admin_generation.now();
            let (bans, closed) = store::run(&self.store, |s| {
                Ok((s.bans("", MAX_HELD)?, s.closed_rooms("", MAX_HELD)?))
            })
            .await?;
            for (what, n) in [("bans", bans.len()), ("closed rooms", closed.len())] {
                if n >= MAX_HELD {
                    warn!(
                        held = MAX_HELD,
                        "storage holds more {what} than a node keeps: \
                        only the first {MAX_HELD} by name hold"
                    );
                }
            }
            let replaced = self.admin_generation.replace_if(seen, || {
                let bans = self
                    .bans()
                    .replace(bans.into_iter().map(|b| (b.name, b.reason)));
                let rooms = self
                    .closed
                    .replace(closed.into_iter().map(|c| (c.name, c.reason)));
                (bans, rooms)
            });
            if let Some((newly_banned, newly_closed)) = replaced {
                self.remove_banned(&newly_banned);
                for (room, reason) in newly_closed {
                    self.end_room(&room, &reason);
                }
                return Ok(());
            }
        }
        warn!(
            "bans and closed rooms kept changing while read from storage; the next reload \
            reads them again"
        );
        Ok(())
    }

    /// Closes the sessions of `banned` (user keys and reasons), newly banned by a reload.
    fn remove_banned(&self, banned_now: &HashMap<String, String>) {
        if banned_now.is_empty() {
            return;
        }
        let guard = self.lock();
        for outbox in guard.outboxes.values() {
            let key = outbox.info.user.as_deref().map(user_key);
            if let Some(reason) = key.and_then(|k| banned_now.get(&k)) {
                outbox.evicted().evict(CLOSE_REMOVED, banned(reason));
            }
        }
    }

    /// Starts the upkeep of operators' state until the hub is dropped: audit rows older than
    /// `audit_retention` deleted every hour and, in cluster mode, the bans and closed rooms
    /// reloaded every [`ADMIN_RELOAD_EVERY`] (what repairs an action the bus dropped).
    pub fn start_admin_upkeep(self: &Arc<Self>, audit_retention: Duration) {
        let me = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let mut every = tokio::time::interval(AUDIT_PURGE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(hub) = me.upgrade() else { return };
                hub.purge_audit(audit_retention).await;
            }
        });
        if !self.is_clustered() {
            return;
        }
        let me = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let mut every = tokio::time::interval(ADMIN_RELOAD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await; // the first tick is now: the start read them already
            loop {
                every.tick().await;
                let Some(hub) = me.upgrade() else { return };
                if let Err(error) = hub.reload_admin().await {
                    warn!(%error, "reloading bans and closed rooms failed");
                }
            }
        });
    }

    /// Deletes the audit rows older than `retention`.
    async fn purge_audit(&self, retention: Duration) {
        let retention_ms = retention.as_millis().try_into().unwrap_or(u64::MAX);
        let before = now_ms().saturating_sub(retention_ms);
        match store::run(&self.store, move |s| s.purge_audit(before)).await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "audit rows past their retention deleted"),
            Err(e) => error!(error = %e, "purging the audit log failed"),
        }
    }

    /// [`Hub::reload_admin`] off the caller's task, logging a failure.
    pub(super) fn reload_admin_soon(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.spawn(async move {
            if let Err(error) = me.reload_admin().await {
                warn!(%error, "reloading bans and closed rooms failed");
            }
        });
    }
}

/// Is the session `info` describes one of `user`'s (any spelling)?
fn is_user(info: &SessionInfo, user: &str) -> bool {
    info.user
        .as_ref()
        .is_some_and(|name| name.eq_ignore_ascii_case(user))
}

/// What a kicked session is told.
fn kicked(reason: &str) -> String {
    if reason.is_empty() {
        "kicked: by an operator".to_owned()
    } else {
        format!("kicked: {reason}")
    }
}

/// What waits in `outbox`: deliveries and notices, and their bytes.
fn outbox_depth(outbox: &super::outbox::Outbox) -> (usize, usize) {
    let [(notices, notice_bytes), (deliveries, delivery_bytes)] = outbox.mail.depth();
    (deliveries + notices, delivery_bytes + notice_bytes)
}

/// One session as operators see it.
fn connection(id: SessionId, outbox: &super::outbox::Outbox) -> Connection {
    let (waiting, waiting_bytes) = outbox_depth(outbox);
    let info = &outbox.info;
    Connection {
        session: id,
        user: info.user.clone(),
        guest: info.user.is_some() && info.guest,
        protocol: info.origin.protocol,
        transport: info.origin.transport,
        address: info.origin.address,
        since_ms: info.since_ms,
        outbox: waiting,
        outbox_bytes: waiting_bytes,
    }
}
