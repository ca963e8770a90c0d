//! A small Engine.IO 4 long-polling client for the Socket.IO suites: the handshake, `POST`s of
//! packets and `GET`s of what waits, over plain HTTP/1.1 requests from a chosen address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use crate::sockjs::http::request;

/// Longest wait for a whole answer (a long poll ends at the latest at the next ping).
pub const POLL_WAIT: Duration = Duration::from_secs(30);

/// An answer: status and whole body.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The packets of a long-polling answer.
    pub fn packets(&self) -> Vec<String> {
        self.text().split('\x1e').map(str::to_owned).collect()
    }
}

/// `method path` with `body` from `from`: the whole answer (`Err` if there was none).
pub async fn ask(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, String> {
    let resp = request(addr, from, method, path, headers, body).await?;
    let resp = resp.whole(POLL_WAIT).await?;
    Ok(Answer {
        status: resp.status,
        body: resp.body,
    })
}

/// A polling session of the chat (`/socket.io/`) or a test service.
#[derive(Clone, Debug)]
pub struct Polling {
    /// The server.
    pub addr: SocketAddr,
    /// Where the client's requests come from.
    pub from: Option<IpAddr>,
    /// The Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// Its sid.
    pub sid: String,
    /// The open packet's JSON.
    pub open: Value,
}

impl Polling {
    /// Opens a session at `path` (with `query` added to the handshake): its open packet read.
    pub async fn open(
        addr: SocketAddr,
        from: Option<IpAddr>,
        path: &str,
        query: &str,
    ) -> Result<Polling, Answer> {
        let url = format!("{path}?EIO=4&transport=polling{query}");
        let answer = ask(addr, from, "GET", &url, &[], b"")
            .await
            .map_err(|e| Answer {
                status: 0,
                body: e.into_bytes(),
            })?;
        let open: Option<Value> = answer
            .text()
            .strip_prefix('0')
            .and_then(|json| serde_json::from_str(json).ok());
        match (answer.status, open) {
            (200, Some(open)) => Ok(Polling {
                addr,
                from,
                path: path.to_owned(),
                sid: open["sid"].as_str().unwrap_or_default().to_owned(),
                open,
            }),
            _ => Err(answer),
        }
    }

    fn url(&self) -> String {
        format!("{}?EIO=4&transport=polling&sid={}", self.path, self.sid)
    }

    /// `POST`s `packets` joined by the separator.
    pub async fn post(&self, packets: &[&str]) -> Answer {
        let body = packets.join("\x1e");
        (ask(
            self.addr,
            self.from,
            "POST",
            &self.url(),
            &[],
            body.as_bytes(),
        )
        .await)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One long poll.
    pub async fn poll(&self) -> Answer {
        (ask(self.addr, self.from, "GET", &self.url(), &[], b"").await)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls until a packet matching `pred` comes (answering pings); every packet seen, in
    /// order, up to and including it. Panics after `limit` or on a non-200 answer.
    pub async fn until(&self, limit: Duration, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < deadline {
            let answer = self.poll().await;
            assert_eq!(
                answer.status,
                200,
                "poll of {}: {}",
                self.sid,
                answer.text()
            );
            for packet in answer.packets() {
                if packet == "2" {
                    self.post(&["3"]).await;
                }
                let done = pred(&packet);
                seen.push(packet);
                if done {
                    return seen;
                }
            }
        }
        panic!(
            "{}: nothing matching within {limit:?}; saw {seen:?}",
            self.sid
        );
    }
}
