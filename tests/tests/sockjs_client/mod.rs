//! A SockJS client for the end-to-end tests: a tiny HTTP/1.1 client over `TcpStream` (plain,
//! chunked and read-to-close bodies, read as they arrive) and sessions over the xhr,
//! xhr_streaming, eventsource and websocket transports.
#![allow(dead_code)] // each test uses a different subset

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound for one wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// An HTTP response whose body is read as it comes.
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body read so far.
    pub body: Vec<u8>,
    stream: TcpStream,
    raw: Vec<u8>,
    chunked: bool,
    length: Option<usize>,
    /// The body is complete.
    pub done: bool,
}

/// Sends one request (`Connection: close`) from `from` (default: any loopback address) and
/// reads the response head.
pub async fn request(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).expect("bind");
    }
    let mut stream = timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    let end = loop {
        if let Some(pos) = find(&raw, b"\r\n\r\n") {
            break pos;
        }
        let mut buf = [0u8; 4096];
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("no response head")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().split(' ').nth(1);
    let status = status.and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut resp = Resp {
        status,
        chunked: headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        length: headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok()),
        headers,
        body: Vec::new(),
        stream,
        raw: raw.split_off(end + 4),
        done: false,
    };
    resp.decode();
    resp
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Resp {
    /// Header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    /// The body read so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn decode(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.raw);
            self.done |= self.length.is_some_and(|n| self.body.len() >= n);
            return;
        }
        while let Some(pos) = find(&self.raw, b"\r\n") {
            let line = String::from_utf8_lossy(&self.raw[..pos]).into_owned();
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).expect("chunk size");
            if size == 0 {
                self.done = true;
                return;
            }
            if self.raw.len() < pos + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[pos + 2..pos + 2 + size]);
            self.raw.drain(..pos + 4 + size);
        }
    }

    /// Reads what comes before `deadline`; `false` once the body is complete (or the
    /// connection ended) or the deadline passed.
    pub async fn more(&mut self, deadline: Instant) -> bool {
        if self.done {
            return false;
        }
        let mut buf = [0u8; 16384];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                self.raw.extend_from_slice(&buf[..n]);
                self.decode();
                true
            }
            Ok(_) => {
                self.done = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Reads until `pred` holds for the body, it ends, or `limit` passes.
    pub async fn until(&mut self, limit: Duration, pred: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(&self.body) && self.more(deadline).await {}
    }

    /// Reads the whole body (panics if it does not end within `limit`).
    pub async fn all(mut self, limit: Duration) -> Resp {
        let deadline = Instant::now() + limit;
        while self.more(deadline).await {}
        assert!(
            self.done,
            "body did not end within {limit:?}: {}",
            self.text()
        );
        self
    }
}

/// A SockJS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Open,
    Heartbeat,
    Messages(Vec<String>),
    Close(u16, String),
}

/// Parses one frame as the server sent it.
pub fn parse(frame: &str) -> Frame {
    match frame.as_bytes().first() {
        Some(b'o') => Frame::Open,
        Some(b'h') => Frame::Heartbeat,
        Some(b'a') => Frame::Messages(serde_json::from_str(&frame[1..]).expect("a[…] frame")),
        Some(b'c') => {
            let (code, reason): (u16, String) =
                serde_json::from_str(&frame[1..]).expect("c[…] frame");
            Frame::Close(code, reason)
        }
        _ => panic!("not a SockJS frame: {frame:?}"),
    }
}

/// How a session receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Xhr,
    XhrStreaming,
    EventSource,
    WebSocket,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One SockJS session.
pub struct Session {
    addr: SocketAddr,
    /// `<prefix>/<server>/<session>`.
    pub base: String,
    query: String,
    transport: Transport,
    stream: Option<Resp>,
    /// Bytes of the current stream already made into frames.
    used: usize,
    ws: Option<Ws>,
    frames: VecDeque<Frame>,
    messages: VecDeque<String>,
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A fresh session id.
pub fn session_id() -> String {
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("s{}-{n}", std::process::id())
}

impl Session {
    /// Opens a session under `prefix` (`query`, e.g. `?name=alice`, goes on receiving
    /// requests) and reads its `o`.
    pub async fn open(
        server: &ServerProcess,
        prefix: &str,
        transport: Transport,
        query: &str,
    ) -> Session {
        let base = format!("{prefix}/000/{}", session_id());
        let ws = if transport == Transport::WebSocket {
            let url = server.ws_url(&format!("{base}/websocket{query}"));
            let connect = tokio_tungstenite::connect_async(url);
            Some(timeout(WAIT, connect).await.expect("ws").expect("ws").0)
        } else {
            None
        };
        let mut session = Session {
            addr: server.addr(),
            base,
            query: query.to_owned(),
            transport,
            stream: None,
            used: 0,
            ws,
            frames: VecDeque::new(),
            messages: VecDeque::new(),
        };
        assert_eq!(session.frame().await, Frame::Open);
        session
    }

    /// The next frame.
    pub async fn frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return frame;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let (base, query) = (self.base.clone(), self.query.clone());
        let path = move |t: &str| format!("{base}/{t}{query}");
        match self.transport {
            Transport::WebSocket => {
                let ws = self.ws.as_mut().expect("ws");
                match timeout(WAIT, ws.next()).await.expect("no frame") {
                    Some(Ok(Message::Text(t))) => self.frames.push_back(parse(&t)),
                    Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
                    Some(Ok(_)) => {}
                    other => panic!("websocket ended: {other:?}"),
                }
            }
            Transport::Xhr => {
                let resp = request(self.addr, None, "POST", &path("xhr"), &[], b"").await;
                let resp = resp.all(WAIT).await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                for line in resp.text().lines() {
                    self.frames.push_back(parse(line));
                }
            }
            Transport::XhrStreaming | Transport::EventSource => self.fill_stream(&path).await,
        }
    }

    async fn fill_stream(&mut self, path: &dyn Fn(&str) -> String) {
        let (transport, method, sep, prelude) = match self.transport {
            Transport::XhrStreaming => ("xhr_streaming", "POST", "\n", 2049),
            _ => ("eventsource", "GET", "\r\n\r\n", 2),
        };
        if self
            .stream
            .as_ref()
            .is_none_or(|s| s.done && s.body.len() <= self.used)
        {
            let resp = request(self.addr, None, method, &path(transport), &[], b"").await;
            assert_eq!(resp.status, 200);
            self.stream = Some(resp);
            self.used = prelude;
        }
        let stream = self.stream.as_mut().expect("stream");
        let used = self.used;
        stream
            .until(WAIT, |b| {
                b.len() > used && find(&b[used..], sep.as_bytes()).is_some()
            })
            .await;
        let rest = &stream.body[used.min(stream.body.len())..];
        let Some(end) = find(rest, sep.as_bytes()) else {
            assert!(stream.done, "no frame within {WAIT:?}");
            return;
        };
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.used += end + sep.len();
        let frame = match text.strip_prefix("data: ") {
            Some(data) => data
                .replace("%0D", "\r")
                .replace("%0A", "\n")
                .replace("%00", "\0")
                .replace("%25", "%"),
            None => text,
        };
        self.frames.push_back(parse(&frame));
    }

    /// Sends messages: over the WebSocket, or with `xhr_send` (which must answer 204).
    pub async fn send(&mut self, messages: &[&str]) {
        let payload = serde_json::to_string(messages).expect("json");
        if let Some(ws) = self.ws.as_mut() {
            ws.send(Message::text(payload)).await.expect("ws send");
            return;
        }
        let status = self.xhr_send(payload.as_bytes()).await.status;
        assert_eq!(status, 204, "xhr_send");
    }

    /// One `xhr_send` with `body`, its answer read whole.
    pub async fn xhr_send(&self, body: &[u8]) -> Resp {
        let path = format!("{}/xhr_send", self.base);
        let resp = request(self.addr, None, "POST", &path, &[], body).await;
        resp.all(WAIT).await
    }

    /// The next message (heartbeats skipped; a close frame panics).
    pub async fn recv(&mut self) -> String {
        loop {
            if let Some(message) = self.messages.pop_front() {
                return message;
            }
            match self.frame().await {
                Frame::Messages(m) => self.messages.extend(m),
                Frame::Heartbeat => {}
                other => panic!("expected messages, got {other:?}"),
            }
        }
    }
}
