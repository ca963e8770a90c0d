//! A WebSocket endpoint (the raw JSON protocol) hosted where there is no WebSocket — inside a
//! SockJS or Socket.IO session: client messages go in as text messages, and what the endpoint
//! writes (whole WebSocket frames, encoded once for every subscriber) comes back out as the
//! messages' payloads — large ones sharing their bytes, small ones copied out of the
//! connection's gathered output so none keeps that buffer alive — and its close as a close.

use bytes::{Bytes, BytesMut};
use parley_protocol::connection::COALESCE_MAX;
use parley_protocol::frame::{FrameHeader, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Limits, Message};

use crate::ws::{Endpoint, Outbound};

/// What a hosted endpoint sent.
#[derive(Debug)]
pub enum Out {
    /// One message's payload.
    Message(Bytes),
    /// The endpoint closed the connection with this code and reason.
    Close(u16, String),
}

/// An endpoint and the protocol state it writes into.
pub struct Hosted<E: Endpoint> {
    endpoint: E,
    conn: Connection,
    /// The start of a frame whose rest was still queued (a large payload after its header).
    buf: BytesMut,
}

impl<E: Endpoint> Hosted<E> {
    /// Hosts `endpoint`; `limits` are its messages' (as on a WebSocket).
    pub fn new(endpoint: E, limits: Limits) -> Self {
        Self {
            endpoint,
            conn: Connection::new(limits, None),
            buf: BytesMut::new(),
        }
    }

    /// Hands the client's messages to the endpoint, then lets it finish the work they started.
    pub async fn feed(&mut self, messages: impl IntoIterator<Item = Bytes>) {
        for message in messages {
            let event = Event::Message(Message::Text(message));
            self.endpoint.on_event(&mut self.conn, event);
        }
        self.endpoint.after_events(&mut self.conn).await;
    }

    /// Waits for something the endpoint sends on its own (room messages, say).
    pub async fn outbound(&mut self) -> Outbound<E::Ready> {
        self.endpoint.outbound().await
    }

    /// Takes in what [`Hosted::outbound`] returned.
    pub fn apply(&mut self, out: Outbound<E::Ready>) {
        match out {
            Outbound::Frames(frames) => {
                for frame in frames {
                    let _ = self.conn.send_encoded(frame);
                }
            }
            Outbound::Ready(ready) => {
                let conn = &mut self.conn;
                self.endpoint.write_ready(ready, |frame| {
                    let _ = conn.send_shared(frame);
                });
            }
            Outbound::Close(code, reason) => self.conn.close(code, &reason),
        }
    }

    /// Closes the connection from our side (shutdown, say).
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.conn.close(code, reason);
    }

    /// Everything the endpoint wrote since the last call, in order; a close is the last.
    pub fn drain(&mut self, into: &mut Vec<Out>) {
        while let Some(mut bytes) = self.conn.poll_transmit() {
            if self.buf.is_empty() {
                // The usual case: whole frames, one shared frame or several small ones
                // gathered, taken apart where they are.
                while let Some(len) = whole_frame_len(&bytes) {
                    split(bytes.split_to(len), into);
                }
            }
            self.buf.extend_from_slice(&bytes);
        }
        while let Some(len) = whole_frame_len(&self.buf) {
            split(self.buf.split_to(len).freeze(), into);
        }
        crate::ws::release_if_empty(&mut self.buf);
    }

    /// The endpoint closed, or was closed.
    pub fn is_over(&self) -> bool {
        self.conn.is_closing() || self.conn.is_closed()
    }
}

impl<E: Endpoint> Drop for Hosted<E> {
    fn drop(&mut self) {
        self.endpoint.finish();
    }
}

/// The length of the whole frame `bytes` starts with, if it holds all of it.
fn whole_frame_len(bytes: &[u8]) -> Option<usize> {
    let (header, head_len) = FrameHeader::parse(bytes).ok()??;
    let len = head_len.checked_add(usize::try_from(header.payload_len).ok()?)?;
    (bytes.len() >= len).then_some(len)
}

/// One whole frame into what it carries (pings and pongs carry nothing for the client).
fn split(frame: Bytes, into: &mut Vec<Out>) {
    let Ok(Some((header, head_len))) = FrameHeader::parse(&frame) else {
        return;
    };
    // A small payload is copied: sliced, it would keep the whole gathered buffer alive while
    // it waits to be collected (and the outbox counts only the payload).
    let payload = if frame.len() - head_len <= COALESCE_MAX {
        Bytes::copy_from_slice(&frame[head_len..])
    } else {
        frame.slice(head_len..)
    };
    match header.opcode {
        OpCode::Text | OpCode::Binary | OpCode::Continuation => into.push(Out::Message(payload)),
        OpCode::Close => {
            let code = payload
                .get(..2)
                .map_or(1000, |c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
            into.push(Out::Close(code, reason.into_owned()));
        }
        OpCode::Ping | OpCode::Pong => {}
    }
}
