//! Parley's raw JSON protocol over WebSocket (`/ws`): join, send, edit and react with `ref`,
//! and the messages, events, acks and errors that come back.

use std::borrow::Cow;
use std::fmt::Write as _;

use futures_util::SinkExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::link::{
    Change, ChangeSend, Closed, Credential, Dial, Handler, Link, OpenError, Refused, Sent, Target,
};
use super::transport::{next_ws_payload, ws_closed, ws_open, Ws};
use crate::checker::Stream;
use crate::stats::ErrorKind;

/// A raw JSON connection.
pub struct Raw {
    ws: Box<Ws>,
}

impl Raw {
    /// Opens `/ws`; a guest names itself in the query, a token goes in the handshake.
    pub(super) async fn open(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let base = dial.targets.path("/ws");
        let path = match dial.credential {
            Credential::Guest => format!("{base}?name={}", dial.name),
            Credential::Token(_) => base.to_owned(),
        };
        let ws = ws_open(dial, &path, dial.credential, None).await?;
        Ok(Self { ws: Box::new(ws) })
    }
}

impl Link for Raw {
    async fn join(&mut self, room: &str, _dms: bool, since: Option<u64>) -> Result<(), Closed> {
        // Direct messages need no subscription: they reach every connection of the user.
        let text = match since {
            Some(id) => format!(r#"{{"type":"join","room":"{room}","since":"{id}"}}"#),
            None => format!(r#"{{"type":"join","room":"{room}"}}"#),
        };
        self.ws.send(Message::text(text)).await.map_err(ws_closed)
    }

    async fn send(&mut self, to: Target<'_>, body: &str, seq: u64) -> Result<(), Closed> {
        // Rooms, user names and stamped bodies need no JSON escaping (validated at load).
        let mut text = String::with_capacity(body.len() + 64);
        let (field, value, tag) = match to {
            Target::Room(room) => ("room", room, 'r'),
            Target::User(user) => ("to", user, 'd'),
        };
        // Writing into a String cannot fail.
        write!(
            text,
            r#"{{"type":"send","{field}":"{value}","body":"{body}","ref":"{tag}{seq}"}}"#
        )
        .expect("write to String");
        self.ws.send(Message::text(text)).await.map_err(ws_closed)
    }

    async fn change(
        &mut self,
        room: &str,
        target: u64,
        what: ChangeSend<'_>,
        n: u64,
    ) -> Result<(), Closed> {
        // Rooms and stamped bodies need no JSON escaping; the emoji is one of the bots' own.
        let text = match what {
            ChangeSend::Edit(body) => format!(
                r#"{{"type":"edit","room":"{room}","id":"{target}","body":"{body}","ref":"{}{n}"}}"#,
                Change::Edit.tag()
            ),
            ChangeSend::React(emoji, on) => format!(
                r#"{{"type":"react","room":"{room}","id":"{target}","emoji":"{emoji}","on":{on},"ref":"{}{n}"}}"#,
                Change::React.tag()
            ),
        };
        self.ws.send(Message::text(text)).await.map_err(ws_closed)
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        if let Some(payload) = next_ws_payload(&mut self.ws).await? {
            handle_raw(&payload, h);
        }
        Ok(())
    }

    async fn close(&mut self) {
        // The WebSocket's own close (with a close frame), not `SinkExt::close` on the box.
        let _ = (*self.ws).close(None).await;
    }
}

/// A raw protocol message, borrowing from the text where it can.
#[derive(Deserialize)]
pub(super) struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
}

pub(super) fn handle_raw(text: &[u8], h: &mut impl Handler) {
    match serde_json::from_slice::<Incoming<'_>>(text) {
        Ok(msg) => {
            let answers = msg.reference.as_deref().map(Sent::of_ref);
            dispatch_raw(&msg, answers, h);
        }
        Err(e) => h.on_error(ErrorKind::Protocol, &format!("bad JSON from server: {e}")),
    }
}

/// Hands one raw protocol message to `h`; an `ack` or `error` answers the send `answers` (told
/// by its `ref`, or by a Socket.IO acknowledgement's id).
pub(super) fn dispatch_raw(msg: &Incoming<'_>, answers: Option<Sent>, h: &mut impl Handler) {
    match &*msg.kind {
        "message" => {
            let stream = if msg.to.is_some() {
                Stream::Direct
            } else {
                Stream::Room
            };
            let id = msg.id.as_deref().and_then(|i| i.parse().ok());
            h.on_message(stream, id, msg.body.as_deref().unwrap_or("").as_bytes());
        }
        kind @ ("edit" | "delete" | "reaction") => {
            let change = match kind {
                "edit" => Change::Edit,
                "delete" => Change::Delete,
                _ => Change::React,
            };
            let id = msg.id.as_deref().and_then(|i| i.parse().ok());
            h.on_event(change, id, msg.from.as_deref());
        }
        "ack" => h.on_ack(answers.unwrap_or(Sent::Message)),
        "joined" => h.on_joined(),
        "error" => on_raw_error(msg, answers, h),
        _ => {}
    }
}

/// An `error`: a refusal the bots expect is counted as such; anything else is a protocol error,
/// and a refused send still frees its in-flight slot.
fn on_raw_error(msg: &Incoming<'_>, answers: Option<Sent>, h: &mut impl Handler) {
    let code = msg.code.as_deref().unwrap_or("?");
    match answers {
        Some(Sent::Change(change)) => return h.on_refused(Refused::Change(change)),
        Some(Sent::Dm) if code == "no_such_user" => return h.on_refused(Refused::Dm),
        Some(sent) => h.on_ack(sent),
        None => {}
    }
    h.on_error(ErrorKind::Protocol, &format!("error {code}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::Seen;

    #[test]
    fn raw_messages_reach_the_handler() {
        let mut seen = Seen::default();
        for text in [
            r#"{"type":"joined","room":"r","members":["a","b"]}"#,
            r#"{"type":"message","room":"r","id":"1","from":"a","ts":1,"body":"1:1:1:x"}"#,
            r#"{"type":"message","to":"me","id":"2","from":"a","ts":1,"guest":true,"body":"d"}"#,
            r#"{"type":"ack","id":"1","ref":"r1"}"#,
            r#"{"type":"presence","room":"r","user":"b","event":"join"}"#,
            r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"r2"}"#,
            r#"not json"#,
            r#"{"type":"edit","room":"r","id":"3","target":"1","from":"a","ts":1,"body":"e"}"#,
            r#"{"type":"reaction","room":"r","id":"4","target":"1","from":"b","emoji":"x","op":"add"}"#,
            r#"{"type":"ack","id":"3","ref":"e1"}"#,
            r#"{"type":"error","code":"too_late","message":"late","ref":"e2"}"#,
            r#"{"type":"error","code":"no_such_user","message":"who","ref":"d3"}"#,
        ] {
            handle_raw(text.as_bytes(), &mut seen);
        }
        assert!(seen.joined);
        assert_eq!(seen.acks, 2);
        assert_eq!(seen.change_acks, [Change::Edit]);
        assert_eq!(
            seen.events,
            [
                (Change::Edit, Some(3), Some("a".to_owned())),
                (Change::React, Some(4), Some("b".to_owned()))
            ]
        );
        assert_eq!(seen.refused, [Refused::Change(Change::Edit), Refused::Dm]);
        assert_eq!(
            seen.messages,
            [
                (Stream::Room, b"1:1:1:x".to_vec()),
                (Stream::Direct, b"d".to_vec())
            ]
        );
        assert_eq!(seen.errors.len(), 2);
    }
}
