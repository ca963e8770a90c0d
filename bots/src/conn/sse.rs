//! A reader of the Server-Sent Events room feed (`GET /api/rooms/<room>/events`) that posts
//! over REST (`POST /api/rooms/<room>/messages`, answered `201` once durable): the one-way
//! client of scripts and dashboards. Events carry the raw protocol's JSON, handled as a raw
//! client's. Posting needs an account (`auth = "token"` or `"register"`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::link::{Closed, Credential, Dial, Handler, Link, OpenError, Sent, Target};
use super::raw::handle_raw;
use super::transport::http_connect;

/// Events the feed's task reads ahead of the bot.
const READ_AHEAD: usize = 64;

/// What the feed's task reports.
enum Event {
    /// The feed is subscribed (its `: ok` comment).
    Subscribed,
    /// One event's data.
    Data(Bytes),
    /// The feed ended.
    Ended(String),
}

/// An SSE bot connection: the feed once joined, and a connection for posts.
pub struct Sse {
    host: String,
    token: Option<String>,
    posts: SendRequest<Full<Bytes>>,
    feed_conn: Option<SendRequest<Full<Bytes>>>,
    events: Option<mpsc::Receiver<Event>>,
    feed: Option<JoinHandle<()>>,
    /// Acknowledgements of posts, handed to the next read.
    acks: VecDeque<Sent>,
}

impl Sse {
    /// Opens the two HTTP connections; the feed starts at `join`.
    pub(super) async fn open(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let http = dial.targets.http;
        Ok(Self {
            host: http.to_string(),
            token: match dial.credential {
                Credential::Token(token) => Some(token.clone()),
                Credential::Guest => None,
            },
            posts: http_connect(dial, http).await?,
            feed_conn: Some(http_connect(dial, http).await?),
            events: None,
            feed: None,
            acks: VecDeque::new(),
        })
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Closed> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &self.host);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        request
            .body(Full::new(body))
            .map_err(|e| Closed::new(e.to_string()))
    }
}

impl Sse {
    async fn open_feed(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        uri: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Closed> {
        let request = self.request(Method::GET, uri, Bytes::new())?;
        conn.send_request(request)
            .await
            .map_err(|e| Closed::new(format!("feed: {e}")))
    }

    /// Creates public room `room` (another bot may have just made it: 409 is fine).
    async fn create_room(&mut self, room: &str) -> Result<(), Closed> {
        let json = serde_json::to_vec(&serde_json::json!({ "name": room }))
            .map_err(|e| Closed::new(e.to_string()))?;
        let request = self.request(Method::POST, "/api/rooms", json.into())?;
        let response = self
            .posts
            .send_request(request)
            .await
            .map_err(|e| Closed::new(format!("creating the room: {e}")))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        match status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => Ok(()),
            status => Err(Closed::new(format!("creating the room: HTTP {status}"))),
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            feed.abort();
        }
    }
}

impl Link for Sse {
    async fn join(&mut self, room: &str, _dms: bool, since: Option<u64>) -> Result<(), Closed> {
        let Some(mut conn) = self.feed_conn.take() else {
            return Err(Closed::new("an SSE connection reads one room"));
        };
        let uri = match since {
            Some(id) => format!("/api/rooms/{room}/events?since={id}"),
            None => format!("/api/rooms/{room}/events"),
        };
        let mut response = self.open_feed(&mut conn, &uri).await?;
        if response.status() == StatusCode::NOT_FOUND && self.token.is_some() {
            // A feed creates no room (a raw join would): an account makes it first, then reads.
            let _ = response.into_body().collect().await;
            self.create_room(room).await?;
            response = self.open_feed(&mut conn, &uri).await?;
        }
        if response.status() != StatusCode::OK {
            return Err(Closed::new(format!("feed: HTTP {}", response.status())));
        }
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        self.events = Some(rx);
        self.feed = Some(tokio::spawn(async move {
            // The connection lives as long as the feed's body is read.
            let _conn = conn;
            let ending = read_feed(response.into_body(), &tx).await;
            let _ = tx.send(Event::Ended(ending)).await;
        }));
        Ok(())
    }

    async fn send(&mut self, to: Target<'_>, body: &str, _seq: u64) -> Result<(), Closed> {
        let Target::Room(room) = to else {
            return Err(Closed::new("the SSE client has no direct messages"));
        };
        let json = serde_json::to_vec(&serde_json::json!({ "body": body }))
            .map_err(|e| Closed::new(e.to_string()))?;
        let request = self.request(
            Method::POST,
            &format!("/api/rooms/{room}/messages"),
            json.into(),
        )?;
        let response = self
            .posts
            .send_request(request)
            .await
            .map_err(|e| Closed::new(format!("post: {e}")))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status != StatusCode::CREATED {
            return Err(Closed::new(format!("post: HTTP {status}")));
        }
        self.acks.push_back(Sent::Message);
        Ok(())
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        if let Some(sent) = self.acks.pop_front() {
            h.on_ack(sent);
            return Ok(());
        }
        let Some(events) = self.events.as_mut() else {
            // Not joined: nothing will come.
            return std::future::pending().await;
        };
        match events.recv().await {
            Some(Event::Subscribed) => h.on_joined(),
            Some(Event::Data(data)) => handle_raw(&data, h),
            Some(Event::Ended(why)) => return Err(Closed::new(why)),
            None => return Err(Closed::new("feed ended")),
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
    }
}

/// Reads the feed's events until it ends; what ended it.
async fn read_feed(mut body: hyper::body::Incoming, tx: &mpsc::Sender<Event>) -> String {
    let mut text = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => return format!("feed: {e}"),
        };
        text.extend_from_slice(&data);
        // Events end with a blank line; the server writes `\n` line ends.
        while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            let event = text.split_to(end + 2);
            if let Some(what) = parse_event(&event) {
                if tx.send(what).await.is_err() {
                    return "bot gone".to_owned();
                }
            }
        }
    }
    "feed ended by the server".to_owned()
}

/// One event's meaning: its data (every kind of event carries the raw JSON with its `type`),
/// or the feed's opening comment.
fn parse_event(event: &[u8]) -> Option<Event> {
    let mut data = BytesMut::new();
    for line in event.split(|&b| b == b'\n') {
        if line == b": ok" {
            return Some(Event::Subscribed);
        }
        if let Some(rest) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.extend_from_slice(b"\n");
            }
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    (!data.is_empty()).then(|| Event::Data(data.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        assert!(matches!(parse_event(b": ok\n\n"), Some(Event::Subscribed)));
        assert!(parse_event(b": hb\n\n").is_none());
        let Some(Event::Data(data)) = parse_event(b"id: 4\ndata: {\"type\":\"message\"}\n\n")
        else {
            panic!("no data");
        };
        assert_eq!(&data[..], br#"{"type":"message"}"#);
    }
}
