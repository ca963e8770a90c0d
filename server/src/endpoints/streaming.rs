//! Streamed HTTP answers (SockJS receiving requests, the SSE room feed): a body fed by the
//! endpoint's task through a small bounded channel, so a reader that stops reading stops the
//! task (its sends wait, with a timeout) instead of growing a buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Chunks a streamed body holds before its feeder waits for the reader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Any answer of the HTTP listener: whole, or streamed.
pub type Reply = Either<Full<Bytes>, Streamed>;

/// A body whose chunks come from a [`Feed`]; it ends when the feed is dropped.
pub struct Streamed {
    chunks: mpsc::Receiver<Bytes>,
}

/// The sending side of a [`Streamed`] body.
pub struct Feed {
    chunks: mpsc::Sender<Bytes>,
    /// Longest wait for the reader to take a chunk.
    write_timeout: Duration,
}

/// Why a chunk was not sent.
#[derive(Debug)]
pub enum FeedError {
    /// The client is gone (the connection closed, hyper dropped the body).
    Gone,
    /// The client stopped reading.
    Stalled,
}

/// A body and its feed; a chunk waits at most `write_timeout` for the reader.
pub fn streamed(write_timeout: Duration) -> (Feed, Streamed) {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    (
        Feed {
            chunks: tx,
            write_timeout,
        },
        Streamed { chunks: rx },
    )
}

impl Feed {
    /// Sends one chunk (empty chunks are skipped: they would mean nothing on the wire).
    pub async fn send(&self, chunk: Bytes) -> Result<(), FeedError> {
        if chunk.is_empty() {
            return Ok(());
        }
        match timeout(self.write_timeout, self.chunks.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(FeedError::Gone),
            Err(_) => Err(FeedError::Stalled),
        }
    }

    /// The client is gone.
    pub fn is_gone(&self) -> bool {
        self.chunks.is_closed()
    }

    /// Resolves when the client is gone.
    pub async fn gone(&self) {
        self.chunks.closed().await;
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A whole answer as a [`Reply`].
pub fn whole<B: Into<Full<Bytes>>>(resp: http::Response<B>) -> http::Response<Reply> {
    resp.map(|body| Either::Left(body.into()))
}

/// A streamed answer as a [`Reply`].
pub fn stream(resp: http::Response<Streamed>) -> http::Response<Reply> {
    resp.map(Either::Right)
}
