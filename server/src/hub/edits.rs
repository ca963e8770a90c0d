//! Changes to earlier messages — edits, deletions, reactions — and the rules before them: who
//! may change which message, how often and how long after. Each change is an event that takes
//! the room's next id, so every protocol, every node and catch-up see it in its place; storage
//! applies it to its message in the same transaction.

use std::sync::Arc;

use bytes::Bytes;
use parley_stomp::broker::{Publish, Published, Receipt, SessionId};
use parley_stomp::destination::Destination;
use parley_stomp::session::Identity;

use super::message::chat_headers;
use super::refusal::{publish_refusal, Refusal};
use super::Hub;
use crate::clock::now_ms;
use crate::store::{Kind, Role, StoredMessage};

/// Longest reaction, in bytes: one emoji, even a family of them joined (👩‍👩‍👧‍👦 is 25).
pub const MAX_EMOJI_BYTES: usize = 32;

/// A change to an earlier message.
#[derive(Clone, Debug)]
pub enum Change {
    /// Its author replaces its text.
    Edit(String),
    /// Its author (or a room admin) deletes it.
    Delete,
    /// Anyone who may read the room reacts with an emoji: added, removed, or (`None`) toggled.
    React {
        /// The emoji.
        emoji: String,
        /// Add (`true`), remove (`false`), or the opposite of what is there (`None`).
        on: Option<bool>,
    },
}

impl Hub {
    /// Checks `who`'s `change` to message `target` of `room` and publishes it as an event from
    /// `session` (`None`: from the server on `who`'s behalf, e.g. a REST call). Once the event is
    /// durable `receipt` goes to the session. Waits for storage: the target may be on its way.
    pub async fn change(
        &self,
        who: &Identity,
        session: Option<SessionId>,
        room: &str,
        target: u64,
        change: Change,
        receipt: Option<Receipt>,
    ) -> Result<Published, Refusal> {
        let room = self.usable_room(who, room)?.into_string();
        self.acl
            .may_post(who, &room)
            .map_err(|why| Refusal::new("forbidden", why))?;
        if let Some(reason) = self.closed.reason(&room) {
            let closed = crate::acl::Refused::Closed(room, reason);
            return Err(Refusal::new(closed.code(), closed.to_string()));
        }
        match &change {
            Change::React { emoji, .. } => check_emoji(emoji)?,
            Change::Edit(body) if body.len() > self.settings.edits.max_body => {
                return Err(Refusal::new(
                    "body_too_large",
                    format!("body exceeds {} bytes", self.settings.edits.max_body),
                ))
            }
            _ => {}
        }
        self.take_change(&who.name)?;
        let message = self.target_of(&room, target).await?;
        let (kind, body) = self.decide(who, &room, &message, change)?;
        let publish = Publish {
            headers: chat_headers(kind, Some(target), None, None),
            body: Bytes::from(body),
            now_ms: now_ms(),
            receipt,
            ..Publish::default()
        };
        let destination = Destination::Topic(room);
        self.apply(|broker, events| match session {
            Some(session) => broker.publish(session, &destination, publish, events),
            None => broker.publish_as(who.name.clone(), &destination, publish, events),
        })
        .map_err(publish_refusal)
    }

    /// Message `id` of `room` as stored, once everything sent before is: not an event, not
    /// deleted.
    pub(super) async fn target_of(&self, room: &str, id: u64) -> Result<StoredMessage, Refusal> {
        if !self.durable().await {
            return Err(Refusal::new(
                "storage_unavailable",
                "storage is not keeping up; try again",
            ));
        }
        let r = room.to_owned();
        // A history page of one: the message with its reactions.
        let found = self
            .stored("reading the message", move |s| {
                s.before(&r, Some(id + 1), 1)
            })
            .await?;
        found
            .into_iter()
            .find(|m| m.id == id && !m.deleted)
            .ok_or_else(|| Refusal::new("no_such_message", format!("no message {id} in {room}")))
    }

    /// What `change` becomes, if `who` may make it: the event's kind and body.
    fn decide(
        &self,
        who: &Identity,
        room: &str,
        message: &StoredMessage,
        change: Change,
    ) -> Result<(Kind, String), Refusal> {
        let mine = *message.from == *who.name && message.guest == who.guest;
        let window = self.settings.edits.window_ms;
        let in_time = window == 0 || now_ms().saturating_sub(message.ts) <= window;
        let late = || {
            Refusal::new(
                "too_late",
                format!(
                    "messages can be changed for {} s after sending",
                    window / 1000
                ),
            )
        };
        match change {
            Change::Edit(body) => {
                if !mine {
                    return Err(Refusal::new(
                        "forbidden",
                        "you can only edit your own messages",
                    ));
                }
                if !in_time {
                    return Err(late());
                }
                Ok((Kind::Edit, body))
            }
            Change::Delete => {
                let admin = !who.guest
                    && matches!(
                        self.acl.role(room, &who.name),
                        Some(Role::Owner | Role::Admin)
                    );
                match (admin, mine, in_time) {
                    (true, _, _) | (false, true, true) => Ok((Kind::Delete, String::new())),
                    (false, true, false) => Err(late()),
                    (false, false, _) => Err(Refusal::new(
                        "forbidden",
                        "you can only delete your own messages (room admins: any)",
                    )),
                }
            }
            Change::React { emoji, on } => {
                let has = message
                    .reactions
                    .iter()
                    .any(|r| r.emoji == emoji && r.users.iter().any(|u| **u == *who.name));
                let kind = if on.unwrap_or(!has) {
                    Kind::React
                } else {
                    Kind::Unreact
                };
                Ok((kind, emoji))
            }
        }
    }

    /// Takes one change from `user`'s rate.
    fn take_change(&self, user: &Arc<str>) -> Result<(), Refusal> {
        let rate = self.settings.edits.per_second;
        if self.changes.take(user, rate) {
            Ok(())
        } else {
            Err(Refusal::new(
                "rate_limited",
                format!("more than {rate} edits, deletions and reactions per second"),
            ))
        }
    }
}

/// A reaction is one short emoji-like string: no spaces, no control characters, no letters or
/// digits of ASCII (so not a word), at most [`MAX_EMOJI_BYTES`].
pub fn check_emoji(emoji: &str) -> Result<(), Refusal> {
    let ok = !emoji.is_empty()
        && emoji.len() <= MAX_EMOJI_BYTES
        && emoji
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            "invalid_emoji",
            format!("a reaction is one emoji of at most {MAX_EMOJI_BYTES} bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_emoji;

    #[test]
    fn emoji_are_short_and_not_words() {
        for ok in ["👍", "🎉", "👩‍👩‍👧‍👦", "❤️"] {
            assert!(check_emoji(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ok", "👍 👍", "\u{7}", &"🎉".repeat(9)] {
            assert!(check_emoji(bad).is_err(), "{bad:?}");
        }
    }
}
