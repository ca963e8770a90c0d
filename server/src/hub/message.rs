//! A room message between its live form and its stored form: the one conversion each way, and
//! handing it to the journal with its sender's acknowledgement.

use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::CloseCode;
use parley_stomp::broker::{Forwarded, Receipt};
use parley_stomp::SharedMessage;
use tracing::warn;

use super::outbox::{tell, Notice, Outbox};
use super::Hub;
use crate::journal::Completion;
use crate::store::StoredMessage;

/// The content type of chat messages.
pub(super) const TEXT_PLAIN: &str = "text/plain;charset=utf-8";

/// A live room message (as the broker delivered it) as stored.
pub(super) fn stored_from_live(room: String, id: u64, message: &SharedMessage) -> StoredMessage {
    StoredMessage {
        room,
        id,
        from: message.header("sender").unwrap_or_default().to_owned(),
        ts: message
            .header("timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        body: String::from_utf8_lossy(message.body()).into_owned(),
        guest: message.header("sender-guest") == Some("true"),
        deleted: false,
    }
}

/// A room message on its way between nodes, as stored (its id comes from storage).
pub(super) fn stored_from_forwarded(room: String, message: &Forwarded) -> StoredMessage {
    StoredMessage {
        room,
        id: message.id,
        from: message.sender.clone(),
        ts: message.now_ms,
        body: String::from_utf8_lossy(&message.body).into_owned(),
        guest: message.guest,
        deleted: false,
    }
}

/// A stored room message as the broker delivers it; a deleted one says so in `deleted: true`.
pub fn forwarded_from_stored(m: StoredMessage) -> Forwarded {
    let key = format!("/topic/{}", m.room);
    let mut headers = vec![("content-type".to_owned(), TEXT_PLAIN.to_owned())];
    if m.deleted {
        headers.push(("deleted".to_owned(), "true".to_owned()));
    }
    Forwarded {
        shown: key.clone(),
        key,
        room: Some(m.room),
        id: m.id,
        sender: m.from,
        guest: m.guest,
        now_ms: m.ts,
        headers,
        body: Bytes::from(m.body),
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
        let stored = stored_from_live(room, id, message);
        let done = match (sender, receipt) {
            (Some(outbox), Some(receipt)) => {
                let (notices, evicted) = (outbox.notices.clone(), outbox.evicted.clone());
                let done: Completion = Box::new(move |ok| {
                    if ok {
                        tell(&notices, &evicted, Notice::Encoded((receipt.0)(id)));
                    } else {
                        evicted.evict(
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
                outbox.evicted.evict_slow("storage overloaded");
            }
        }
    }
}
