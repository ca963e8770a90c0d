//! SockJS as a fallback client speaks it (`xhr-streaming`, `xhr-polling`): a task keeps one
//! receiving request open (or polls), parses its frames and hands each message over a small
//! channel — so a bot that reads slowly stops reading the socket, as a slow consumer would —
//! while sends go as `xhr_send` POSTs on a connection of their own.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::link::{Closed, Credential, Dial, OpenError};
use super::transport::HttpConn;
use crate::stats::ErrorKind;

/// Messages a session's task reads ahead of the bot.
const READ_AHEAD: usize = 64;

/// Session ids of this process: unique per bot, which is all SockJS asks.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What a session's receiving task reports.
enum Incoming {
    Open,
    Message(Bytes),
    Closed(String),
}

/// One SockJS session.
pub struct SockJs {
    incoming: mpsc::Receiver<Incoming>,
    sender: HttpConn,
    send_path: String,
    receiving: JoinHandle<()>,
}

/// How the session receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiving {
    /// `xhr_streaming`: one response carries many frames.
    Streaming,
    /// `xhr`: one response per frame.
    Polling,
}

impl SockJs {
    /// Opens a session under `prefix` (e.g. `/stomp`, with the query a guest or token needs)
    /// and waits for its open frame.
    pub(super) async fn open(
        dial: &Dial<'_>,
        prefix: &str,
        receiving: Receiving,
    ) -> Result<Self, OpenError> {
        let (path, query) = prefix.split_once('?').unwrap_or((prefix, ""));
        let mut query = query.to_owned();
        if let Credential::Token(token) = dial.credential {
            query = format!(
                "{query}{}access_token={token}",
                if query.is_empty() { "" } else { "&" }
            );
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let base = format!("{path}/{}/{}-{id}", id % 1000, std::process::id());
        let transport = match receiving {
            Receiving::Streaming => "xhr_streaming",
            Receiving::Polling => "xhr",
        };
        let receiver = HttpConn::open(dial).await?;
        let sender = HttpConn::open(dial).await?;
        let (tx, mut incoming) = mpsc::channel(READ_AHEAD);
        let receive_path = format!("{base}/{transport}{query}");
        let task = Receiver {
            conn: receiver,
            path: receive_path,
            tx,
        };
        let receiving = tokio::spawn(task.run());
        match incoming.recv().await {
            Some(Incoming::Open) => {}
            Some(Incoming::Closed(why)) => {
                receiving.abort();
                return Err(OpenError {
                    kind: ErrorKind::Connect,
                    why,
                });
            }
            _ => {
                receiving.abort();
                return Err(OpenError::connect("SockJS session did not open"));
            }
        }
        Ok(Self {
            incoming,
            sender,
            send_path: format!("{base}/xhr_send{query}"),
            receiving,
        })
    }

    /// Sends one message; done when the server took it (`204`).
    pub(super) async fn send(&mut self, message: &[u8]) -> Result<(), Closed> {
        let text = std::str::from_utf8(message).map_err(|_| Closed::new("message is not UTF-8"))?;
        let body = serde_json::to_vec(&[text]).map_err(|e| Closed::new(e.to_string()))?;
        let body = Some(("text/plain;charset=UTF-8", Bytes::from(body)));
        let (status, _) = self
            .sender
            .exchange(Method::POST, &self.send_path, body)
            .await
            .map_err(|e| Closed::new(format!("xhr_send: {e}")))?;
        if status == StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(Closed::new(format!("xhr_send: HTTP {status}")))
        }
    }

    /// The next message. Cancel-safe: a channel receive.
    pub(super) async fn recv(&mut self) -> Result<Bytes, Closed> {
        loop {
            match self.incoming.recv().await {
                Some(Incoming::Message(message)) => return Ok(message),
                Some(Incoming::Open) => {}
                Some(Incoming::Closed(why)) => return Err(Closed::new(why)),
                None => return Err(Closed::new("SockJS session ended")),
            }
        }
    }
}

impl Drop for SockJs {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}

/// The task holding a session's receiving requests.
struct Receiver {
    conn: HttpConn,
    path: String,
    tx: mpsc::Sender<Incoming>,
}

impl Receiver {
    async fn run(mut self) {
        let ending = loop {
            match self.one_request().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(why) => break why,
            }
        };
        let _ = self.tx.send(Incoming::Closed(ending)).await;
    }

    /// One receiving request, its frames handed over; `Ok(false)` once the session closed or
    /// the bot is gone.
    async fn one_request(&mut self) -> Result<bool, String> {
        let response = self
            .conn
            .request(Method::POST, &self.path, None)
            .await
            .map_err(|e| format!("receiving request: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("receiving request: HTTP {}", response.status()));
        }
        let mut body = response.into_body();
        let mut lines = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("receiving request: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            lines.extend_from_slice(&data);
            while let Some(end) = lines.iter().position(|&b| b == b'\n') {
                let line = lines.split_to(end + 1);
                if !self.frame(&line[..end]).await? {
                    return Ok(false);
                }
            }
        }
        // A poll answered, or a stream at its size limit: the next request continues.
        Ok(true)
    }

    /// One SockJS frame; `Ok(false)` once the bot is gone.
    async fn frame(&mut self, frame: &[u8]) -> Result<bool, String> {
        let sent = match frame.first() {
            Some(b'o') => self.tx.send(Incoming::Open).await,
            // Heartbeats, and xhr_streaming's prelude of `h`s.
            Some(b'h') | None => Ok(()),
            Some(b'a') => {
                let messages: Vec<String> = serde_json::from_slice(&frame[1..])
                    .map_err(|e| format!("bad SockJS frame: {e}"))?;
                for message in messages {
                    if self
                        .tx
                        .send(Incoming::Message(Bytes::from(message)))
                        .await
                        .is_err()
                    {
                        return Ok(false);
                    }
                }
                Ok(())
            }
            Some(b'c') => {
                let why = String::from_utf8_lossy(&frame[1..]).into_owned();
                return Err(format!("SockJS session closed: {why}"));
            }
            Some(_) => return Err("unknown SockJS frame".to_owned()),
        };
        Ok(sent.is_ok())
    }
}
