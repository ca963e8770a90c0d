//! Parley's chat dialect over STOMP: an edit, deletion or reaction is a SEND to the room's
//! `/topic/<room>` with a `kind` header (`edit`, `delete`, `react`, `unreact`) and `target-id`;
//! a message may carry `reply-to` and `client-id`. The headers only the server writes are
//! checked here before a SEND reaches the broker. See `docs/stomp.md`.

use std::sync::Arc;

use parley_stomp::broker::{Receipt, SessionId};
use parley_stomp::{Command, Frame};

use parley_stomp::broker::Broker;
use parley_stomp::session::Session;
use parley_stomp::Version;

use parley_stomp::destination::Destination;

use crate::hub::{check_room_send, Change, Hub, SentKey, CLIENT_ID, DM_QUEUE, KIND, TARGET};

/// The room a SEND changes a message of: `/topic/<room>` (no dot) with a `kind` header.
pub(super) fn is_change(frame: &Frame) -> bool {
    frame.command == Command::Send
        && frame.get(KIND).is_some()
        && frame
            .get("destination")
            .and_then(|d| d.strip_prefix("/topic/"))
            .is_some_and(|room| !room.contains('.'))
}

/// Whether any of `frames` is a SEND to a user destination (a direct message, perhaps).
pub(super) fn has_direct(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        f.command == Command::Send
            && f.get("destination")
                .is_some_and(|d| d.starts_with("/user/"))
    })
}

/// Finds the recipients of the direct messages among `frames` (SENDs to
/// `/user/<name>/queue/messages`) before they are applied, so the step under the broker's lock
/// knows them ([`Hub::recipient`]); `Err` is the ERROR's message for one that does not exist.
pub(super) async fn find_recipients(hub: &Hub, frames: &[Frame]) -> Result<(), String> {
    for frame in frames {
        // Cheap first: most SENDs go to rooms.
        let to_user = frame
            .get("destination")
            .is_some_and(|d| d.starts_with("/user/"));
        if frame.command != Command::Send || !to_user {
            continue;
        }
        let destination = frame.get("destination").map(Destination::parse);
        if let Some(Ok(Destination::UserQueue { user, queue })) = destination {
            if queue == DM_QUEUE {
                hub.recipient(&user)
                    .await
                    .map_err(|r| format!("{}: {}", r.code, r.message))?;
            }
        }
    }
    Ok(())
}

/// Cluster mode: asks storage whether the SENDs among `frames` that carry a `client-id` were
/// sent before through another node ([`Hub::recall_sent`]), so the step under the lock knows.
pub(super) async fn recall_sent(hub: &Hub, session: &Session, frames: &[Frame]) {
    let Some(me) = session.identity().filter(|_| hub.is_clustered()) else {
        return;
    };
    for frame in frames.iter().filter(|f| f.command == Command::Send) {
        let (Some(destination), Some(client_id)) = (frame.get("destination"), frame.get(CLIENT_ID))
        else {
            continue;
        };
        let Ok(parsed) = Destination::parse(destination) else {
            continue;
        };
        let key = SentKey::new(
            me.name.clone(),
            destination.to_owned(),
            client_id.to_owned(),
        );
        hub.recall_sent(&key, hub.stream_of(me, &parsed)).await;
    }
}

/// Checks the server-written headers of a SEND to a room: `reply-to` and `client-id` well
/// formed, the rest (`deleted`, `edited`, …) dropped. `Err` is the ERROR's message.
pub(super) fn check_send(frame: &mut Frame) -> Result<(), String> {
    if frame.command != Command::Send {
        return Ok(());
    }
    let to_room = frame
        .get("destination")
        .and_then(|d| d.strip_prefix("/topic/"))
        .is_some_and(|room| !room.contains('.'));
    if !to_room {
        return Ok(());
    }
    check_room_send(&mut frame.headers).map_err(|r| format!("{}: {}", r.code, r.message))
}

/// A SEND with a `client-id` seen before from this user: it is not applied again; its
/// RECEIPT (if asked for) comes once the first one is durable.
pub(super) struct Retried(pub SentKey, pub Option<Receipt>);

/// A SEND's client id, while its frame is applied: [`Sent::before`] it, then [`Sent::after`].
pub(super) struct Sent {
    key: SentKey,
    room: Option<String>,
    last: u64,
}

/// For a SEND with a `client-id`: a retry ([`Err`]) or the key to remember once it is
/// published ([`Hub::remember`]). In cluster mode, after [`recall_sent`].
pub(super) fn sent_key(
    hub: &Hub,
    session: &Session,
    frame: &Frame,
) -> Option<Result<SentKey, Retried>> {
    let user = &session.identity()?.name;
    let destination = frame.get("destination")?;
    let client_id = frame.get(CLIENT_ID)?;
    if frame.command != Command::Send {
        return None;
    }
    let key = SentKey::new(user.clone(), destination.to_owned(), client_id.to_owned());
    if hub.sent_before(&key).is_some() {
        let receipt = frame
            .get("receipt")
            .map(|id| receipt(id, session.version()));
        return Some(Err(Retried(key, receipt)));
    }
    Some(Ok(key))
}

impl Sent {
    /// For a SEND with a `client-id`: a retry ([`Err`]) or a first send to remember.
    pub(super) fn before(
        hub: &Hub,
        broker: &Broker,
        session: &Session,
        frame: &Frame,
    ) -> Option<Result<Sent, Retried>> {
        let key = match sent_key(hub, session, frame)? {
            Ok(key) => key,
            Err(retried) => return Some(Err(retried)),
        };
        let room = key
            .destination()
            .strip_prefix("/topic/")
            .filter(|room| !room.contains('.'))
            .map(str::to_owned);
        let last = room.as_deref().map_or(0, |r| broker.room_last_id(r));
        Some(Ok(Sent { key, room, last }))
    }

    /// The SEND was applied: its id is the room's new last one (0 while storage numbers it).
    pub(super) fn after(self, hub: &Hub, broker: &Broker) {
        let now = self.room.as_deref().map_or(0, |r| broker.room_last_id(r));
        hub.remember(&self.key, if now > self.last { now } else { 0 });
    }
}

/// A RECEIPT for `id`, whatever message id it acknowledges.
fn receipt(id: &str, version: Version) -> Receipt {
    let id = id.to_owned();
    Receipt(Arc::new(move |_| {
        let receipt = Frame::new(Command::Receipt).header("receipt-id", id.as_str());
        parley_stomp::codec::encode(&receipt, version)
    }))
}

/// A SEND with a `kind` header: the change, checked by the hub, then its RECEIPT once
/// durable. `Err` is the ERROR's message.
pub(super) async fn change(
    hub: &Arc<Hub>,
    session: &Session,
    id: SessionId,
    frame: &Frame,
) -> Result<(), String> {
    let change = change_of(frame)?;
    let room = frame
        .get("destination")
        .and_then(|d| d.strip_prefix("/topic/"))
        .unwrap_or_default();
    let target = frame
        .get(TARGET)
        .and_then(|t| t.parse().ok())
        .ok_or("invalid_field: target-id must be a message id")?;
    let receipt = frame.get("receipt").map(|r| receipt(r, session.version()));
    let who = session.identity().ok_or("not connected")?;
    hub.change(who, Some(id), room, target, change, receipt)
        .await
        .map(|_| ())
        .map_err(|refusal| format!("{}: {}", refusal.code, refusal.message))
}

/// The change a `kind` header asks for; the body is an edit's text or a reaction's emoji.
fn change_of(frame: &Frame) -> Result<Change, String> {
    let body = || {
        std::str::from_utf8(&frame.body)
            .map(str::to_owned)
            .map_err(|_| "invalid_field: the body must be UTF-8 text".to_owned())
    };
    Ok(match frame.get(KIND).unwrap_or_default() {
        "edit" => Change::Edit(body()?),
        "delete" => Change::Delete,
        "react" => Change::React {
            emoji: body()?,
            on: Some(true),
        },
        "unreact" => Change::React {
            emoji: body()?,
            on: Some(false),
        },
        other => {
            return Err(format!(
                "invalid_field: kind {other:?} is not edit, delete, react or unreact"
            ))
        }
    })
}
