//! A SockJS session carried by one WebSocket: `o`, then the app's messages as `a[…]` frames
//! and `h` heartbeats, the client's as JSON arrays (or single strings); or, unframed, one app
//! message per WebSocket message (`<prefix>/websocket` of the conformance services).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::frame::{self, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Message};
use tokio::time::sleep;

use super::frames;
use crate::endpoints::pipe::PeerEnd;
use crate::ws::{Endpoint, Outbound};

/// The WebSocket side of a SockJS session; run it with `ws::drive`.
pub struct SockJsWebSocket {
    peer: PeerEnd,
    heartbeat: Duration,
    framed: bool,
    /// Message bytes one WebSocket message carries at most (more go in the next).
    max_frame: usize,
    opened: bool,
    /// The close to send once the last frames are out.
    closing: Option<(CloseCode, String)>,
}

impl SockJsWebSocket {
    pub(super) fn new(peer: PeerEnd, heartbeat: Duration, framed: bool, max_frame: usize) -> Self {
        Self {
            peer,
            heartbeat,
            framed,
            max_frame,
            opened: false,
            closing: None,
        }
    }

    /// The WebSocket frames of what the app sent, or `None` when nothing came.
    fn frames(&mut self) -> Option<Vec<Bytes>> {
        // At most about a streaming response's worth per WebSocket message.
        let taken = self.peer.take(self.max_frame)?;
        let text = |payload: &[u8]| frame::encode(OpCode::Text, payload);
        let mut out = Vec::new();
        if self.framed {
            if !taken.messages.is_empty() {
                out.push(text(&frames::messages(&taken.messages)));
            }
            if let Some((code, reason)) = &taken.close {
                out.push(text(&frames::close(*code, reason)));
                self.closing = Some((CloseCode::NORMAL, "Normal closure".to_owned()));
            }
        } else {
            out.extend(taken.messages.iter().map(|m| text(m)));
            if let Some((code, reason)) = taken.close {
                let code = CloseCode::from_wire(code).unwrap_or(CloseCode::NORMAL);
                self.closing = Some((code, reason));
            }
        }
        Some(out)
    }
}

impl Endpoint for SockJsWebSocket {
    type Ready = Infallible;

    fn on_event(&mut self, conn: &mut Connection, event: Event) {
        let Event::Message(Message::Text(payload) | Message::Binary(payload)) = event else {
            return;
        };
        let messages = if !self.framed {
            vec![payload]
        } else if payload.is_empty() {
            return;
        } else {
            match frames::parse_sent(&payload, true) {
                Ok(messages) => messages,
                Err(_) => {
                    conn.close(
                        CloseCode::from_wire(3000).unwrap_or(CloseCode::PROTOCOL_ERROR),
                        "Broken framing.",
                    );
                    return;
                }
            }
        };
        if self.peer.push(messages).is_err() {
            // The app has not taken what came before: the client sends faster than it works.
            conn.close(CloseCode::POLICY_VIOLATION, "sending too fast");
        }
    }

    async fn after_events(&mut self, _conn: &mut Connection) {}

    fn write_ready(&mut self, ready: Infallible, _: impl FnMut(&Bytes)) {
        match ready {}
    }

    async fn outbound(&mut self) -> Outbound {
        if !self.opened {
            self.opened = true;
            if self.framed {
                return Outbound::Frames(vec![frame::encode(OpCode::Text, frames::OPEN)]);
            }
        }
        loop {
            if let Some((code, reason)) = self.closing.take() {
                return Outbound::Close(code, reason);
            }
            if let Some(frames) = self.frames() {
                if !frames.is_empty() {
                    return Outbound::Frames(frames);
                }
                continue;
            }
            tokio::select! {
                () = self.peer.ready() => {}
                () = sleep(self.heartbeat), if self.framed => {
                    return Outbound::Frames(vec![frame::encode(OpCode::Text, frames::HEARTBEAT)]);
                }
            }
        }
    }

    fn finish(&mut self) {
        self.peer.leave();
    }
}
