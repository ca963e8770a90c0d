//! The WebSocket transport of an Engine.IO session: one packet per WebSocket message (binary
//! packets as binary messages). A WebSocket opened with a polling session's `sid` first
//! probes (`2probe` → `3probe`) and takes the session over at `5`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::frame::{self, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Message};

use super::engine::EngineSession;
use super::packet::{self, EnginePacket};
use crate::ws::{Endpoint, Outbound};

/// Bytes of packets one wake-up takes at most.
const MAX_TAKE: usize = 64 * 1024;

/// A session's WebSocket; run it with `ws::drive`.
pub struct EngineWebSocket {
    session: Arc<EngineSession>,
    /// The open packet still to send (a session that began on this WebSocket).
    open: Option<Bytes>,
    /// Carrying the session (from the start, or since `5`).
    active: bool,
    /// The close to send once the last packets are out.
    closing: Option<(CloseCode, String)>,
}

impl EngineWebSocket {
    /// The WebSocket of a session that began on it: `open` goes first.
    pub fn opening(session: Arc<EngineSession>, open: Bytes) -> Self {
        Self {
            session,
            open: Some(open),
            active: true,
            closing: None,
        }
    }

    /// A WebSocket probing to take over a polling session.
    pub fn upgrading(session: Arc<EngineSession>) -> Self {
        Self {
            session,
            open: None,
            active: false,
            closing: None,
        }
    }

    /// Before `5`: only the probe and the upgrade are expected.
    fn probe(&mut self, conn: &mut Connection, payload: &[u8]) {
        match packet::engine_packet(payload) {
            Ok(EnginePacket::Ping(b"probe")) => {
                let _ = conn.send_encoded(frame::encode(OpCode::Text, b"3probe"));
                self.session.probing();
            }
            Ok(EnginePacket::Upgrade) => {
                self.session.upgraded();
                self.active = true;
            }
            _ => conn.close(CloseCode::PROTOCOL_ERROR, "expected the upgrade probe"),
        }
    }

    /// The WebSocket messages of what the app sent, or `None` when nothing came.
    fn frames(&mut self) -> Option<Vec<Bytes>> {
        let taken = self.session.peer.take(MAX_TAKE)?;
        let mut out = Vec::with_capacity(taken.messages.len());
        for message in &taken.messages {
            out.push(match packet::engine_packet(message) {
                Ok(EnginePacket::Binary(data)) => frame::encode(OpCode::Binary, &data),
                _ => frame::encode(OpCode::Text, message),
            });
        }
        if let Some((code, reason)) = taken.close {
            let code = CloseCode::from_wire(code).unwrap_or(CloseCode::NORMAL);
            self.closing = Some((code, reason));
        }
        Some(out)
    }
}

impl Endpoint for EngineWebSocket {
    type Ready = Infallible;

    fn on_event(&mut self, conn: &mut Connection, event: Event) {
        let packet = match event {
            Event::Message(Message::Text(payload)) if !self.active => {
                return self.probe(conn, &payload);
            }
            Event::Message(Message::Text(payload)) => payload,
            Event::Message(Message::Binary(data)) if self.active => packet::binary(&data),
            Event::Message(Message::Binary(_)) => {
                return conn.close(CloseCode::PROTOCOL_ERROR, "expected the upgrade probe");
            }
            _ => return,
        };
        if packet::engine_packet(&packet).is_err() {
            // The reference server closes a session on a malformed packet.
            self.session.fail();
            return conn.close(CloseCode::PROTOCOL_ERROR, "malformed packet");
        }
        if self.session.deliver(vec![packet]).is_err() {
            // The app has not taken what came before: the client sends faster than it works.
            self.session.fail();
            conn.close(CloseCode::POLICY_VIOLATION, "sending too fast");
        }
    }

    async fn after_events(&mut self, _conn: &mut Connection) {}

    fn write_ready(&mut self, ready: Infallible, _: impl FnMut(&Bytes)) {
        match ready {}
    }

    async fn outbound(&mut self) -> Outbound {
        if let Some(open) = self.open.take() {
            return Outbound::Frames(vec![frame::encode(OpCode::Text, &open)]);
        }
        if !self.active {
            // Until `5` the session's packets go to its polling requests.
            return std::future::pending().await;
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
            self.session.peer.ready().await;
        }
    }

    fn finish(&mut self) {
        if self.active {
            self.session.fail();
        } else {
            self.session.probe_failed();
        }
    }
}
