//! How STOMP bytes travel: as they are on TCP (port 61613, or inside TLS on 61614), inside WebSocket messages on
//! `/stomp` (the one WebSocket driver, [`WsSocket`]), inside SockJS messages (a session's
//! [`AppEnd`]).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parley_protocol::{CloseCode, Event, Message};
use parley_stomp::{SharedMessage, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use crate::endpoints::pipe::AppEnd;
use crate::ws::{read_when_ready, shrink_idle_queue, write_all, ReadReady, WsSocket};

/// Longest wait for a last write to a peer that stopped taking what it is sent.
const ABORT_WAIT: Duration = Duration::from_millis(100);

/// A byte stream STOMP frames travel on.
pub(super) trait Transport {
    /// Reads more STOMP bytes into `inbound`; `Ok(false)` once the peer is gone.
    fn read(&mut self, inbound: &mut BytesMut) -> impl Future<Output = io::Result<bool>> + Send;
    /// Queues one STOMP frame made of `parts`; `text` says its body is UTF-8.
    fn queue_frame(&mut self, parts: &[Bytes], text: bool);
    /// Queues a MESSAGE: one subscriber's `prefix`, then the part shared by every subscriber.
    fn queue_message(&mut self, prefix: &Bytes, message: &SharedMessage, version: Version) {
        let shared = message.shared(version).clone();
        self.queue_frame(&[prefix.clone(), shared], message.body_is_utf8());
    }
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Whether an idle connection on this transport may park (`crate::park`): it can wait for
    /// input with [`Transport::poll_input`].
    const PARKS: bool = false;
    /// Registers `cx` for input; `Ready` when a read may make progress.
    fn poll_input(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
    /// The transport itself finished (WebSocket close handshake).
    fn is_closed(&self) -> bool;
    /// When the transport's own liveness rule next needs attention, if it has one.
    fn idle_deadline(&self) -> Option<Instant>;
    /// Applies that rule at its deadline (a WebSocket pings); `true` when the peer has been
    /// idle too long.
    fn idle_expired(&mut self) -> bool;
    /// Ends the connection in order; a WebSocket closes with `code`.
    fn close(&mut self, code: CloseCode) -> impl Future<Output = ()> + Send;
    /// Ends a connection whose peer stopped taking what it is sent, without waiting on it.
    fn abort(&mut self, code: CloseCode) -> impl Future<Output = ()> + Send;
}

/// STOMP over a byte stream: plain TCP, or TLS over it.
pub(super) struct Tcp<S> {
    stream: S,
    outbox: VecDeque<Bytes>,
    write_timeout: Duration,
}

impl<S> Tcp<S> {
    pub(super) fn new(stream: S, write_timeout: Duration) -> Self {
        Self {
            stream,
            outbox: VecDeque::new(),
            write_timeout,
        }
    }
}

impl<S: ReadReady + AsyncWrite + Send> Transport for Tcp<S> {
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool> {
        Ok(read_when_ready(&mut self.stream, inbound).await? > 0)
    }

    fn queue_frame(&mut self, parts: &[Bytes], _text: bool) {
        self.outbox.extend(parts.iter().cloned());
    }

    async fn flush(&mut self) -> io::Result<()> {
        write_all(&mut self.stream, &mut self.outbox, self.write_timeout).await?;
        shrink_idle_queue(&mut self.outbox);
        Ok(())
    }

    const PARKS: bool = S::PARKS;

    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.stream.poll_ready(cx).map(|_| ())
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn idle_deadline(&self) -> Option<Instant> {
        None
    }

    fn idle_expired(&mut self) -> bool {
        false
    }

    async fn close(&mut self, _code: CloseCode) {
        let _ = timeout(self.write_timeout, self.stream.shutdown()).await;
    }

    async fn abort(&mut self, _code: CloseCode) {
        let _ = timeout(ABORT_WAIT, self.stream.shutdown()).await;
    }
}

/// STOMP over a WebSocket: whole messages append to the STOMP byte stream (a STOMP frame may
/// span messages and a message may hold several frames); each frame goes out as one message.
pub(super) struct Ws<S>(pub(super) WsSocket<S>);

impl<S: ReadReady + AsyncWrite + Send> Transport for Ws<S> {
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool> {
        loop {
            let mut got = false;
            let mut closed = false;
            let intact = self.0.events(|_, event| match event {
                Event::Message(Message::Text(b) | Message::Binary(b)) => {
                    inbound.extend_from_slice(&b);
                    got = true;
                }
                Event::Close(_) => closed = true,
                _ => got = true,
            });
            if closed || !intact {
                return Ok(false);
            }
            if got || self.0.conn().buffered_output() > 0 {
                return Ok(true);
            }
            if !self.0.read_more().await? {
                return Ok(false);
            }
        }
    }

    fn queue_frame(&mut self, parts: &[Bytes], text: bool) {
        self.0.send_parts(parts, text);
    }

    fn queue_message(&mut self, prefix: &Bytes, message: &SharedMessage, version: Version) {
        self.0.send_message(prefix, message, version);
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.0.flush().await
    }

    const PARKS: bool = S::PARKS;

    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_input(cx)
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        Some(self.0.idle_deadline())
    }

    fn idle_expired(&mut self) -> bool {
        self.0.idle_expired()
    }

    async fn close(&mut self, code: CloseCode) {
        self.0.close(code, "").await;
    }

    async fn abort(&mut self, code: CloseCode) {
        self.0.conn().close(code, "");
        let _ = timeout(ABORT_WAIT, self.0.flush()).await;
        self.0.shutdown(ABORT_WAIT).await;
    }
}

/// STOMP over a SockJS session: each client message appends to the STOMP byte stream; each
/// frame goes out as one message. SockJS carries text only: a body that is not UTF-8 arrives
/// with U+FFFD in place of what is not (use WebSocket or TCP for binary bodies).
pub(super) struct Sock {
    end: AppEnd,
    queued: VecDeque<Bytes>,
    got: Vec<Bytes>,
    write_timeout: Duration,
}

impl Sock {
    pub(super) fn new(end: AppEnd, write_timeout: Duration) -> Self {
        Self {
            end,
            queued: VecDeque::new(),
            got: Vec::new(),
            write_timeout,
        }
    }
}

impl Transport for Sock {
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool> {
        if !self.end.recv(&mut self.got).await {
            return Ok(false);
        }
        for message in self.got.drain(..) {
            inbound.extend_from_slice(&message);
        }
        Ok(true)
    }

    fn queue_frame(&mut self, parts: &[Bytes], _text: bool) {
        let mut frame = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        for part in parts {
            frame.extend_from_slice(part);
        }
        self.queued.push_back(frame.freeze());
    }

    async fn flush(&mut self) -> io::Result<()> {
        // Paced as a socket write is: a long catch-up waits for the client to collect it
        // rather than overflowing the session's bound.
        while let Some(frame) = self.queued.pop_front() {
            self.end
                .send_paced(frame, self.write_timeout)
                .await
                .map_err(|_| io::Error::other("SockJS client not collecting its messages"))?;
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.end.peer_gone()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        None
    }

    fn idle_expired(&mut self) -> bool {
        false
    }

    async fn close(&mut self, code: CloseCode) {
        self.end.close(code.as_u16(), "");
    }

    async fn abort(&mut self, code: CloseCode) {
        self.end.close(code.as_u16(), "");
    }
}
