//! One HTTP/1.1 request per connection whose answer's body is read as it arrives (plain,
//! chunked and read-to-close bodies): the SockJS transports' requests, and the SSE feeds'.
//!
//! Nothing here panics on a refused or lost connection: the cluster suites send to nodes that
//! died, so a request that fails is an `Err`, and a body that ends early is marked
//! ([`Resp::broken`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

use crate::http::{parse_head, request_bytes};

/// Longest wait for a connection and an answer's head (a poll's whole answer comes within the
/// server's heartbeat, 25 s by default).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How an answer's body is delimited.
#[derive(Debug)]
enum Framing {
    Chunked { left: usize, need_crlf: bool },
    Length(usize),
    Eof,
}

/// An HTTP answer whose body is read as it comes.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body read so far (and not yet taken with [`Resp::take_until`]), de-chunked.
    pub body: Vec<u8>,
    /// The body is complete, or the connection is gone.
    pub done: bool,
    /// The connection ended before the body did.
    pub broken: bool,
    stream: TcpStream,
    framing: Framing,
    /// Bytes read but not yet de-chunked.
    raw: Vec<u8>,
}

/// Sends `method path` to `addr` from `from` (default: any local address) with `headers` and
/// `body` (`Host`, `Connection: close` and `Content-Length` added as [`request_bytes`] says);
/// returns once the answer's head is in.
pub async fn request(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let what = format!("{method} {path} to {addr}");
    let mut stream = timeout(ANSWER_TIMEOUT, connect(addr, from))
        .await
        .map_err(|_| format!("{what}: connect timed out"))?
        .map_err(|e| format!("{what}: connect: {e}"))?;
    let bytes = request_bytes(addr, method, path, headers, body);
    (stream.write_all(&bytes).await).map_err(|e| format!("{what}: write: {e}"))?;
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&raw, b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        match timeout(ANSWER_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("{what}: no answer head")),
        }
    };
    let (status, headers) = parse_head(&raw[..head_end]).map_err(|e| format!("{what}: {e}"))?;
    raw.drain(..head_end + 4);
    let mut resp = Resp {
        framing: framing(status, &headers),
        status,
        headers,
        body: Vec::new(),
        done: false,
        broken: false,
        stream,
        raw,
    };
    resp.decode();
    Ok(resp)
}

async fn connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// How the body of an answer with `status` and `headers` ends.
fn framing(status: u16, headers: &[(String, String)]) -> Framing {
    let header = |name| crate::header_values(headers, name).into_iter().next();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked {
            left: 0,
            need_crlf: false,
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(len)
    } else if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::Eof
    }
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Resp {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header_values(&self.headers, name).into_iter().next()
    }

    /// The body read so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

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
                    let Some(end) = find(&self.raw, b"\r\n") else {
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
                        Err(_) => panic!("bad chunk size line {line:?}"),
                    }
                }
            }
        }
    }

    /// Reads what comes before `deadline`; `false` once the body is complete (or the
    /// connection ended) or the deadline passed.
    pub async fn more(&mut self, deadline: Instant) -> bool {
        if self.done {
            return false;
        }
        let mut chunk = [0u8; 16384];
        match timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.raw.extend_from_slice(&chunk[..n]);
                self.decode();
                true
            }
            Ok(_) => {
                self.broken = !matches!(self.framing, Framing::Eof);
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

    /// The body up to the next `sep`, taken off its front with `sep`; `None` when the body
    /// ended first, or `deadline` passed (then [`Resp::done`] is still `false`).
    pub async fn take_until(&mut self, sep: &[u8], deadline: Instant) -> Option<String> {
        loop {
            if let Some(at) = find(&self.body, sep) {
                let part: Vec<u8> = self.body.drain(..at + sep.len()).collect();
                return Some(String::from_utf8_lossy(&part[..at]).into_owned());
            }
            if !self.more(deadline).await {
                return None;
            }
        }
    }

    /// Reads the whole body within `limit`; `Err` with what came when it did not end, or
    /// ended early.
    pub async fn whole(mut self, limit: Duration) -> Result<Resp, String> {
        let deadline = Instant::now() + limit;
        while self.more(deadline).await {}
        match (self.done, self.broken) {
            (true, false) => Ok(self),
            (true, true) => Err(format!("the body was cut: {:?}", self.text())),
            (false, _) => Err(format!("no body end within {limit:?}: {:?}", self.text())),
        }
    }
}
