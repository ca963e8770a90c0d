//! Read state: each account's last read message per room, the same on every device and tab,
//! and the unread and mention counts after it. Marking a room read is checked here (a room the
//! user may read, an id the room has reached), stored off the runtime, and told to every session
//! of the user — on any protocol, on any node — through the user destination
//! `/user/<name>/queue/read` (headers `room` and `last-read`). Guests have no read state: their
//! marks are refused (`guest`) and their counts are absent.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use parley_stomp::broker::Publish;
use parley_stomp::destination::Destination;
use parley_stomp::session::Identity;

use super::checks::STORE_WAIT;
use super::direct::peer_in;
use super::refusal::Refusal;
use super::Hub;
use crate::clock::now_ms;
use crate::store::{self, ReadState};

/// The user queue read marks go to: STOMP clients subscribe to `/user/queue/read`, raw
/// sessions of accounts are subscribed to it when they open ([`super::ChatSession::open`]).
pub const READ_QUEUE: &str = "read";

/// Longest wait for the counts a join or a room list carries: past it they go without (a slow
/// database must not hold up joins).
const COUNTS_WAIT: Duration = Duration::from_secs(2);

/// The header of a read mark naming its room.
pub const READ_ROOM: &str = "room";

/// The header of a read mark naming the other person of its conversation.
pub const READ_WITH: &str = "with";

/// The header of a read mark carrying the last read id.
pub const READ_LAST: &str = "last-read";

impl Hub {
    /// Marks `room` read up to message `id` for `who`, and tells every session of `who`. The
    /// answer is the mark now stored: never lower than before (an older mark from another
    /// device changes nothing).
    pub async fn mark_read(&self, who: &Identity, room: &str, id: u64) -> Result<u64, Refusal> {
        if who.guest {
            return Err(Refusal::new(
                "guest",
                "guests have no read state: sign in to keep it",
            ));
        }
        let room = self.usable_room(who, room)?.into_string();
        self.store_mark(who, &room, id, (READ_ROOM, room.clone()))
            .await
    }

    /// Marks `who`'s conversation `with` someone read up to message `id`, as
    /// [`Hub::mark_read`] does for rooms; the mark told to the sessions names `with`.
    pub async fn mark_read_with(
        &self,
        who: &Identity,
        with: &str,
        id: u64,
    ) -> Result<u64, Refusal> {
        let stream = self.conversation_with(who, with).await?;
        let peer = peer_in(&stream, &who.name).unwrap_or_default();
        self.store_mark(who, &stream, id, (READ_WITH, peer)).await
    }

    /// Stores `who`'s mark of `id` in `stream` (checked against its last id) and tells their
    /// sessions, naming the place by `named` (a header and its value).
    async fn store_mark(
        &self,
        who: &Identity,
        stream: &str,
        id: u64,
        named: (&str, String),
    ) -> Result<u64, Refusal> {
        let last = self.last_id_of(stream, id).await?;
        if id > last {
            return Err(Refusal::new(
                "invalid_id",
                format!(
                    "{} {:?} has no message {id} (its last is {last})",
                    named.0, named.1
                ),
            ));
        }
        let (user, r) = (who.name.to_string(), stream.to_owned());
        let stored = self
            .stored("storing the read mark", move |s| s.set_read(&user, &r, id))
            .await?;
        self.tell_read(who, named, stored);
        Ok(stored)
    }

    /// `who`'s read state in each of `rooms`, in one query; `None` for a guest (no read state)
    /// or when storage cannot answer within [`COUNTS_WAIT`] (logged), so a join or a room list
    /// still works.
    pub async fn read_states(
        &self,
        who: &Identity,
        rooms: Vec<String>,
    ) -> Option<HashMap<String, ReadState>> {
        if who.guest || rooms.is_empty() {
            return None;
        }
        let user = who.name.to_string();
        let counting = store::run(&self.store, move |s| s.unread(&user, &rooms));
        match tokio::time::timeout(COUNTS_WAIT, counting).await {
            Ok(Ok(states)) => Some(states),
            Ok(Err(error)) => {
                tracing::error!(%error, "storage error");
                None
            }
            Err(_) => {
                tracing::warn!("unread counts took too long; answered without them");
                None
            }
        }
    }

    /// `who`'s read state in every room they have marked read, by room name.
    pub async fn all_read_states(
        &self,
        who: &Identity,
    ) -> anyhow::Result<Vec<(String, ReadState)>> {
        let user = who.name.to_string();
        let reading = store::run(&self.store, move |s| {
            let rooms = s.read_rooms(&user)?;
            s.unread(&user, &rooms)
        });
        let mut found = tokio::time::timeout(STORE_WAIT, reading)
            .await
            .map_err(|_| anyhow::anyhow!("unread counts timed out"))??
            .into_iter()
            .filter(|(room, _)| self.acl.may_use(who, room).is_ok())
            .collect::<Vec<_>>();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Publishes the mark to every session of `who` that listens for marks, here and on the
    /// other nodes.
    fn tell_read(&self, who: &Identity, (name, value): (&str, String), last_read: u64) {
        let destination = Destination::UserQueue {
            user: who.name.to_string(),
            queue: READ_QUEUE.to_owned(),
        };
        let publish = Publish {
            headers: vec![
                (name.to_owned(), value),
                (READ_LAST.to_owned(), last_read.to_string()),
            ],
            body: Bytes::new(),
            now_ms: now_ms(),
            ..Publish::default()
        };
        let told = self.apply(|broker, events| {
            broker.publish_as(who.name.clone(), &destination, publish, events)
        });
        if let Err(error) = told {
            tracing::warn!(%error, "read mark not told to the user's sessions");
        }
    }
}
