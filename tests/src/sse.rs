//! An SSE reader for the tests: the shared HTTP client's streaming answer (`sockjs::http`), its
//! body cut into events and comments.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::sockjs::http::{request, Resp};
use crate::stomp::WAIT;

/// One SSE event (or comment) as the client sees it.
#[derive(Debug, Default)]
pub struct Event {
    /// `event:`, for named events.
    pub event: Option<String>,
    /// `id:`.
    pub id: Option<String>,
    /// `data:` lines, joined.
    pub data: String,
    /// A comment line's text (heartbeats), when the block was only that.
    pub comment: Option<String>,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }

    /// The id as a number.
    pub fn id(&self) -> u64 {
        self.id
            .as_deref()
            .expect("an id")
            .parse()
            .expect("numeric id")
    }
}

/// An SSE feed: the shared HTTP client's streaming answer, its body cut into events.
pub struct Sse {
    /// The streaming answer.
    pub resp: Resp,
}

impl Sse {
    /// `GET path` with `headers`; returns once the response head is in.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let resp = request(addr, None, "GET", path, &all, b"").await;
        Sse {
            resp: resp.unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The next event or comment within `limit`; `None` once the stream ended.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = Instant::now() + limit;
        match self.resp.take_until(b"\n\n", deadline).await {
            Some(block) => Some(parse_event(&block)),
            None => {
                assert!(self.resp.done, "no SSE event within {limit:?}");
                None
            }
        }
    }

    /// The next event or comment within the usual wait.
    pub async fn next(&mut self) -> Option<Event> {
        self.next_within(WAIT).await
    }

    /// The next event that is not a comment.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let event = self.next().await.expect("the stream ended");
            if event.comment.is_none() {
                return event;
            }
        }
    }
}

/// One SSE block as an event.
pub fn parse_event(block: &str) -> Event {
    let mut event = Event::default();
    let mut data = Vec::new();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "event" => event.event = Some(value),
            "id" => event.id = Some(value),
            "data" => data.push(value),
            other => panic!("unexpected SSE field {other:?}"),
        }
    }
    event.data = data.join("\n");
    if !event.data.is_empty() || event.id.is_some() {
        event.comment = None;
    }
    event
}
