//! Read state in the raw protocol: the `read` command, the `read` message every session of the
//! account gets when it marks a room read anywhere, and the counts a `joined` answer carries.

use bytes::Bytes;
use parley_stomp::SharedMessage;
use serde_json::{json, Value};

use super::wire;
use crate::hub::{ChatSession, Refusal, READ_LAST, READ_ROOM, READ_WITH};
use crate::store::ReadState;

/// What a `read` marks: a room, or the conversation `with` someone.
pub enum Place {
    /// `"room"`.
    Room(String),
    /// `"with"`.
    With(String),
}

/// Marks a room or conversation read up to `id`. There is no answer of its own: the `read`
/// message that reaches every session of the account, this one included, is it.
pub(super) async fn mark(chat: &ChatSession, place: Place, id: u64) -> Result<(), Refusal> {
    let hub = chat.hub().clone();
    let who = chat.identity();
    match place {
        Place::Room(room) => hub.mark_read(who, &room, id).await,
        Place::With(with) => hub.mark_read_with(who, &with, id).await,
    }
    .map(|_| ())
}

/// The account's read state in `room` (`None` for guests, or when storage cannot say).
pub(super) async fn state_of(chat: &ChatSession, room: &str) -> Option<ReadState> {
    let hub = chat.hub().clone();
    let mut states = hub
        .read_states(chat.identity(), vec![room.to_owned()])
        .await?;
    states.remove(room)
}

/// `{"type":"read","room":…,"id":…}` (a conversation's: `"with"` instead of `"room"`), the
/// frame of a read mark.
pub(super) fn mark_frame(m: &SharedMessage) -> Bytes {
    let id = m.header(READ_LAST).unwrap_or("0");
    wire::text_frame(&match m.header(READ_WITH) {
        Some(with) => json!({"type": "read", "with": with, "id": id}),
        None => json!({"type": "read", "room": m.header(READ_ROOM).unwrap_or_default(), "id": id}),
    })
}

/// The answer to a join: who is in the room, its newest id then and, for an account, its read
/// state there.
pub(super) fn joined(
    room: &str,
    members: &[impl AsRef<str>],
    last_id: u64,
    read: Option<ReadState>,
) -> Bytes {
    let members: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
    let last_id = last_id.to_string();
    let mut answer =
        json!({"type": "joined", "room": room, "members": members, "last_id": last_id});
    if let Some(read) = read {
        answer["last_read"] = Value::from(read.last_read.to_string());
        answer["unread"] = Value::from(read.unread);
        answer["mentions"] = Value::from(read.mentions);
    }
    wire::text_frame(&answer)
}
