//! Operators' actions on the bus: what one node's operator decided (a kick, a ban, a closed
//! room) travels to every other node, which applies it to its own sessions. They travel on the
//! channel every node always receives (room-rule changes'), marked `X1`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What an operator did that every node carries out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminEvent {
    /// Close every session of `user` (any spelling), saying `reason`.
    KickUser {
        /// The user.
        user: String,
        /// What the sessions are told.
        reason: String,
    },
    /// Close session `session` of node `node`, saying `reason`.
    KickSession {
        /// The node the session is on.
        node: String,
        /// Its id there.
        session: u64,
        /// What it is told.
        reason: String,
    },
    /// `user` is banned: refuse their credentials, close their sessions.
    Ban {
        /// The user.
        user: String,
        /// Why.
        reason: String,
    },
    /// `user`'s ban is lifted.
    Unban {
        /// The user.
        user: String,
    },
    /// `room` is closed: its subscriptions end, it takes no new ones and no messages.
    CloseRoom {
        /// The room.
        room: String,
        /// Why.
        reason: String,
    },
    /// `room` is open again.
    ReopenRoom {
        /// The room.
        room: String,
    },
}

/// The envelope: the sending node (which ignores its own) and the event.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    event: AdminEvent,
}

/// The marker of admin payloads.
const MARK: &[u8] = b"X1\n";

/// `event` from `node` as a bus payload.
pub(super) fn encode(node: &str, event: &AdminEvent) -> Bytes {
    let envelope = Envelope {
        node: node.to_owned(),
        event: event.clone(),
    };
    let mut payload = MARK.to_vec();
    payload.extend(serde_json::to_vec(&envelope).unwrap_or_default());
    Bytes::from(payload)
}

/// `Some(Ok((node, event)))` for an admin payload, `Some(Err(_))` for a malformed one, `None`
/// for another kind of payload.
pub(super) fn decode(payload: &[u8]) -> Option<Result<(String, AdminEvent), serde_json::Error>> {
    let json = payload.strip_prefix(MARK)?;
    Some(serde_json::from_slice::<Envelope>(json).map(|e| (e.node, e.event)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_others_are_not_ours() {
        let event = AdminEvent::Ban {
            user: "mallory".into(),
            reason: "spam \"and\" worse\n".into(),
        };
        let payload = encode("n1", &event);
        let (node, back) = decode(&payload).unwrap().unwrap();
        assert_eq!((node.as_str(), back), ("n1", event));
        assert!(decode(b"A1\n{}").is_none());
        assert!(decode(b"X1\n{not json").unwrap().is_err());
    }
}
