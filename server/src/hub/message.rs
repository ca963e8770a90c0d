//! A room message between its live form and its stored form: the one conversion each way, and
//! handing it to the journal with its sender's acknowledgement.

use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::CloseCode;
use parley_stomp::broker::{Forwarded, Receipt};
use parley_stomp::destination::valid_user;
use parley_stomp::SharedMessage;
use tracing::warn;

use super::direct::{dm_key, peer_in, DM_QUEUE, RECIPIENT};
use super::outbox::{tell, Notice, Outbox};
use super::refusal::Refusal;
use super::Hub;
use crate::journal::Completion;
use crate::store::{Kind, StoredMessage};

/// The content type of chat messages.
pub(super) const TEXT_PLAIN: &str = "text/plain;charset=utf-8";

/// Headers a room message or event carries besides the broker's own: which event it is, the
/// message it changes or replies to, the sender's id for it. What clients send in these is
/// never passed through as it is: the server checks it and sets them ([`chat_headers`]).
pub const KIND: &str = "kind";
/// The message an event changes.
pub const TARGET: &str = "target-id";
/// The message a message replies to.
pub const REPLY_TO: &str = "reply-to";
/// The sender's own id for a message (a retry with the same one is not a second message).
pub const CLIENT_ID: &str = "client-id";
/// Headers only the server writes on room messages (`kind` and `target-id` come from
/// [`Hub::change`], which checks them; `reply-to` and `client-id` are checked on sends).
const SERVER_ONLY: [&str; 4] = [KIND, TARGET, "deleted", "edited"];

/// The headers of a client's room message (a STOMP SEND's): `reply-to` must be a message id,
/// `client-id` as [`check_client_id`] says; the server-only ones are dropped.
pub fn check_room_send(headers: &mut Vec<(String, String)>) -> Result<(), Refusal> {
    headers.retain(|(name, _)| !SERVER_ONLY.contains(&name.as_str()));
    for (name, value) in headers.iter() {
        match name.as_str() {
            REPLY_TO if value.parse::<u64>().is_err() => {
                return Err(Refusal::new(
                    "invalid_field",
                    "reply-to must be a message id",
                ))
            }
            CLIENT_ID => check_client_id(value)?,
            _ => {}
        }
    }
    Ok(())
}

/// Longest client id of a message, in bytes.
pub const MAX_CLIENT_ID: usize = 64;

/// A client's id for its message: 1–[`MAX_CLIENT_ID`] bytes of printable ASCII.
pub fn check_client_id(id: &str) -> Result<(), Refusal> {
    if (1..=MAX_CLIENT_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Refusal::new(
            "invalid_field",
            format!("a client_id is 1-{MAX_CLIENT_ID} printable ASCII characters"),
        ))
    }
}

/// Most users one message mentions (`@name`); more are not counted.
const MAX_MENTIONS: usize = 20;

/// The users a body mentions: `@name` at the start or after a character that cannot be part of
/// a name, each once (ignoring case), at most [`MAX_MENTIONS`]. A name's trailing dots are
/// punctuation (`thanks @bob.`).
pub fn mentions(body: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    let mut found: Vec<String> = Vec::new();
    let mut prev = ' ';
    for (at, c) in body.char_indices() {
        if c == '@' && !is_name(prev) && prev != '@' {
            let rest = &body[at + 1..];
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('.');
            if valid_user(name).is_some() && !found.iter().any(|f| f.eq_ignore_ascii_case(name)) {
                found.push(name.to_owned());
                if found.len() == MAX_MENTIONS {
                    break;
                }
            }
        }
        prev = c;
    }
    found
}

/// The headers of a room message or event: its content type, then what it is.
pub(super) fn chat_headers(
    kind: Kind,
    target: Option<u64>,
    reply_to: Option<u64>,
    client_id: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_owned(), TEXT_PLAIN.to_owned())];
    if kind != Kind::Message {
        headers.push((KIND.to_owned(), kind.as_str().to_owned()));
    }
    if let Some(target) = target {
        headers.push((TARGET.to_owned(), target.to_string()));
    }
    if let Some(reply_to) = reply_to {
        headers.push((REPLY_TO.to_owned(), reply_to.to_string()));
    }
    if let Some(client_id) = client_id {
        headers.push((CLIENT_ID.to_owned(), client_id.to_owned()));
    }
    headers
}

/// A room message's body, sender and headers as stored; `id` is the room's.
fn stored(
    room: String,
    id: u64,
    from: String,
    ts: u64,
    guest: bool,
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> StoredMessage {
    let body = String::from_utf8_lossy(body).into_owned();
    let kind = header(KIND)
        .and_then(|k| Kind::parse(&k))
        .unwrap_or_default();
    let number = |name| header(name).and_then(|v| v.parse().ok());
    StoredMessage {
        mentions: if kind == Kind::Message {
            mentions(&body)
        } else {
            Vec::new()
        },
        room,
        id,
        from,
        ts,
        body,
        guest,
        kind,
        target: number(TARGET),
        reply_to: number(REPLY_TO),
        client_id: header(CLIENT_ID),
        ..StoredMessage::default()
    }
}

/// A live room message (as the broker delivered it) as stored.
pub(super) fn stored_from_live(room: String, id: u64, message: &SharedMessage) -> StoredMessage {
    stored(
        room,
        id,
        message.header("sender").unwrap_or_default().to_owned(),
        message
            .header("timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        message.header("sender-guest") == Some("true"),
        message.body(),
        |name| message.header(name).map(str::to_owned),
    )
}

/// A room message on its way between nodes, as stored (its id comes from storage).
pub(super) fn stored_from_forwarded(room: String, message: &Forwarded) -> StoredMessage {
    stored(
        room,
        message.id,
        message.sender.clone(),
        message.now_ms,
        message.guest,
        &message.body,
        |name| {
            let found = message.headers.iter().find(|(n, _)| n == name);
            found.map(|(_, v)| v.clone())
        },
    )
}

/// A stored room message or event as the broker delivers it; a deleted message says so in
/// `deleted: true`, an edited one in `edited: true`. A direct message goes to both people.
pub fn forwarded_from_stored(m: StoredMessage) -> Forwarded {
    let mut headers = chat_headers(m.kind, m.target, m.reply_to, m.client_id.as_deref());
    if m.deleted {
        headers.push(("deleted".to_owned(), "true".to_owned()));
    }
    if m.edited {
        headers.push(("edited".to_owned(), "true".to_owned()));
    }
    let (key, shown, also) = match peer_in(&m.room, &m.from) {
        Some(to) => {
            let key = dm_key(&to);
            headers.push((RECIPIENT.to_owned(), to));
            let also = dm_key(&m.from);
            (key, format!("/user/queue/{DM_QUEUE}"), Some(also))
        }
        None => {
            let key = format!("/topic/{}", m.room);
            (key.clone(), key, None)
        }
    };
    Forwarded {
        shown,
        key,
        room: Some(m.room),
        id: m.id,
        sender: m.from,
        guest: m.guest,
        now_ms: m.ts,
        headers,
        body: Bytes::from(m.body),
        also,
    }
}

/// A stored room message in the shape of a live delivery (catch-up replays it so).
pub fn live_from_stored(m: StoredMessage) -> Arc<SharedMessage> {
    forwarded_from_stored(m).into_message()
}

impl Hub {
    /// Queues a room message for storage; once it is durable, `receipt` goes to its sender.
    /// A message that cannot be stored closes its sender: it was never acknowledged.
    pub(super) fn journal_message(
        &self,
        sender: Option<&Outbox>,
        room: String,
        id: u64,
        message: &SharedMessage,
        receipt: Option<Receipt>,
    ) {
        self.ensure_room(&room);
        if !super::direct::is_conversation(&room) {
            // Two people's conversations are nobody's business.
            self.activity.count(&room, crate::clock::now_ms());
        }
        let stored = stored_from_live(room, id, message);
        let done = match (sender, receipt) {
            (Some(outbox), Some(receipt)) => {
                let mail = outbox.mail.clone();
                let done: Completion = Box::new(move |ok| {
                    if ok {
                        tell(&mail, Notice::Encoded((receipt.0)(id)));
                    } else {
                        mail.companion().evict(
                            CloseCode::INTERNAL_ERROR,
                            "storage error: the message could not be stored".to_owned(),
                        );
                    }
                });
                Some(done)
            }
            _ => None,
        };
        if self.journal.push(stored, done).is_err() {
            warn!("storage cannot keep up; closing the sender");
            if let Some(outbox) = sender {
                outbox.evicted().evict_slow("storage overloaded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn mentions_are_names_after_an_at_sign() {
        assert_eq!(mentions("hi @bob and @Carol."), ["bob", "Carol"]);
        assert_eq!(mentions("@alice @ALICE @alice"), ["alice"]);
        assert_eq!(
            mentions("mail me at a@b.c, @@x, @ alone"),
            Vec::<String>::new()
        );
        assert_eq!(mentions("(@dave) @eve:"), ["dave", "eve"]);
        let many: String = (0..30).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mentions(&many).len(), 20);
    }
}
