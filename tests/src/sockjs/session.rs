//! One SockJS session: its URLs at one address ([`SockJsUrl`], with `xhr_send`), and a
//! [`Session`] receiving its frames over `xhr` polling, `xhr_streaming`, `eventsource` or
//! `websocket`, opening one receiving request after another as a browser's client does.
//!
//! The `Result` methods fail with what went wrong rather than panicking (a session whose node
//! died is what the cluster suites look at); the others panic, for the suites that want that.

use std::collections::VecDeque;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::http::{request, Resp, ANSWER_TIMEOUT};
use super::{parse_sock_frame, SockFrame};

/// One SockJS session's URLs at one address: `<prefix>/<server>/<session>/<transport><query>`.
#[derive(Debug, Clone)]
pub struct SockJsUrl {
    /// Where the requests go (a server, a balancer, or one node behind it).
    pub addr: SocketAddr,
    base: String,
    /// Goes on the receiving requests (e.g. `?name=alice`).
    query: String,
}

impl SockJsUrl {
    /// Session `id` under `prefix` (`/stomp`, `/ws`, `/sockjs-test/echo`) at `addr`.
    pub fn new(addr: SocketAddr, prefix: &str, id: &str) -> SockJsUrl {
        SockJsUrl {
            addr,
            base: format!("{prefix}/042/{id}"),
            query: String::new(),
        }
    }

    /// The same, with `query` (`?name=alice`) on every receiving request.
    pub fn with_query(mut self, query: &str) -> SockJsUrl {
        self.query = query.to_owned();
        self
    }

    /// The same session's URLs at another address.
    pub fn at(&self, addr: SocketAddr) -> SockJsUrl {
        SockJsUrl {
            addr,
            ..self.clone()
        }
    }

    /// The path of `transport` (`xhr`, `xhr_send`, …) without the query.
    pub fn path(&self, transport: &str) -> String {
        format!("{}/{transport}", self.base)
    }

    /// `method` on `transport` (with the query unless it is `xhr_send`), as a browser behind
    /// a balancer on loopback would send it: a request to a node directly names the same client
    /// (`X-Forwarded-For`, taken from trusted proxies only) as one through the balancer.
    pub async fn request(
        &self,
        method: &str,
        transport: &str,
        body: &[u8],
    ) -> Result<Resp, String> {
        let query = if transport == "xhr_send" {
            ""
        } else {
            &self.query
        };
        let path = format!("{}{query}", self.path(transport));
        let headers = [
            ("X-Forwarded-For", "127.0.0.1"),
            ("Content-Type", "text/plain;charset=UTF-8"),
        ];
        request(self.addr, None, method, &path, &headers, body).await
    }

    /// One `xhr_send` with `body`, its answer read whole.
    pub async fn xhr_send(&self, body: &[u8]) -> Result<Resp, String> {
        let resp = self.request("POST", "xhr_send", body).await?;
        resp.whole(ANSWER_TIMEOUT).await
    }

    /// `xhr_send` of `messages`: `Ok` on 204, else `Err` with the status and body (a session
    /// the node does not hold: `404 … Page not found`).
    pub async fn send(&self, messages: &[&str]) -> Result<(), String> {
        let body = serde_json::to_vec(messages).expect("JSON of strings");
        match self.xhr_send(&body).await? {
            resp if resp.status == 204 => Ok(()),
            resp => Err(format!("xhr_send: {} {}", resp.status, resp.text())),
        }
    }
}

/// How a session receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `xhr`: one poll after another.
    Xhr,
    /// `xhr_streaming`: one streaming answer after another.
    XhrStreaming,
    /// `eventsource`: one event stream after another.
    EventSource,
    /// `websocket`: one WebSocket, which also carries the sends.
    WebSocket,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One SockJS session, receiving over one transport.
pub struct Session {
    /// The session's URLs.
    pub url: SockJsUrl,
    transport: Transport,
    /// The open streaming answer (`xhr_streaming`, `eventsource`).
    stream: Option<Resp>,
    ws: Option<Ws>,
    frames: VecDeque<SockFrame>,
    messages: VecDeque<String>,
}

impl Session {
    /// A session on `url` receiving with `transport`; only a WebSocket connects here, the
    /// other transports' first request goes out with the first [`Session::next_frame`].
    pub async fn start(url: SockJsUrl, transport: Transport) -> Result<Session, String> {
        let ws = if transport == Transport::WebSocket {
            let ws_url = format!("ws://{}{}{}", url.addr, url.path("websocket"), url.query);
            let connect = tokio_tungstenite::connect_async(ws_url);
            let ws = timeout(ANSWER_TIMEOUT, connect).await;
            let ws = ws.map_err(|_| "websocket: connect timed out".to_owned())?;
            Some(ws.map_err(|e| format!("websocket: {e}"))?.0)
        } else {
            None
        };
        Ok(Session {
            url,
            transport,
            stream: None,
            ws,
            frames: VecDeque::new(),
            messages: VecDeque::new(),
        })
    }

    /// Opens the session and reads its `o`; panics on anything else.
    pub async fn open(url: SockJsUrl, transport: Transport) -> Session {
        let mut session = Self::start(url, transport)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(session.frame().await, SockFrame::Open);
        session
    }

    /// The next frame, opening receiving requests as needed; `Err` when a request failed, was
    /// cut or brought nothing within [`ANSWER_TIMEOUT`] (the next call tries afresh).
    pub async fn next_frame(&mut self) -> Result<SockFrame, String> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            match self.transport {
                Transport::WebSocket => self.ws_frame().await?,
                Transport::Xhr => self.poll().await?,
                Transport::XhrStreaming | Transport::EventSource => self.stream_frame().await?,
            }
        }
    }

    /// The next frame; panics when none comes.
    pub async fn frame(&mut self) -> SockFrame {
        let transport = self.transport;
        (self.next_frame().await).unwrap_or_else(|e| panic!("{:?} {transport:?}: {e}", self.url))
    }

    async fn ws_frame(&mut self) -> Result<(), String> {
        let ws = self
            .ws
            .as_mut()
            .expect("a WebSocket session has its WebSocket");
        let next = timeout(ANSWER_TIMEOUT, ws.next()).await;
        match next.map_err(|_| format!("websocket: no frame within {ANSWER_TIMEOUT:?}"))? {
            Some(Ok(Message::Text(text))) => self.push(&text),
            Some(Ok(Message::Close(close))) => Err(format!("websocket closed: {close:?}")),
            Some(Ok(_)) => Ok(()),
            other => Err(format!("websocket ended: {other:?}")),
        }
    }

    /// One `xhr` poll; `Err` unless it is a 200 carrying frames to its end.
    async fn poll(&mut self) -> Result<(), String> {
        let resp = self.url.request("POST", "xhr", b"").await?;
        let resp = (resp.whole(ANSWER_TIMEOUT).await).map_err(|e| format!("xhr: {e}"))?;
        if resp.status != 200 {
            return Err(format!("xhr: {} {}", resp.status, resp.text()));
        }
        let mut frames = Vec::new();
        for line in resp.text().lines() {
            frames.push(parse_sock_frame(line).ok_or(format!("xhr: bad frame {line:?}"))?);
        }
        self.frames.extend(frames);
        Ok(())
    }

    /// The next frame of the open streaming answer, opening one if there is none; a clean end
    /// of the answer leaves none open.
    async fn stream_frame(&mut self) -> Result<(), String> {
        let sep: &[u8] = match self.transport {
            Transport::XhrStreaming => b"\n",
            _ => b"\r\n\r\n",
        };
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open_stream().await?,
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        match stream.take_until(sep, deadline).await {
            Some(text) => {
                self.stream = Some(stream);
                match text.strip_prefix("data: ") {
                    Some(data) => self.push(&unescape_event_data(data)),
                    None => self.push(&text),
                }
            }
            None if stream.broken => Err(format!("{:?}: the answer was cut", self.transport)),
            None if stream.done => Ok(()),
            None => Err(format!(
                "{:?}: no frame within {ANSWER_TIMEOUT:?}",
                self.transport
            )),
        }
    }

    /// Opens an `xhr_streaming` or `eventsource` answer and reads its prelude (2 KiB of `h` on
    /// a line, for browsers that buffer the first bytes; an empty line).
    async fn open_stream(&mut self) -> Result<Resp, String> {
        let (name, method, prelude) = match self.transport {
            Transport::XhrStreaming => ("xhr_streaming", "POST", "h".repeat(2048) + "\n"),
            _ => ("eventsource", "GET", "\r\n".to_owned()),
        };
        let mut stream = self.url.request(method, name, b"").await?;
        if stream.status != 200 {
            let status = stream.status;
            let text = stream.whole(ANSWER_TIMEOUT).await.map(|r| r.text());
            return Err(format!("{name}: {status} {text:?}"));
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        match stream.take_until(prelude.as_bytes(), deadline).await {
            Some(before) if before.is_empty() => Ok(stream),
            other => Err(format!(
                "{name}: no prelude but {other:?} then {:?}",
                stream.text()
            )),
        }
    }

    fn push(&mut self, frame: &str) -> Result<(), String> {
        let parsed = parse_sock_frame(frame).ok_or(format!("not a SockJS frame: {frame:?}"))?;
        self.frames.push_back(parsed);
        Ok(())
    }

    /// Sends messages: over the WebSocket, or with `xhr_send` (which must answer 204).
    pub async fn send(&mut self, messages: &[&str]) {
        if let Some(ws) = self.ws.as_mut() {
            let payload = serde_json::to_string(messages).expect("JSON of strings");
            ws.send(Message::text(payload)).await.expect("ws send");
            return;
        }
        self.url
            .send(messages)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.url));
    }

    /// The next message (heartbeats skipped; any other frame panics).
    pub async fn recv(&mut self) -> String {
        loop {
            if let Some(message) = self.messages.pop_front() {
                return message;
            }
            match self.frame().await {
                SockFrame::Messages(m) => self.messages.extend(m),
                SockFrame::Heartbeat => {}
                other => panic!("expected messages, got {other:?}"),
            }
        }
    }
}

/// An `eventsource` event's data as the frame it carries (SockJS escapes `\r`, `\n`, NUL, `%`).
fn unescape_event_data(data: &str) -> String {
    data.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%00", "\0")
        .replace("%25", "%")
}
