//! Drives a [`Connection`] over a socket: reads, decodes, hands events to the endpoint, writes.
//!
//! One task per connection owns the socket and the protocol state, so neither needs a lock.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parley_protocol::{CloseCode, Connection, Event};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Read granularity: enough for a burst of small frames in one syscall.
const READ_CHUNK: usize = 4096;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 512;

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

/// What a WebSocket endpoint (echo, raw chat…) does with a connection the driver runs.
pub trait Endpoint {
    /// Handles one event from the peer (pongs and close answers are already queued).
    fn on_event(&mut self, conn: &mut Connection, event: Event);

    /// Called once the events of one read have been handled: the place to carry out work that
    /// was batched across them.
    fn after_events(&mut self, _conn: &mut Connection) {}

    /// Waits for something to send that did not come from the peer (e.g. a room message).
    /// Endpoints that only answer never resolve.
    fn outbound(&mut self) -> impl Future<Output = Outbound> + Send;

    /// Called once the connection is over, however it ended.
    fn finish(&mut self) {}
}

/// Something an endpoint wants to send on its own.
pub enum Outbound {
    /// Frames already encoded (the driver writes them as they are).
    Frames(Vec<Bytes>),
    /// Close the connection with this code and reason.
    Close(CloseCode, String),
}

/// Runs the connection until it closes.
pub async fn drive<S, E>(
    mut io: S,
    mut rbuf: BytesMut,
    mut conn: Connection,
    cfg: DriverConfig,
    shutdown: CancellationToken,
    endpoint: &mut E,
) where
    S: ReadReady + AsyncWrite,
    E: Endpoint,
{
    drive_inner(&mut io, &mut rbuf, &mut conn, cfg, shutdown, endpoint).await;
    endpoint.finish();
}

async fn drive_inner<S, E>(
    io: &mut S,
    rbuf: &mut BytesMut,
    conn: &mut Connection,
    cfg: DriverConfig,
    shutdown: CancellationToken,
    endpoint: &mut E,
) where
    S: ReadReady + AsyncWrite,
    E: Endpoint,
{
    let mut outbox: VecDeque<Bytes> = VecDeque::new();
    let mut last_input = Instant::now();
    let mut ping_sent = false;
    let mut close_deadline: Option<Instant> = None;
    loop {
        loop {
            match conn.read(rbuf) {
                Ok(Some(event)) => endpoint.on_event(conn, event),
                Ok(None) => break,
                Err(error) => {
                    debug!(%error, "failing WebSocket connection");
                    break;
                }
            }
        }
        endpoint.after_events(conn);
        while let Some(bytes) = conn.poll_transmit() {
            outbox.push_back(bytes);
        }
        if let Err(error) = write_all(io, &mut outbox, cfg.write_timeout).await {
            debug!(%error, "WebSocket write failed");
            return;
        }
        if conn.is_closed() {
            // Close handshake done (or connection failed): the server closes TCP first (§7.1.1).
            let _ = timeout(cfg.write_timeout, io.shutdown()).await;
            return;
        }
        if conn.is_closing() && close_deadline.is_none() {
            close_deadline = Some(Instant::now() + cfg.close_timeout);
        }
        release_if_empty(rbuf);
        let idle_deadline = last_input
            + if ping_sent {
                cfg.idle_timeout
            } else {
                cfg.idle_timeout / 2
            };
        let deadline = close_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
        let closing = close_deadline.is_some();
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if !closing => {
                conn.close(CloseCode::GOING_AWAY, "server shutting down");
            }
            out = endpoint.outbound(), if !closing => match out {
                Outbound::Frames(frames) => {
                    for frame in frames {
                        let _ = conn.send_encoded(frame);
                    }
                }
                Outbound::Close(code, reason) => conn.close(code, &reason),
            },
            read = read_when_ready(io, rbuf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    last_input = Instant::now();
                    ping_sent = false;
                }
            },
            () = sleep_until(deadline) => {
                if close_deadline.is_some_and(|d| Instant::now() >= d) {
                    debug!("peer did not answer our close frame");
                    return;
                }
                if ping_sent {
                    conn.close(CloseCode::NORMAL, "idle timeout");
                } else {
                    // Browsers answer pings automatically, so a live idle client stays connected.
                    let _ = conn.ping(b"");
                    ping_sent = true;
                }
            }
        }
    }
}

/// The /echo endpoint: every message goes back as it came, text as text, binary as binary.
pub struct Echo;

impl Endpoint for Echo {
    fn on_event(&mut self, conn: &mut Connection, event: Event) {
        if let Event::Message(message) = event {
            // After our close frame went out, nothing more may be sent; dropping is correct.
            let _ = conn.send(&message);
        }
    }

    fn outbound(&mut self) -> impl Future<Output = Outbound> + Send {
        std::future::pending()
    }
}

/// A byte stream that can say when a read would find data, so an idle connection waits with no
/// read buffer allocated and only reserves one when bytes are there.
pub trait ReadReady: AsyncRead + Unpin {
    /// Resolves when a read would not block (at once for streams that cannot tell).
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl ReadReady for tokio::net::TcpStream {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl ReadReady for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Waits for data, then reads it into `buf`, reserving room only now; `Ok(0)` at end of stream.
pub async fn read_when_ready<S: ReadReady>(io: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    io.ready().await?;
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    io.read_buf(buf).await
}

/// Gives back a read buffer that holds nothing, so an idle connection keeps no allocation.
pub fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Writes everything queued, several buffers per syscall.
pub async fn write_all<S: AsyncWrite + Unpin>(
    io: &mut S,
    outbox: &mut VecDeque<Bytes>,
    write_timeout: Duration,
) -> io::Result<()> {
    while !outbox.is_empty() {
        // The iovec array lives only inside one poll, not in the future: an idle connection's
        // task must not carry it.
        let queued = &*outbox;
        let write = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, bytes) in slices.iter_mut().zip(queued.iter()) {
                *slot = IoSlice::new(bytes);
                count += 1;
            }
            std::pin::Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
        });
        let written = timeout(write_timeout, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        consume(outbox, written);
    }
    io.flush().await
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
