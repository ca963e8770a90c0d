//! Parley's chat dialect over STOMP: an edit, deletion or reaction is a SEND to the room's
//! `/topic/<room>` with a `kind` header (`edit`, `delete`, `react`, `unreact`) and `target-id`;
//! a message may carry `reply-to` and `client-id`. The headers only the server writes are
//! checked here before a SEND reaches the broker. See `docs/stomp.md`.

use std::sync::Arc;

use parley_stomp::broker::Receipt;
use parley_stomp::{Command, Frame};

use super::transport::Transport;
use super::{Conn, Ending};
use crate::hub::{check_room_send, Change, KIND, TARGET};

/// The room a SEND changes a message of: `/topic/<room>` (no dot) with a `kind` header.
pub(super) fn is_change(frame: &Frame) -> bool {
    frame.command == Command::Send
        && frame.get(KIND).is_some()
        && frame
            .get("destination")
            .and_then(|d| d.strip_prefix("/topic/"))
            .is_some_and(|room| !room.contains('.'))
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

impl<T: Transport> Conn<'_, T> {
    /// A SEND with a `kind` header: the change, checked by the hub, then its RECEIPT once
    /// durable. A refused change is an ERROR.
    pub(super) async fn change(&mut self, frame: Frame) -> Option<Ending> {
        let change = match change_of(&frame) {
            Ok(change) => change,
            Err(why) => return Some(self.error(&why)),
        };
        let room = frame
            .get("destination")
            .and_then(|d| d.strip_prefix("/topic/"))
            .unwrap_or_default();
        let Some(target) = frame.get(TARGET).and_then(|t| t.parse().ok()) else {
            return Some(self.error("invalid_field: target-id must be a message id"));
        };
        let receipt = frame.get("receipt").map(|id| {
            let (id, version) = (id.to_owned(), self.session.version());
            Receipt(Arc::new(move |_| {
                let receipt = Frame::new(Command::Receipt).header("receipt-id", id.as_str());
                parley_stomp::codec::encode(&receipt, version)
            }))
        });
        let who = self.session.identity()?.clone();
        let (session, hub) = (self.hub.id(), self.hub.hub().clone());
        match hub
            .change(&who, Some(session), room, target, change, receipt)
            .await
        {
            Ok(_) => None,
            Err(refusal) => Some(self.error(&format!("{}: {}", refusal.code, refusal.message))),
        }
    }
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
