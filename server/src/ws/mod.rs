//! The one WebSocket driver: a [`WsSocket`] runs a [`Connection`] over a socket (reads without
//! an idle buffer, vectored writes, idle pings, the close handshake with its configured wait),
//! and [`drive`] runs an [`Endpoint`] (echo, raw JSON) on it; an idle connection of an endpoint
//! that allows it parks (`crate::park`). STOMP over WebSocket uses the same [`WsSocket`] as one
//! of its transports.
//!
//! One task per running connection (none while it is parked) owns the socket and the protocol
//! state, so neither needs a lock.

pub mod deflate;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parley_protocol::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use parley_protocol::{CloseCode, Connection, Event};
use parley_stomp::{SharedMessage, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::clock::wheel::{Due, Timer};
use crate::clock::Stamp;
use crate::park::{Parkable, Parked, Resumed, PARK_AFTER};

/// Read granularity: enough for a burst of small frames in one syscall.
const READ_CHUNK: usize = 4096;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 512;

thread_local! {
    /// Where a compressed STOMP MESSAGE's own part is put together before it is copied out
    /// (`WsSocket::send_message`): one buffer per thread, none per connection.
    static DEFLATE_HEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Timing rules for one WebSocket connection.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// Ping after half of this without input; close after all of it.
    pub idle_timeout: Duration,
    /// A write making no progress this long drops the connection.
    pub write_timeout: Duration,
    /// How long a peer has to answer our close frame.
    pub close_timeout: Duration,
}

/// What a WebSocket endpoint (echo, raw chat…) does with a connection [`drive`] runs.
pub trait Endpoint {
    /// What [`Outbound::Ready`] carries: output the endpoint writes by reference
    /// ([`Endpoint::write_ready`]), so frames shared by many connections are not cloned for each.
    type Ready: Send;

    /// Handles one event from the peer (pongs and close answers are already queued).
    fn on_event(&mut self, conn: &mut Connection, event: Event);

    /// Called once the events of one read have been handled: the place to carry out work that
    /// was batched across them, or that has to wait (for storage, say).
    fn after_events(&mut self, conn: &mut Connection) -> impl Future<Output = ()> + Send;

    /// Waits for something to send that did not come from the peer (e.g. a room message).
    /// Endpoints that only answer never resolve.
    fn outbound(&mut self) -> impl Future<Output = Outbound<Self::Ready>> + Send;

    /// Writes what [`Outbound::Ready`] carried, frame by frame, into `out`.
    fn write_ready(&mut self, ready: Self::Ready, out: impl FnMut(&Bytes));

    /// Called once the connection is over, however it ended.
    fn finish(&mut self) {}

    /// Whether an idle connection of this endpoint may park (`crate::park`): it then answers
    /// [`Endpoint::poll_outbound`].
    const PARKS: bool = false;

    /// Registers `cx` with what [`Endpoint::outbound`] waits on; `Ready` when it would not
    /// wait. Polled only for endpoints that park.
    fn poll_outbound(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// Whether it may park now: not while it waits on something only a task can poll.
    fn parks_now(&self) -> bool {
        Self::PARKS
    }
}

/// Something an endpoint wants to send on its own.
pub enum Outbound<R = Infallible> {
    /// Frames already encoded (the driver writes them as they are).
    Frames(Vec<Bytes>),
    /// Output to write by reference with [`Endpoint::write_ready`].
    Ready(R),
    /// Close the connection with this code and reason.
    Close(CloseCode, String),
}

/// One WebSocket over a socket: the protocol state (which holds what waits to be written), the
/// read buffer, and when the peer was last heard from.
pub struct WsSocket<S> {
    io: S,
    rbuf: BytesMut,
    conn: Connection,
    /// Shared by every connection: 8 bytes each instead of three durations.
    cfg: Arc<DriverConfig>,
    last_input: Stamp,
    ping_sent: bool,
}

/// Output taken from a connection to write; what is left of it when dropped goes back.
struct Unwritten<'a> {
    queue: VecDeque<Bytes>,
    conn: &'a mut Connection,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        self.conn.untake_transmit(std::mem::take(&mut self.queue));
    }
}

/// What [`WsSocket::wait_input`] saw first.
pub enum Input {
    /// A read: `Ok(false)` at end of stream.
    Read(io::Result<bool>),
    /// The idle rule needs attention ([`WsSocket::idle_expired`]).
    Idle,
    /// The time to park came before anything else.
    Park,
    /// Shutdown began.
    ShuttingDown,
}

impl<S: ReadReady + AsyncWrite> WsSocket<S> {
    /// A socket whose upgrade left `leftover` bytes unread.
    pub fn new(io: S, leftover: BytesMut, conn: Connection, cfg: Arc<DriverConfig>) -> Self {
        Self {
            io,
            rbuf: leftover,
            conn,
            cfg,
            last_input: Stamp::now(),
            ping_sent: false,
        }
    }

    /// Hands every complete event already read to `on_event`; `false` if the peer broke the
    /// protocol (the connection then queued its close frame and is closed).
    pub fn events(&mut self, mut on_event: impl FnMut(&mut Connection, Event)) -> bool {
        loop {
            match self.conn.read(&mut self.rbuf) {
                Ok(Some(event)) => on_event(&mut self.conn, event),
                Ok(None) => return true,
                Err(error) => {
                    debug!(%error, "failing WebSocket connection");
                    return false;
                }
            }
        }
    }

    /// Waits for bytes, reserving a read buffer only once they are there; `Ok(false)` at end of
    /// stream.
    pub fn read_more(&mut self) -> impl Future<Output = io::Result<bool>> + '_ {
        release_if_empty(&mut self.rbuf);
        poll_fn(|cx| {
            let read = std::task::ready!(poll_read_when_ready(&mut self.io, &mut self.rbuf, cx));
            Poll::Ready(read.map(|n| self.got_input(n)))
        })
    }

    /// Notes that a read brought `n` bytes (none: end of stream), and says whether it did.
    fn got_input(&mut self, n: usize) -> bool {
        if n > 0 {
            self.last_input = Stamp::now();
            self.ping_sent = false;
        }
        n > 0
    }

    /// Registers `cx` for input; `Ready` when a read may make progress (see [`ReadReady`]).
    pub fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.io.poll_ready(cx).map(|_| ())
    }

    /// Waits for bytes (reading them as [`WsSocket::read_more`] does), the idle rule's
    /// deadline or `park_at`, whichever is first (on `timer`, a slot in the shared wheel), or
    /// shutdown, with no future for either.
    pub fn wait_input<'a>(
        &'a mut self,
        timer: &'a mut Timer,
        shutdown: &'a CancellationToken,
        park_at: Option<Instant>,
    ) -> impl Future<Output = Input> + 'a {
        release_if_empty(&mut self.rbuf);
        poll_fn(move |cx| {
            let idle = self.idle_deadline();
            let wake = park_at.map_or(idle, |at| at.min(idle));
            let due = match timer.poll_until(wake.into_std(), shutdown, cx) {
                Poll::Ready(Due::ShuttingDown) => return Poll::Ready(Input::ShuttingDown),
                Poll::Ready(Due::Deadline) => true,
                Poll::Pending => false,
            };
            match poll_read_when_ready(&mut self.io, &mut self.rbuf, cx) {
                Poll::Ready(read) => Poll::Ready(Input::Read(read.map(|n| self.got_input(n)))),
                // The timer is never early: before the idle deadline, it was parking's.
                Poll::Pending if due && Instant::now() < idle => Poll::Ready(Input::Park),
                Poll::Pending if due => Poll::Ready(Input::Idle),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    /// Queues one message made of `parts` (text or binary): its header, then the parts, small
    /// ones copied into the connection's output buffer, larger ones shared as they are. Under
    /// permessage-deflate a large enough message is compressed alone instead.
    pub fn send_parts(&mut self, parts: &[Bytes], text: bool) {
        if let Some(params) = self.conn.deflate() {
            if let Some(frame) = deflate::compress_parts(parts, text, params) {
                let _ = self.conn.send_encoded(frame);
                return;
            }
        }
        self.send_uncompressed(parts.iter(), text);
    }

    /// Queues a STOMP MESSAGE for one subscriber: its own `prefix`, then the message's shared
    /// part, encoded (and, under permessage-deflate, compressed) once for every subscriber.
    pub fn send_message(&mut self, prefix: &Bytes, message: &SharedMessage, version: Version) {
        if self.conn.deflate().is_some_and(deflate::shares) {
            let conn = &mut self.conn;
            let sent = DEFLATE_HEAD.with_borrow_mut(|head| {
                head.clear();
                let Some(compressed) = deflate::stomp_message(prefix, message, version, head)
                else {
                    return false;
                };
                let _ = conn.send_copied(head);
                let _ = conn.send_shared(compressed);
                true
            });
            if sent {
                return;
            }
        }
        let shared = message.shared(version);
        let text = message.body_is_utf8();
        if self.conn.deflate().is_some() {
            return self.send_parts(&[prefix.clone(), shared.clone()], text);
        }
        // By reference: a small prefix and message are copied, not reference-counted.
        self.send_uncompressed([prefix, shared].into_iter(), text);
    }

    /// Queues one uncompressed data frame made of `parts`.
    fn send_uncompressed<'p>(
        &mut self,
        parts: impl Iterator<Item = &'p Bytes> + Clone,
        text: bool,
    ) {
        let len = parts.clone().map(Bytes::len).sum();
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        let header = FrameHeader::server(opcode, len);
        let mut head = [0; MAX_HEADER_LEN];
        header.write(&mut &mut head[..]);
        if self
            .conn
            .send_copied(&head[..header.encoded_len()])
            .is_err()
        {
            return;
        }
        for part in parts {
            if self.conn.send_shared(part).is_err() {
                return;
            }
        }
    }

    /// Queues a complete frame: as it is, or compressed alone when permessage-deflate was
    /// negotiated and it is an uncompressed message large enough to gain from it.
    pub fn send_frame(&mut self, frame: Bytes) {
        let compressed = self.compressed(&frame);
        let _ = self.conn.send_encoded(compressed.unwrap_or(frame));
    }

    /// [`WsSocket::send_frame`] for a frame held by reference (shared by many connections):
    /// copied into the output when small, else one more reference to the same bytes. A frame
    /// already compressed (shared permessage-deflate) goes the same way.
    pub fn send_shared_frame(&mut self, frame: &Bytes) {
        let _ = match self.compressed(frame) {
            Some(compressed) => self.conn.send_encoded(compressed),
            None => self.conn.send_shared(frame),
        };
    }

    /// `frame` compressed alone, if permessage-deflate was negotiated and it gains from it.
    fn compressed(&self, frame: &[u8]) -> Option<Bytes> {
        let params = self.conn.deflate()?;
        deflate::compressed_frame(frame, params)
    }

    /// Writes everything queued; an idle connection keeps no queue storage. Stopped mid-way
    /// (its future dropped), what it had not written goes back to the connection, in order.
    pub async fn flush(&mut self) -> io::Result<()> {
        let mut writing = Unwritten {
            queue: self.conn.take_transmit(),
            conn: &mut self.conn,
        };
        write_all(&mut self.io, &mut writing.queue, self.cfg.write_timeout).await
    }

    /// The protocol state.
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The close handshake finished (or the connection failed).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// When the idle rule next needs attention: a ping after half the idle timeout without
    /// input, the close after all of it.
    pub fn idle_deadline(&self) -> Instant {
        let idle = self.cfg.idle_timeout;
        self.last_input + if self.ping_sent { idle } else { idle / 2 }
    }

    /// Applies the idle rule at its deadline: pings once, and `true` when the connection has
    /// been idle too long even so and must close.
    pub fn idle_expired(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.last_input + self.cfg.idle_timeout {
            return true;
        }
        if !self.ping_sent && now >= self.last_input + self.cfg.idle_timeout / 2 {
            // Browsers answer pings automatically, so a live idle client stays connected.
            let _ = self.conn.ping(b"");
            self.ping_sent = true;
        }
        false
    }

    /// Closes: sends our close frame (unless one was sent or the handshake is over), gives the peer the
    /// configured close wait to answer (dropping anything else it sends), then closes TCP —
    /// the server closes first (RFC 6455 §7.1.1).
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        self.conn.close(code, reason);
        self.finish_close().await;
    }

    /// Waits for the peer to answer a close frame already sent (at most the close wait), then
    /// closes TCP.
    pub async fn finish_close(&mut self) {
        let wait = self.cfg.close_timeout;
        let _ = timeout(wait, async {
            loop {
                if self.flush().await.is_err() || self.conn.is_closed() {
                    return;
                }
                if !self.events(|_, _| {}) || self.conn.is_closed() {
                    continue; // flush the answer, then stop
                }
                if !matches!(self.read_more().await, Ok(true)) {
                    return;
                }
            }
        })
        .await;
        let _ = self.flush().await;
        self.shutdown(self.cfg.write_timeout).await;
    }

    /// Closes TCP (what is queued and not yet flushed is dropped), waiting at most `wait`.
    pub async fn shutdown(&mut self, wait: Duration) {
        let _ = timeout(wait, self.io.shutdown()).await;
    }
}

/// Runs `endpoint` on the socket until the connection closes (the endpoint's `finish` runs
/// however it ended), or until it parks: then the future ends with the connection's state.
pub fn drive<S, E>(
    socket: WsSocket<S>,
    shutdown: CancellationToken,
    endpoint: E,
) -> impl Future<Output = Option<Parked>> + Send + 'static
where
    S: ReadReady + AsyncWrite + Send + 'static,
    E: Endpoint + Send + 'static,
{
    let driven = Box::new(Driven {
        socket,
        endpoint,
        shutdown,
        timer: Timer::default(),
        last_busy: Stamp::now(),
    });
    driven.serve()
}

/// A connection [`drive`] runs, boxed: the socket, its endpoint, and what its loop keeps
/// between turns. A parked connection is this box.
struct Driven<S, E> {
    socket: WsSocket<S>,
    endpoint: E,
    shutdown: CancellationToken,
    /// Its place in the shared timer wheel: the idle rule's deadline, or parking's.
    timer: Timer,
    /// When it last got a message or its endpoint had output for it: what parking counts from
    /// (kept only where it may park).
    last_busy: Stamp,
}

/// Why the connection loop stopped.
enum Stop {
    /// The connection is over.
    Done,
    /// Quiet for [`PARK_AFTER`]: it waits parked.
    Park,
}

impl<S, E> Driven<S, E>
where
    S: ReadReady + AsyncWrite + Send + 'static,
    E: Endpoint + Send + 'static,
{
    /// Runs the connection until it ends or parks. An `async move` block holds its argument
    /// once (an `async fn` would hold it and a moved copy).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn serve(mut self: Box<Self>) -> impl Future<Output = Option<Parked>> + Send + 'static {
        async move {
            if let Stop::Park = self.run().await {
                return Some(self as Parked);
            }
            self.endpoint.finish();
            None
        }
    }
}

impl<S, E> Parkable for Driven<S, E>
where
    S: ReadReady + AsyncWrite + Send + 'static,
    E: Endpoint + Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.socket.idle_deadline().into_std();
        if self.timer.poll_until(idle, &self.shutdown, cx).is_ready()
            || self.socket.poll_input(cx).is_ready()
        {
            return Poll::Ready(());
        }
        self.endpoint.poll_outbound(cx)
    }

    fn resume(self: Box<Self>) -> Resumed {
        Box::pin(self.serve())
    }
}

impl<S, E> Driven<S, E>
where
    S: ReadReady + AsyncWrite,
    E: Endpoint,
{
    /// The connection loop: hand over what arrived, write, then wait for the next thing to do.
    async fn run(&mut self) -> Stop {
        let Self {
            socket,
            endpoint,
            shutdown,
            timer,
            last_busy,
        } = self;
        loop {
            let (mut handled, mut busy) = (false, false);
            socket.events(|conn, event| {
                handled = true;
                busy |= matches!(event, Event::Message(_));
                endpoint.on_event(conn, event);
            });
            if busy && S::PARKS && E::PARKS {
                *last_busy = Stamp::now();
            }
            if handled {
                // Boxed, and only when something came in: a connection's future is as large as
                // its largest wait, and an idle one (or one only writing deliveries) needs none
                // of this.
                Box::pin(endpoint.after_events(&mut socket.conn)).await;
            }
            if let Err(error) = socket.flush().await {
                debug!(%error, "WebSocket write failed");
                return Stop::Done;
            }
            // The ways out are boxed (each in a statement of its own): an idle connection's
            // future is as large as its largest step, and these are the largest.
            if socket.is_closed() {
                let shutdown = Box::pin(socket.shutdown(socket.cfg.write_timeout));
                shutdown.await;
                return Stop::Done;
            }
            if socket.conn.is_closing() {
                // The endpoint closed (e.g. too many errors): the peer has the close wait to answer.
                Box::pin(socket.finish_close()).await;
                return Stop::Done;
            }
            // Checked here too: the wait below sees it only when nothing else is ready.
            if shutdown.is_cancelled() {
                let close = Box::pin(socket.close(CloseCode::GOING_AWAY, "server shutting down"));
                close.await;
                return Stop::Done;
            }
            let parks = S::PARKS && E::PARKS && endpoint.parks_now();
            let park_at = parks.then(|| *last_busy + PARK_AFTER);
            let closing = tokio::select! {
                biased;
                out = endpoint.outbound() => {
                    if S::PARKS && E::PARKS {
                        *last_busy = Stamp::now();
                    }
                    match out {
                        Outbound::Frames(frames) => {
                            for frame in frames {
                                socket.send_frame(frame);
                            }
                            None
                        }
                        Outbound::Ready(ready) => {
                            endpoint.write_ready(ready, |frame| socket.send_shared_frame(frame));
                            None
                        }
                        Outbound::Close(code, reason) => Some((code, reason)),
                    }
                },
                input = socket.wait_input(timer, shutdown, park_at) => match input {
                    Input::Read(Ok(true)) => None,
                    Input::Read(Ok(false) | Err(_)) => return Stop::Done,
                    Input::Idle => socket
                        .idle_expired()
                        .then(|| (CloseCode::NORMAL, "idle timeout".to_owned())),
                    Input::Park => return Stop::Park,
                    Input::ShuttingDown => {
                        Some((CloseCode::GOING_AWAY, "server shutting down".to_owned()))
                    }
                },
            };
            if let Some((code, reason)) = closing {
                Box::pin(socket.close(code, &reason)).await;
                return Stop::Done;
            }
        }
    }
}

/// A byte stream that can say when a read would find data, so an idle connection waits with no
/// read buffer allocated and only reserves one when bytes are there.
pub trait ReadReady: AsyncRead + Unpin {
    /// Whether `poll_ready` waits for the socket, so that an idle connection on it may park
    /// (`crate::park`): one whose readiness is always `Ready` would wake as soon as it parked.
    const PARKS: bool = true;

    /// Ready when a read would not block (at once for streams that cannot tell). Polled, not
    /// awaited: a connection waiting for input keeps no future for it.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ReadReady for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    const PARKS: bool = false;

    fn poll_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Waits for data, then reads it into `buf`, reserving room only now; `Ok(0)` at end of stream.
/// Polled by hand: a connection waiting for input keeps two references, not a read future.
pub fn read_when_ready<'a, S: ReadReady>(
    io: &'a mut S,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(|cx| poll_read_when_ready(io, buf, cx))
}

/// One poll of [`read_when_ready`].
fn poll_read_when_ready<S: ReadReady>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    std::task::ready!(io.poll_ready(cx))?;
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let read = tokio_util::io::poll_read_buf(std::pin::Pin::new(io), cx, buf);
    if read.is_pending() {
        // The readiness was stale: wait again without the buffer.
        release_if_empty(buf);
    }
    read
}

/// Gives back a read buffer that holds nothing, so an idle connection keeps no allocation.
pub fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Frees a drained write queue's storage: an idle connection keeps none (the next write
/// allocates a few slots again).
pub fn shrink_idle_queue(queue: &mut VecDeque<Bytes>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// Writes everything queued, several buffers per syscall; a write making no progress for
/// `write_timeout` fails. Polled by hand, with the deadline on the shared wheel (set only when
/// a write has to wait): a connection's future holds no timer for it.
pub fn write_all<'a, S: AsyncWrite + Unpin>(
    io: &'a mut S,
    outbox: &'a mut VecDeque<Bytes>,
    write_timeout: Duration,
) -> impl Future<Output = io::Result<()>> + 'a {
    let mut timer = Timer::default();
    // Since when the write has made no progress: read from the clock only once it has to wait,
    // so a write that goes through at once (nearly every one) costs no clock read.
    let mut stalled: Option<std::time::Instant> = None;
    poll_fn(move |cx| {
        while !outbox.is_empty() {
            // The iovec array lives only inside one poll, not in the future.
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, bytes) in slices.iter_mut().zip(outbox.iter()) {
                *slot = IoSlice::new(bytes);
                count += 1;
            }
            match std::pin::Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    consume(outbox, written);
                    stalled = None;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return timed_out(&mut timer, &mut stalled, write_timeout, cx),
            }
        }
        // A no-op on TCP; TLS may still hold encrypted bytes the socket would not take.
        match std::pin::Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(flushed) => Poll::Ready(flushed),
            Poll::Pending => timed_out(&mut timer, &mut stalled, write_timeout, cx),
        }
    })
}

/// A write that has to wait: an error once it has made no progress for `write_timeout`, else
/// pending until then (or until the socket wakes us first).
fn timed_out(
    timer: &mut Timer,
    stalled: &mut Option<std::time::Instant>,
    write_timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let since = *stalled.get_or_insert_with(std::time::Instant::now);
    // `checked_add`: a timeout too long to reach is none, not an overflow panic.
    let Some(deadline) = since.checked_add(write_timeout) else {
        return Poll::Pending;
    };
    timer
        .poll_at(deadline, cx)
        .map(|()| Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")))
}

/// Drops `n` written bytes from the front of the queue.
fn consume(outbox: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = outbox.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            outbox.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that takes 8 bytes and then reads nothing, and 64 bytes queued for it.
    fn stalled_peer() -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        VecDeque<Bytes>,
    ) {
        let (ours, theirs) = tokio::io::duplex(8);
        (ours, theirs, [Bytes::from(vec![b'x'; 64])].into())
    }

    #[tokio::test]
    async fn a_write_making_no_progress_times_out() {
        let (mut io, _peer, mut outbox) = stalled_peer();
        let start = std::time::Instant::now();
        let error = write_all(&mut io, &mut outbox, Duration::from_millis(50))
            .await
            .expect_err("the peer reads nothing");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_write_timeout_too_long_to_reach_means_none() {
        let (mut io, _peer, mut outbox) = stalled_peer();
        let write = write_all(&mut io, &mut outbox, Duration::MAX);
        let waited = tokio::time::timeout(Duration::from_millis(100), write).await;
        assert!(
            waited.is_err(),
            "still waiting, neither failed nor panicked"
        );
    }

    #[test]
    fn consume_handles_partial_buffers() {
        let mut q: VecDeque<Bytes> = [&b"abc"[..], b"de", b"fgh"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        consume(&mut q, 4);
        assert_eq!(q, [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]);
        consume(&mut q, 4);
        assert!(q.is_empty());
    }
}
