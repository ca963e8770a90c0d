//! The raw protocol's JSON: what the server sends, each object in a ready WebSocket text frame.
//! The REST API answers history in the same message shape.

use std::borrow::Cow;

use bytes::Bytes;
use parley_protocol::frame::{self, FrameHeader, OpCode};
use parley_stomp::SharedMessage;
use serde::Serialize;
use serde_json::{json, Value};

use crate::hub::Refusal;
use crate::hub::{peer_in, CLIENT_ID, KIND, RECIPIENT, REPLY_TO, ROOMS_TOPIC, ROOM_HEADER, TARGET};
use crate::store::{Reaction, StoredMessage};

/// One stored message as JSON, in the shape of a live `message`, as it is now: `edited`,
/// `deleted` (without `body`) and its `reactions`.
#[derive(Serialize)]
pub struct MessageJson<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    /// A direct message's recipient (instead of `room`).
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    id: String,
    from: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    guest: bool,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    edited: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    reactions: &'a [Reaction],
}

impl<'a> From<&'a StoredMessage> for MessageJson<'a> {
    fn from(m: &'a StoredMessage) -> Self {
        let to = peer_in(&m.room, &m.from);
        Self {
            r#type: "message",
            room: to.is_none().then_some(m.room.as_str()),
            to,
            id: m.id.to_string(),
            from: &m.from,
            guest: m.guest,
            ts: m.ts,
            body: (!m.deleted).then_some(m.body.as_str()),
            reply_to: m.reply_to.map(|id| id.to_string()),
            client_id: m.client_id.as_deref(),
            edited: m.edited,
            deleted: m.deleted,
            reactions: &m.reactions,
        }
    }
}

/// A JSON value in a WebSocket text frame.
pub fn text_frame(value: &impl Serialize) -> Bytes {
    frame::encode(OpCode::Text, &serde_json::to_vec(value).unwrap_or_default())
}

/// The JSON a frame made here carries, sharing its bytes: transports that speak the raw
/// protocol's JSON without WebSocket framing (the SSE room feed) reuse the frame raw clients
/// share, so a message is encoded once for both.
pub fn json_of(frame: &Bytes) -> Bytes {
    match FrameHeader::parse(frame) {
        Ok(Some((_, header_len))) => frame.slice(header_len.min(frame.len())..),
        // Our own frames always parse; an empty body is what a broken one would be worth.
        _ => Bytes::new(),
    }
}

/// `{"type":"ack","id":…,"ref":…}`.
pub fn ack(id: u64, reference: Option<&str>) -> Value {
    let mut ack = json!({"type": "ack", "id": id.to_string()});
    if let Some(reference) = reference {
        ack["ref"] = Value::from(reference);
    }
    ack
}

/// `{"type":"error","code":…,"message":…,"ref":…}`.
pub fn error(refusal: &Refusal, reference: Option<String>) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    }
    text_frame(&Error {
        r#type: "error",
        code: refusal.code,
        message: &refusal.message,
        reference,
    })
}

/// A page of history: of a room, or of `me`'s conversation `with` someone.
pub fn history(room: &str, me: &str, messages: &[StoredMessage]) -> Bytes {
    let messages: Vec<MessageJson<'_>> = messages.iter().map(MessageJson::from).collect();
    match peer_in(room, me) {
        Some(with) => text_frame(&json!({"type": "history", "with": with, "messages": messages})),
        None => text_frame(&json!({"type": "history", "room": room, "messages": messages})),
    }
}

/// The session lost access to `room` (it stays connected).
pub fn revoked(room: &str, reason: &str) -> Bytes {
    text_frame(&json!({"type": "error", "code": "forbidden", "room": room, "message": reason}))
}

/// An operator ended the session (`reason` is `kicked: …` or `banned: …`): an error whose code
/// is the word before the colon, sent just before the close.
pub fn removed(reason: &str) -> Bytes {
    let code = reason.split(':').next().unwrap_or("removed");
    text_frame(&json!({"type": "error", "code": code, "message": reason}))
}

/// What a message, typing or presence announcement looks like to raw clients, `type` first.
#[derive(Serialize, Default)]
struct Outgoing<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    guest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    /// The message an event changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<Cow<'a, str>>,
    /// A reaction's `add` or `remove`.
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    /// Replayed messages only: changed since (their `edit` events follow in the replay).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    edited: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// A delivered message as the raw protocol's JSON, in a ready WebSocket text frame. The frame
/// is the same for every raw recipient (a DM's `to` is its recipient, in its header), so the
/// caller caches it on the message.
pub fn message_frame(m: &SharedMessage, recipient: &str) -> Bytes {
    let destination = m.header("destination").unwrap_or_default();
    let sender = m.header("sender");
    let guest = m.header("sender-guest") == Some("true");
    let out = match destination.strip_prefix("/topic/") {
        Some(topic) => {
            if topic == ROOMS_TOPIC {
                Outgoing {
                    r#type: "room",
                    room: m.header(ROOM_HEADER),
                    user: sender,
                    event: Some("created"),
                    ..Outgoing::default()
                }
            } else if let Some(room) = topic.strip_suffix(".typing") {
                Outgoing {
                    r#type: "typing",
                    room: Some(room),
                    user: sender,
                    guest,
                    ..Outgoing::default()
                }
            } else if let Some(room) = topic.strip_suffix(".presence") {
                presence(m, room)
            } else {
                Outgoing {
                    room: Some(topic),
                    ..chat_message(m, sender, guest)
                }
            }
        }
        None => Outgoing {
            // Both people get a direct message: `to` is its recipient, not always the reader.
            to: Some(m.header(RECIPIENT).unwrap_or(recipient)),
            ..chat_message(m, sender, guest)
        },
    };
    text_frame(&out)
}

/// A room message, an event about one, or a DM.
fn chat_message<'a>(m: &'a SharedMessage, sender: Option<&'a str>, guest: bool) -> Outgoing<'a> {
    let body = || String::from_utf8_lossy(m.body());
    let common = Outgoing {
        id: m.header("message-id"),
        from: sender,
        guest,
        ts: m.header("timestamp").and_then(|t| t.parse().ok()),
        target: m.header(TARGET),
        ..Outgoing::default()
    };
    match m.header(KIND) {
        Some("edit") => Outgoing {
            r#type: "edit",
            body: Some(body()),
            ..common
        },
        Some("delete") => Outgoing {
            r#type: "delete",
            ..common
        },
        Some(kind @ ("react" | "unreact")) => Outgoing {
            r#type: "reaction",
            emoji: Some(body()),
            op: Some(if kind == "react" { "add" } else { "remove" }),
            ..common
        },
        _ => {
            let deleted = m.header("deleted") == Some("true");
            Outgoing {
                r#type: "message",
                body: (!deleted).then(body),
                reply_to: m.header(REPLY_TO),
                client_id: m.header(CLIENT_ID),
                edited: m.header("edited") == Some("true"),
                deleted,
                ..common
            }
        }
    }
}

/// A presence change.
fn presence<'a>(m: &'a SharedMessage, room: &'a str) -> Outgoing<'a> {
    Outgoing {
        r#type: "presence",
        room: Some(room),
        user: m.header("user"),
        guest: m.header("guest") == Some("true"),
        event: m.header("event"),
        ..Outgoing::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_strips_every_header_size() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let value = json!({"type": "message", "body": "x".repeat(len)});
            let json = serde_json::to_vec(&value).unwrap();
            assert_eq!(
                &json_of(&text_frame(&value))[..],
                &json[..],
                "body of {len}"
            );
        }
    }
}
