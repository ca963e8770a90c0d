//! A SockJS client over plain HTTP/1.1 (`xhr` polling, `xhr_streaming`, `xhr_send`), and STOMP
//! on top of it: written here so the tests make every request themselves — which session id,
//! which address (a balancer, or one node directly) — and see every answer as it comes.
//!
//! Nothing here panics on a lost connection: a session whose node died is what the cluster
//! suites look at, so a request that ends early is reported ([`Event::Lost`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::stomp::{parse_frame, Frame};

/// Longest wait for an answer to start (a poll's whole answer comes within the heartbeat).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A SockJS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockFrame {
    /// `o`: the session was opened by this request.
    Open,
    /// `h`.
    Heartbeat,
    /// `a[…]`: messages.
    Messages(Vec<String>),
    /// `c[code,"reason"]`.
    Close(u16, String),
}

/// Parses one frame (one line of an `xhr` or `xhr_streaming` answer).
pub fn parse_sock_frame(line: &str) -> Option<SockFrame> {
    match line.as_bytes().first()? {
        b'o' if line == "o" => Some(SockFrame::Open),
        b'h' if line == "h" => Some(SockFrame::Heartbeat),
        b'a' => serde_json::from_str(&line[1..])
            .ok()
            .map(SockFrame::Messages),
        b'c' => {
            let (code, reason): (u16, String) = serde_json::from_str(&line[1..]).ok()?;
            Some(SockFrame::Close(code, reason))
        }
        _ => None,
    }
}

/// How an answer's body is delimited.
enum Framing {
    Chunked { left: usize, need_crlf: bool },
    Length(usize),
    Eof,
}

/// One HTTP answer, its body read as it arrives.
struct Answer {
    stream: TcpStream,
    status: u16,
    framing: Framing,
    raw: Vec<u8>,
    body: Vec<u8>,
    done: bool,
    /// The connection ended before the body did.
    broken: bool,
}

/// Sends `POST path` (body `body`, `Connection: close`) and reads the answer's head.
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Result<Answer, String> {
    let mut stream = timeout(ANSWER_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    // What nginx would say for a client on loopback: a request sent to a node directly names
    // the same client as one through the balancer (sessions are bound to the client address).
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Forwarded-For: 127.0.0.1\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = match timeout(ANSWER_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(format!("POST {path}: no answer head")),
        };
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    raw.drain(..head_end + 4);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("POST {path}: bad status line"))?;
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked {
            left: 0,
            need_crlf: false,
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(len)
    } else if status == 204 {
        Framing::Length(0)
    } else {
        Framing::Eof
    };
    let mut answer = Answer {
        stream,
        status,
        framing,
        raw,
        body: Vec::new(),
        done: false,
        broken: false,
    };
    answer.decode();
    Ok(answer)
}

impl Answer {
    /// Moves what `raw` holds of the body into `body`.
    fn decode(&mut self) {
        loop {
            match &mut self.framing {
                Framing::Length(left) => {
                    let take = (*left).min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    *left -= take;
                    self.done |= *left == 0;
                    return;
                }
                Framing::Eof => {
                    self.body.append(&mut self.raw);
                    return;
                }
                Framing::Chunked { left, need_crlf } if *left > 0 => {
                    let take = (*left).min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    *left -= take;
                    *need_crlf = *left == 0;
                    if self.raw.is_empty() {
                        return;
                    }
                }
                Framing::Chunked { need_crlf, .. } if *need_crlf => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    self.raw.drain(..2);
                    *need_crlf = false;
                }
                Framing::Chunked { left, .. } => {
                    let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 2);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    match usize::from_str_radix(size, 16) {
                        Ok(0) => {
                            self.done = true;
                            return;
                        }
                        Ok(size) => *left = size,
                        Err(_) => {
                            (self.done, self.broken) = (true, true);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reads more of the body; `false` once it is complete (or the connection is gone).
    async fn fill(&mut self) -> bool {
        if self.done {
            return false;
        }
        let mut chunk = [0u8; 16384];
        match timeout(ANSWER_TIMEOUT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.raw.extend_from_slice(&chunk[..n]);
                self.decode();
            }
            _ => {
                self.broken = !matches!(self.framing, Framing::Eof);
                self.done = true;
            }
        }
        true
    }

    /// The next line of the body, without its `\n`; `None` at the end.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.body.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The rest of the body, as text.
    async fn text(&mut self) -> String {
        while self.fill().await {}
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One SockJS session's URLs on one address: `<prefix>/<server>/<session>/…`.
#[derive(Debug, Clone)]
pub struct SockJsUrl {
    /// Where the requests go (a balancer, or a node).
    pub addr: SocketAddr,
    base: String,
}

impl SockJsUrl {
    /// Session `id` under `prefix` (`/stomp`, `/ws`) at `addr`.
    pub fn new(addr: SocketAddr, prefix: &str, id: &str) -> SockJsUrl {
        SockJsUrl {
            addr,
            base: format!("{prefix}/042/{id}"),
        }
    }

    /// The same session's URLs at another address.
    pub fn at(&self, addr: SocketAddr) -> SockJsUrl {
        SockJsUrl {
            addr,
            base: self.base.clone(),
        }
    }

    /// One `xhr` poll: the frames of its answer. `Err` when it is not a 200 carrying frames
    /// to its end.
    pub async fn poll(&self) -> Result<Vec<SockFrame>, String> {
        let mut answer = post(self.addr, &format!("{}/xhr", self.base), b"").await?;
        if answer.status != 200 {
            let status = answer.status;
            return Err(format!("xhr: {status} {}", answer.text().await));
        }
        let mut frames = Vec::new();
        while let Some(line) = answer.line().await {
            frames.push(parse_sock_frame(&line).ok_or(format!("xhr: bad frame {line:?}"))?);
        }
        if answer.broken {
            return Err(format!("xhr: the answer ended early after {frames:?}"));
        }
        Ok(frames)
    }

    /// Opens an `xhr_streaming` answer.
    pub async fn stream(&self) -> Result<SockStream, String> {
        let answer = post(self.addr, &format!("{}/xhr_streaming", self.base), b"").await?;
        let mut stream = SockStream { answer };
        if stream.answer.status != 200 {
            let text = stream.answer.text().await;
            return Err(format!("xhr_streaming: {} {text}", stream.answer.status));
        }
        // The prelude: 2 KiB of `h` on a line, for browsers that buffer the first bytes.
        match stream.answer.line().await {
            Some(p) if p.len() == 2048 && p.bytes().all(|b| b == b'h') => Ok(stream),
            other => Err(format!("xhr_streaming: no prelude but {other:?}")),
        }
    }

    /// `xhr_send` of `messages`: `Ok` on 204, else `Err` with the status and body (a session
    /// the node does not hold: `404 … Page not found`).
    pub async fn send(&self, messages: &[&str]) -> Result<(), String> {
        let body = serde_json::to_vec(messages).expect("JSON of strings");
        let mut answer = post(self.addr, &format!("{}/xhr_send", self.base), &body).await?;
        match answer.status {
            204 => Ok(()),
            status => Err(format!("xhr_send: {status} {}", answer.text().await)),
        }
    }
}

/// An open `xhr_streaming` answer.
pub struct SockStream {
    answer: Answer,
}

impl SockStream {
    /// The next frame; `Ok(None)` when the answer ended as it should (the response limit, a
    /// close), `Err` when it was cut.
    pub async fn next(&mut self) -> Result<Option<SockFrame>, String> {
        match self.answer.line().await {
            Some(line) => parse_sock_frame(&line)
                .map(Some)
                .ok_or(format!("xhr_streaming: bad frame {line:?}")),
            None if self.answer.broken => Err("xhr_streaming: the answer was cut".into()),
            None => Ok(None),
        }
    }
}

/// A receiving transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `xhr`: one poll after another.
    Polling,
    /// `xhr_streaming`: one streaming answer after another.
    Streaming,
}

/// What a STOMP-over-SockJS client hears.
#[derive(Debug)]
pub enum Event {
    /// `o`: a receiving request opened the session (again, after its node died).
    Open,
    /// A STOMP frame.
    Frame(Frame),
    /// `c[…]`: the session is over.
    Closed(u16, String),
    /// A receiving request failed or was cut; the client tries again.
    Lost(String),
}

/// A STOMP client over one SockJS session: a task keeps one receiving request open at a time,
/// as a browser's SockJS client does, and hands over what arrives.
pub struct SockJsStomp {
    /// The session's URLs.
    pub url: SockJsUrl,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl SockJsStomp {
    /// Starts receiving on `url` (opening the session) with `transport`.
    pub fn start(url: SockJsUrl, transport: Transport) -> SockJsStomp {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(receive(url.clone(), transport, tx));
        SockJsStomp { url, events, task }
    }

    /// Opens the session and CONNECTs as guest `login`; panics unless `o` then CONNECTED.
    pub async fn connect(url: SockJsUrl, transport: Transport, login: &str) -> SockJsStomp {
        let mut client = Self::start(url, transport);
        match client.next(Duration::from_secs(10)).await {
            Some(Event::Open) => {}
            other => panic!("{:?}: expected the open frame, got {other:?}", client.url),
        }
        client.stomp_connect(login).await;
        client
    }

    /// CONNECT as `login` on the open session; panics unless CONNECTED.
    pub async fn stomp_connect(&mut self, login: &str) {
        let connect = format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\n\n\0");
        self.send_raw(&connect)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let frame = self.frame(Duration::from_secs(10)).await;
        assert_eq!(frame.command, "CONNECTED", "{frame:?}");
    }

    /// Sends one STOMP frame in one `xhr_send`.
    pub async fn send(&self, command: &str, headers: &[(&str, &str)], body: &str) {
        let mut frame = format!("{command}\n");
        for (name, value) in headers {
            frame.push_str(&format!("{name}:{value}\n"));
        }
        frame.push_str(&format!("content-length:{}\n\n{body}\0", body.len()));
        self.send_raw(&frame)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {command}: {e}", self.url));
    }

    /// `xhr_send` of `text` as one message.
    pub async fn send_raw(&self, text: &str) -> Result<(), String> {
        self.url.send(&[text]).await
    }

    /// SUBSCRIBE to `destination` (catching up after `since`, if given); waits for the
    /// RECEIPT and returns the MESSAGEs that came before it (a catch-up's replay may).
    pub async fn subscribe(&mut self, destination: &str, since: Option<u64>) -> Vec<Frame> {
        let since = since.map(|s| s.to_string());
        let mut headers = vec![
            ("id", "s"),
            ("destination", destination),
            ("receipt", "sub"),
        ];
        if let Some(since) = &since {
            headers.push(("since", since));
        }
        self.send("SUBSCRIBE", &headers, "").await;
        let mut early = Vec::new();
        loop {
            let frame = self.frame(Duration::from_secs(10)).await;
            match frame.command.as_str() {
                "RECEIPT" => return early,
                "MESSAGE" => early.push(frame),
                _ => panic!("{:?}: SUBSCRIBE answered {frame:?}", self.url),
            }
        }
    }

    /// The next event within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Event> {
        timeout(limit, self.events.recv()).await.ok().flatten()
    }

    /// The next STOMP frame within `limit`; panics on anything else.
    pub async fn frame(&mut self, limit: Duration) -> Frame {
        match self.next(limit).await {
            Some(Event::Frame(frame)) => frame,
            other => panic!("{:?}: expected a STOMP frame, got {other:?}", self.url),
        }
    }
}

impl Drop for SockJsStomp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiving loop: one request after another until the session closes or the client is
/// dropped.
async fn receive(url: SockJsUrl, transport: Transport, tx: mpsc::UnboundedSender<Event>) {
    let mut stomp = Vec::new();
    loop {
        let started = Instant::now();
        let outcome = match transport {
            Transport::Polling => match url.poll().await {
                Ok(frames) => frames
                    .into_iter()
                    .try_for_each(|f| forward(f, &mut stomp, &tx)),
                Err(why) => tx.send(Event::Lost(why)).map_err(|_| ()),
            },
            Transport::Streaming => match url.stream().await {
                Ok(mut stream) => loop {
                    match stream.next().await {
                        Ok(Some(frame)) => {
                            if forward(frame, &mut stomp, &tx).is_err() {
                                break Err(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(why) => break tx.send(Event::Lost(why)).map_err(|_| ()),
                    }
                },
                Err(why) => tx.send(Event::Lost(why)).map_err(|_| ()),
            },
        };
        if outcome.is_err() {
            return;
        }
        // A request that failed at once is not retried in a tight loop.
        if started.elapsed() < Duration::from_millis(50) {
            sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Passes one SockJS frame on; `Err` when the session is over or nobody listens.
fn forward(
    frame: SockFrame,
    stomp: &mut Vec<u8>,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<(), ()> {
    match frame {
        SockFrame::Heartbeat => Ok(()),
        SockFrame::Open => {
            // A fresh session: a fresh STOMP stream.
            stomp.clear();
            tx.send(Event::Open).map_err(|_| ())
        }
        SockFrame::Close(code, reason) => {
            let _ = tx.send(Event::Closed(code, reason));
            Err(())
        }
        SockFrame::Messages(messages) => {
            for message in messages {
                stomp.extend_from_slice(message.as_bytes());
            }
            loop {
                let eols = stomp.iter().take_while(|&&b| b == b'\n' || b == b'\r');
                let skip = eols.count();
                stomp.drain(..skip);
                let Some((frame, used)) = parse_frame(stomp) else {
                    return Ok(());
                };
                stomp.drain(..used);
                tx.send(Event::Frame(frame)).map_err(|_| ())?;
            }
        }
    }
}
