//! Engine.IO v4 HTTP long-polling, as a Socket.IO client without WebSockets speaks it: the
//! handshake `GET` (answered `0{…}` with the session id), then one `GET` outstanding at a time,
//! answered with the packets waiting (joined by `\x1e`), and `POST`s of what the client queued,
//! joined the same way, one outstanding at a time.
//!
//! A task polls and hands each packet over a small channel — so a bot that reads slowly stops
//! polling, as a slow client would — and another posts, on a connection of its own.

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::link::{Closed, Dial, OpenError};
use super::transport::HttpConn;
use crate::stats::ErrorKind;

/// Packets the polling task reads ahead of the bot.
const READ_AHEAD: usize = 64;

/// Engine.IO's separator of the packets in one long-polling payload.
const SEPARATOR: u8 = 0x1e;

/// What the polling and posting tasks report: a packet, or why the session ended.
type Incoming = Result<Bytes, String>;

/// One Engine.IO long-polling session.
pub struct Polling {
    incoming: mpsc::Receiver<Incoming>,
    /// Packets to post. Unbounded so that queueing one never waits (and so is cancel-safe): the
    /// bots' in-flight cap bounds what a bot sends ahead of its acknowledgements.
    outgoing: Option<mpsc::UnboundedSender<String>>,
    polling: JoinHandle<()>,
    posting: Option<JoinHandle<()>>,
}

/// The open packet's one field the client needs.
#[derive(Deserialize)]
struct Open {
    sid: String,
}

impl Polling {
    /// The handshake on `path` (its query has `EIO=4&transport=polling`); the open packet is the
    /// first [`Polling::recv`] returns.
    pub(super) async fn open(dial: &Dial<'_>, path: &str) -> Result<Self, OpenError> {
        let mut poller = HttpConn::open(dial).await?;
        let failed = |why: String| OpenError::connect(format!("engine.io handshake: {why}"));
        let (status, payload) = poller
            .exchange(Method::GET, path, None)
            .await
            .map_err(failed)?;
        if status != StatusCode::OK {
            let kind = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
                _ => ErrorKind::Connect,
            };
            let body = String::from_utf8_lossy(&payload);
            return Err(OpenError {
                kind,
                why: format!("engine.io handshake: HTTP {status} {}", body.trim()),
            });
        }
        let packets = split_payload(&payload);
        let sid = packets
            .first()
            .and_then(|open| open.strip_prefix(b"0"))
            .and_then(|json| serde_json::from_slice::<Open>(json).ok())
            .ok_or_else(|| failed("no open packet".into()))?
            .sid;
        let session = format!("{path}&sid={sid}");
        let poster = HttpConn::open(dial).await?;
        let (tx, incoming) = mpsc::channel(READ_AHEAD.max(packets.len()));
        for packet in packets {
            // Cannot fail: the channel is new, has room for them all and its receiver is here.
            let _ = tx.try_send(Ok(packet));
        }
        let (outgoing, to_post) = mpsc::unbounded_channel();
        let polling = tokio::spawn(poll(poller, session.clone(), tx.clone()));
        let posting = tokio::spawn(post(poster, session, to_post, tx));
        Ok(Self {
            incoming,
            outgoing: Some(outgoing),
            polling,
            posting: Some(posting),
        })
    }

    /// Queues a packet for the next `POST`.
    pub(super) fn send(&mut self, packet: String) -> Result<(), Closed> {
        self.outgoing
            .as_ref()
            .and_then(|out| out.send(packet).ok())
            .ok_or_else(|| Closed::new("engine.io polling: no longer posting"))
    }

    /// The next packet. Cancel-safe: a channel receive.
    pub(super) async fn recv(&mut self) -> Result<Bytes, Closed> {
        match self.incoming.recv().await {
            Some(Ok(packet)) => Ok(packet),
            Some(Err(why)) => Err(Closed::new(why)),
            None => Err(Closed::new("engine.io polling ended")),
        }
    }

    /// Posts Engine.IO's close (`1`) after whatever is queued, and waits until it went.
    pub(super) async fn close(&mut self) {
        if let Some(out) = self.outgoing.take() {
            let _ = out.send("1".to_owned());
        }
        if let Some(posting) = self.posting.take() {
            let _ = posting.await;
        }
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.polling.abort();
        if let Some(posting) = &self.posting {
            posting.abort();
        }
    }
}

/// The packets of one long-polling payload (an empty one has none).
pub(super) fn split_payload(payload: &Bytes) -> Vec<Bytes> {
    payload
        .split(|&b| b == SEPARATOR)
        .filter(|packet| !packet.is_empty())
        .map(|packet| payload.slice_ref(packet))
        .collect()
}

/// Keeps one `GET` outstanding, handing over what each brings, until the session or the bot
/// ends.
async fn poll(mut conn: HttpConn, path: String, tx: mpsc::Sender<Incoming>) {
    let why = loop {
        let (status, payload) = match conn.exchange(Method::GET, &path, None).await {
            Ok(answer) => answer,
            Err(e) => break format!("engine.io poll: {e}"),
        };
        if status != StatusCode::OK {
            let body = String::from_utf8_lossy(&payload);
            break format!("engine.io poll: HTTP {status} {}", body.trim());
        }
        for packet in split_payload(&payload) {
            if tx.send(Ok(packet)).await.is_err() {
                return;
            }
        }
    };
    let _ = tx.send(Err(why)).await;
}

/// Posts what is queued, all of it in one `POST`, one `POST` at a time, until the bot is done
/// (its sender dropped) or a `POST` fails.
async fn post(
    mut conn: HttpConn,
    path: String,
    mut queued: mpsc::UnboundedReceiver<String>,
    tx: mpsc::Sender<Incoming>,
) {
    while let Some(mut payload) = queued.recv().await {
        while let Ok(more) = queued.try_recv() {
            payload.push(char::from(SEPARATOR));
            payload.push_str(&more);
        }
        let body = Some(("text/plain;charset=UTF-8", Bytes::from(payload)));
        let why = match conn.exchange(Method::POST, &path, body).await {
            Ok((StatusCode::OK, _)) => continue,
            Ok((status, answer)) => {
                let answer = String::from_utf8_lossy(&answer);
                format!("engine.io post: HTTP {status} {}", answer.trim())
            }
            Err(e) => format!("engine.io post: {e}"),
        };
        let _ = tx.send(Err(why)).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_splits_into_its_packets() {
        let payload = Bytes::from_static(b"0{\"sid\":\"a\"}\x1e40{\"sid\":\"b\"}\x1e2\x1ebAQID");
        let packets = split_payload(&payload);
        assert_eq!(
            packets,
            [
                &b"0{\"sid\":\"a\"}"[..],
                b"40{\"sid\":\"b\"}",
                b"2",
                b"bAQID"
            ]
        );
        assert!(split_payload(&Bytes::new()).is_empty());
        assert_eq!(split_payload(&Bytes::from_static(b"6")), [&b"6"[..]]);
    }
}
