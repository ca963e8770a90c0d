//! What runs inside a SockJS session: STOMP, the raw JSON protocol (its WebSocket endpoint
//! driven over the session's messages), or one of the conformance services (echo, close).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parley_protocol::frame::{FrameHeader, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Limits, Message};
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Authenticated};
use crate::endpoints::pipe::AppEnd;
use crate::endpoints::raw::RawClient;
use crate::endpoints::stomp::{Caller, Stomp};
use crate::hub::{ChatSettings, Hub};
use crate::ws::{Endpoint, Outbound};

/// The app of a session.
pub enum App {
    /// STOMP; the opening request may already have authenticated the client.
    Stomp(Caller),
    /// The raw JSON protocol, for an authenticated user or a guest.
    Raw(Authenticated),
    /// Conformance: every message goes back.
    Echo,
    /// Conformance: the session is closed at once with `c[3000,"Go away!"]`.
    Close,
}

/// What the apps need.
pub(super) struct Apps {
    pub(super) hub: Arc<Hub>,
    pub(super) stomp: Arc<Stomp>,
    pub(super) chat: Arc<ChatSettings>,
    pub(super) auth: Arc<Auth>,
    pub(super) max_message: usize,
    /// Longest wait for a client to collect what its app sent before.
    pub(super) write_timeout: Duration,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl Apps {
    /// The task running `app` on `end` until the session or the server ends.
    pub(super) fn run(&self, app: App, end: AppEnd, shutdown: CancellationToken) -> Task {
        match app {
            App::Stomp(caller) => {
                let stomp = self.stomp.clone();
                Box::pin(async move { stomp.serve_sockjs(end, caller, shutdown).await })
            }
            App::Raw(who) => {
                let client = RawClient::open(&self.hub, self.auth.clone(), self.chat.clone(), who);
                let limits = Limits::new(self.max_message, self.max_message);
                Box::pin(drive(end, client, limits, self.write_timeout, shutdown))
            }
            App::Echo => Box::pin(echo(end, shutdown)),
            App::Close => Box::pin(async move { end.close(3000, "Go away!") }),
        }
    }
}

/// Sends back every message until the client leaves.
async fn echo(end: AppEnd, shutdown: CancellationToken) {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return end.close(1001, "server shutting down"),
            more = end.recv(&mut got) => if !more { return },
        }
        if end.send_all(got.drain(..)).is_err() {
            return;
        }
    }
}

/// Drives a WebSocket endpoint over a session: each client message is a text message to it;
/// what it writes (whole WebSocket frames, encoded once for every subscriber) is unwrapped
/// back into messages, and its close into the session's close frame.
async fn drive<E: Endpoint>(
    end: AppEnd,
    mut endpoint: E,
    limits: Limits,
    write_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut conn = Connection::new(limits, None);
    let mut unframer = Unframer::default();
    let mut got = Vec::new();
    loop {
        let closing = tokio::select! {
            biased;
            () = shutdown.cancelled() => Some((CloseCode::GOING_AWAY, "server shutting down".to_owned())),
            more = end.recv(&mut got) => {
                if !more {
                    break;
                }
                for message in got.drain(..) {
                    endpoint.on_event(&mut conn, Event::Message(Message::Text(message)));
                }
                endpoint.after_events(&mut conn).await;
                None
            }
            out = endpoint.outbound() => match out {
                Outbound::Frames(frames) => {
                    for frame in frames {
                        let _ = conn.send_encoded(frame);
                    }
                    None
                }
                Outbound::Close(code, reason) => Some((code, reason)),
            },
        };
        if let Some((code, reason)) = closing {
            conn.close(code, &reason);
        }
        while let Some(bytes) = conn.poll_transmit() {
            unframer.buf.extend_from_slice(&bytes);
        }
        let forwarded = unframer.forward(&end, write_timeout).await;
        if forwarded.is_err() || conn.is_closing() || conn.is_closed() {
            break;
        }
    }
    endpoint.finish();
}

/// Server WebSocket frames back into messages.
#[derive(Default)]
struct Unframer {
    buf: BytesMut,
}

impl Unframer {
    /// Forwards every whole frame: data as messages (paced as socket writes are: a long
    /// catch-up waits for the client to collect it), a close as the session's close. `Err`
    /// once the session is over.
    async fn forward(&mut self, end: &AppEnd, write_timeout: Duration) -> Result<(), ()> {
        while let Ok(Some((header, head_len))) = FrameHeader::parse(&self.buf) {
            let Ok(len) = usize::try_from(header.payload_len) else {
                return Err(());
            };
            if self.buf.len() < head_len + len {
                break;
            }
            let _ = self.buf.split_to(head_len);
            let payload: Bytes = self.buf.split_to(len).freeze();
            match header.opcode {
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    end.send_paced(payload, write_timeout)
                        .await
                        .map_err(|_| ())?;
                }
                OpCode::Close => {
                    let code = payload
                        .get(..2)
                        .map_or(1000, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    end.close(code, &reason);
                    return Err(());
                }
                OpCode::Ping | OpCode::Pong => {}
            }
        }
        Ok(())
    }
}
