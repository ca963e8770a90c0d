//! Direct messages: who a DM may go to, and the conversation between two accounts, stored and
//! numbered like a room (`dm:<a>:<b>`) so it has ids, history, catch-up and survives the
//! recipient being away. Delivered to every session of both people, on any protocol and node.

use std::sync::Arc;

use bytes::Bytes;
use parley_stomp::broker::Publish;
use parley_stomp::destination::{valid_user, Destination};
use parley_stomp::session::Identity;

use super::refusal::Refusal;
use super::Hub;
use crate::clock::now_ms;
use crate::store::user_key;

/// The user queue direct messages go to.
pub const DM_QUEUE: &str = "messages";
/// The header naming a direct message's recipient (the same for both people's copies).
pub const RECIPIENT: &str = "recipient";

/// Who a direct message goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The name, as the account spells it.
    pub name: Arc<str>,
    /// An account (the conversation is stored), or a guest online now (it is not).
    pub account: bool,
}

/// The stored conversation of two accounts: `dm:` and both names, in a fixed order.
pub fn conversation(a: &str, b: &str) -> String {
    let (first, second) = if user_key(a) <= user_key(b) {
        (a, b)
    } else {
        (b, a)
    };
    format!("dm:{first}:{second}")
}

/// A stored stream that is a conversation, not a room.
pub fn is_conversation(stream: &str) -> bool {
    stream.starts_with("dm:")
}

/// The other person in conversation `stream`, seen by `me` (`me` itself when talking to
/// oneself); `None` if `me` is not in it.
pub fn peer_in(stream: &str, me: &str) -> Option<String> {
    let (a, b) = stream.strip_prefix("dm:")?.split_once(':')?;
    if a.eq_ignore_ascii_case(me) {
        Some(b.to_owned())
    } else if b.eq_ignore_ascii_case(me) {
        Some(a.to_owned())
    } else {
        None
    }
}

impl Hub {
    /// Who `to` is: an account (spelt as it is), or a guest connected now; otherwise the
    /// `no_such_user` refusal. In cluster mode a guest on another node cannot be seen from here,
    /// so a name that is no account is taken as a guest.
    pub async fn recipient(&self, to: &str) -> Result<Recipient, Refusal> {
        let name = valid_user(to)
            .ok_or_else(|| Refusal::new("invalid_user", format!("no such user name {to:?}")))?;
        let key = user_key(&name);
        // A guest online needs no storage (a guest never has an account's name).
        if self.known.get(&key).is_none() && self.apply(|b, _| b.is_guest_online(&name)) {
            return Ok(Recipient {
                name: name.into(),
                account: false,
            });
        }
        let account = match self.known.get(&key) {
            Some(name) => Some(name),
            None => {
                let lookup = name.clone();
                let found = self
                    .stored("looking the recipient up", move |s| s.account_like(&lookup))
                    .await?;
                found.map(|found| self.known.insert(key, found))
            }
        };
        if let Some(name) = account {
            return Ok(Recipient {
                name,
                account: true,
            });
        }
        let queue = dm_key(&name);
        if self.is_clustered() || self.apply(|broker, _| broker.has_subscribers(&queue)) {
            return Ok(Recipient {
                name: name.into(),
                account: false,
            });
        }
        Err(Refusal::new(
            "no_such_user",
            format!("no user {name:?}: no account, and no guest of that name online"),
        ))
    }
}

/// The fan-out key of `user`'s direct messages: every session of theirs that reads them.
pub fn dm_key(user: &str) -> String {
    format!("/user/{user}/queue/{DM_QUEUE}")
}

/// Addresses a direct message from `from` to `to`: to every session of both; between two
/// accounts numbered and stored in their conversation. Its destination is returned.
pub fn address(from: &Identity, to: &Recipient, publish: &mut Publish) -> Destination {
    publish.headers.retain(|(name, _)| name != RECIPIENT);
    publish
        .headers
        .push((RECIPIENT.to_owned(), to.name.to_string()));
    let stored = to.account && !from.guest;
    publish.stream = stored.then(|| conversation(&from.name, &to.name));
    publish.copy_to = Some(dm_key(&from.name));
    Destination::UserQueue {
        user: to.name.to_string(),
        queue: DM_QUEUE.to_owned(),
    }
}

/// The destination and publish of a direct message (see [`address`]).
pub fn direct(
    from: &Identity,
    to: &Recipient,
    headers: Vec<(String, String)>,
    body: Bytes,
) -> (Destination, Publish) {
    let mut publish = Publish {
        headers,
        body,
        now_ms: now_ms(),
        ..Publish::default()
    };
    let destination = address(from, to, &mut publish);
    (destination, publish)
}

impl Hub {
    /// `user` as a recipient, from what [`Hub::recipient`] found before: an account it knows,
    /// else a guest.
    pub(super) fn known_recipient(&self, user: &str) -> Recipient {
        match self.known.get(&user_key(user)) {
            Some(name) => Recipient {
                name: name.clone(),
                account: true,
            },
            None => Recipient {
                name: user.into(),
                account: false,
            },
        }
    }

    /// The stored conversation of `me` with account `peer`, for history and catch-up.
    pub async fn conversation_with(&self, me: &Identity, peer: &str) -> Result<String, Refusal> {
        me.scope
            .reads(None)
            .map_err(|why| Refusal::new("forbidden", why))?;
        if me.guest {
            return Err(Refusal::new(
                "forbidden",
                "guests' direct messages are not stored",
            ));
        }
        let to = self.recipient(peer).await?;
        if !to.account {
            return Err(Refusal::new("no_such_user", format!("no account {peer:?}")));
        }
        Ok(conversation(&me.name, &to.name))
    }

    /// The stream a message from `sender` to `destination` is stored in, if it is: the room of a
    /// room topic, the conversation of a direct message between accounts (its recipient found
    /// by [`Hub::recipient`] before).
    pub fn stream_of(&self, sender: &Identity, destination: &Destination) -> Option<String> {
        match destination {
            Destination::Topic(room) if !room.contains('.') => Some(room.clone()),
            Destination::UserQueue { user, queue } if queue == DM_QUEUE => {
                let to = self.known_recipient(user);
                (to.account && !sender.guest).then(|| conversation(&sender.name, &to.name))
            }
            _ => None,
        }
    }

    /// A stored direct message keeps to the room message limit.
    pub(super) fn check_direct(&self, to: &Recipient, publish: &Publish) -> Result<(), Refusal> {
        let max = self.settings.edits.max_body;
        if to.account && publish.body.len() > max {
            return Err(Refusal::new(
                "body_too_large",
                format!("body exceeds {max} bytes, the limit for direct messages"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_one_key_for_both_people() {
        assert_eq!(conversation("bob", "Alice"), "dm:Alice:bob");
        assert_eq!(conversation("Alice", "bob"), "dm:Alice:bob");
        assert_eq!(peer_in("dm:Alice:bob", "alice").as_deref(), Some("bob"));
        assert_eq!(peer_in("dm:Alice:bob", "bob").as_deref(), Some("Alice"));
        assert_eq!(peer_in("dm:Alice:Alice", "alice").as_deref(), Some("Alice"));
        assert_eq!(peer_in("dm:Alice:bob", "carol"), None);
        assert!(is_conversation("dm:a:b") && !is_conversation("general"));
    }
}
