//! Operators' actions on the hub: kicking sessions, banning users, closing rooms and deleting
//! messages, carried out here and (through the bus) on every other node; and what operators
//! see: who is connected, the slow consumers, the busiest rooms. The admin API checks who may.

use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::CloseCode;
use parley_stomp::broker::{Publish, Published, SessionId};
use parley_stomp::destination::{Destination, RoomName};
use parley_stomp::session::{Identity, Scope};
use tracing::{info, warn};

use super::message::chat_headers;
use super::refusal::{publish_refusal, Refusal};
use super::registry::{Connection, Eviction, SessionInfo};
use super::Hub;
use crate::auth::bans::banned;
use crate::auth::Bans;
use crate::bus::AdminEvent;
use crate::clock::now_ms;
use crate::store::{self, Kind};

/// Close code (4403, like HTTP 403) of a session an operator ended: kicked, or its user banned.
/// The reason says which (`kicked: …`, `banned: …`).
pub const CLOSE_REMOVED: CloseCode = match CloseCode::from_wire(4403) {
    Some(code) => code,
    None => CloseCode::POLICY_VIOLATION,
};

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
    /// `--operator` or granted in storage (`parley admin grant`)? Storage is read every time,
    /// so a grant or revocation holds at once on every node.
    pub async fn is_operator(&self, who: &Identity) -> anyhow::Result<bool> {
        if who.guest || who.scope != Scope::All {
            return Ok(false);
        }
        if self.settings.operators.iter().any(|o| **o == *who.name) {
            return Ok(true);
        }
        let name = who.name.to_string();
        let granted = store::run(&self.store, |s| s.operators()).await?;
        Ok(granted.iter().any(|o| o.name == name))
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
                self.bans().ban(user, reason);
                self.remove_user(user, &banned(reason))
            }
            AdminEvent::Unban { user } => {
                self.bans().unban(user);
                0
            }
            AdminEvent::CloseRoom { room, reason } => {
                self.closed.close(room, reason);
                self.end_room(room, reason)
            }
            AdminEvent::ReopenRoom { room } => {
                self.closed.reopen(room);
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
            .filter(|o| o.evicted.evict(CLOSE_REMOVED, reason.to_owned()))
            .count()
    }

    /// Closes session `session` of this node with `reason`; `false` if there is none.
    fn remove_session(&self, session: SessionId, reason: &str) -> bool {
        let guard = self.lock();
        guard
            .outboxes
            .get(&session)
            .is_some_and(|o| o.evicted.evict(CLOSE_REMOVED, reason.to_owned()))
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
        outbox.info.user = Some((identity.name.clone(), identity.guest));
        // Under the hub's lock, after the name is set: a ban made meanwhile either finds the
        // session by its name or is seen here.
        if let Some(reason) = self.bans().reason(&identity.name) {
            outbox.evicted.evict(CLOSE_REMOVED, banned(&reason));
        }
    }

    /// This node's sessions (of `user` only, any spelling, if given): at most `limit`, oldest
    /// first, and how many there are in all.
    pub fn connections(&self, user: Option<&str>, limit: usize) -> (Vec<Connection>, usize) {
        let guard = self.lock();
        let mut all: Vec<Connection> = guard
            .outboxes
            .iter()
            .filter(|(_, o)| user.is_none_or(|u| is_user(&o.info, u)))
            .map(|(&id, o)| connection(id, o))
            .collect();
        drop(guard);
        let total = all.len();
        all.sort_by_key(|c| (c.since_ms, c.session));
        all.truncate(limit);
        (all, total)
    }

    /// The `n` sessions with the most waiting in their outbox now (none with an empty one),
    /// and the slow consumers evicted lately, newest first.
    pub fn slow_consumers(&self, n: usize) -> (Vec<Connection>, Vec<Eviction>) {
        let guard = self.lock();
        let mut deepest: Vec<Connection> = guard
            .outboxes
            .iter()
            .map(|(&id, o)| connection(id, o))
            .filter(|c| c.outbox > 0)
            .collect();
        drop(guard);
        deepest.sort_by(|a, b| {
            b.outbox_bytes
                .cmp(&a.outbox_bytes)
                .then(a.session.cmp(&b.session))
        });
        deepest.truncate(n);
        (deepest, self.evictions.list())
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

    /// Reads the bans and closed rooms back from storage (at start, and in cluster mode when the
    /// bus may have lost an operator's action), closing what they newly forbid.
    pub async fn reload_admin(&self) -> anyhow::Result<()> {
        let (bans, closed) =
            store::run(&self.store, |s| Ok((s.bans()?, s.closed_rooms()?))).await?;
        self.bans()
            .replace(bans.into_iter().map(|b| (b.name, b.reason)));
        let newly = self
            .closed
            .replace(closed.into_iter().map(|c| (c.name, c.reason)));
        let bans = self.bans().clone();
        let guard = self.lock();
        for outbox in guard.outboxes.values() {
            let reason = outbox.info.user.as_ref().and_then(|(n, _)| bans.reason(n));
            if let Some(reason) = reason {
                outbox.evicted.evict(CLOSE_REMOVED, banned(&reason));
            }
        }
        drop(guard);
        for (room, reason) in newly {
            self.end_room(&room, &reason);
        }
        Ok(())
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
        .is_some_and(|(name, _)| name.eq_ignore_ascii_case(user))
}

/// What a kicked session is told.
fn kicked(reason: &str) -> String {
    if reason.is_empty() {
        "kicked: by an operator".to_owned()
    } else {
        format!("kicked: {reason}")
    }
}

/// One session as operators see it.
fn connection(id: SessionId, outbox: &super::outbox::Outbox) -> Connection {
    let (deliveries, delivery_bytes) = outbox.deliveries.depth();
    let (notices, notice_bytes) = outbox.notices.depth();
    let info = &outbox.info;
    Connection {
        session: id,
        user: info.user.as_ref().map(|(name, _)| name.clone()),
        guest: info.user.as_ref().is_some_and(|(_, guest)| *guest),
        protocol: info.origin.protocol,
        transport: info.origin.transport,
        address: info.origin.address,
        since_ms: info.since_ms,
        outbox: deliveries + notices,
        outbox_bytes: delivery_bytes + notice_bytes,
    }
}
