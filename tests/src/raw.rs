//! Hand-written HTTP/1.1 requests and RFC 6455 frames, for tests that must control
//! (or deliberately break) every byte on the wire.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Default bound for a single network wait in these helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The sample `Sec-WebSocket-Key` from RFC 6455 section 1.3.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` that RFC 6455 section 1.3 derives from [`SAMPLE_KEY`].
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Largest response head [`read_response_head`] accepts.
const MAX_HEAD: usize = 64 * 1024;

/// WebSocket opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Status line and headers of an HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code, e.g. 101.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_values(&self.headers, name)
    }

    /// Whether header `name` contains `token` in its comma-separated list (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Formats an HTTP/1.1 request head (`Host: parley.test` is added unless given).
pub fn http_request(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: parley.test\r\n");
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// The four headers of a WebSocket upgrade with the given key and version.
pub fn upgrade_headers<'a>(key: &'a str, version: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", version),
    ]
}

/// A valid `GET {path}` upgrade request with [`SAMPLE_KEY`] plus `extra` headers.
pub fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = upgrade_headers(SAMPLE_KEY, "13");
    headers.extend_from_slice(extra);
    http_request("GET", path, &headers)
}

/// Opens a TCP connection to `addr` (bounded by [`IO_TIMEOUT`]).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// Reads a response head; returns it plus any bytes already read past its end.
pub async fn read_response_head(stream: &mut TcpStream) -> (ResponseHead, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        assert!(
            buf.len() <= MAX_HEAD,
            "response head exceeds {MAX_HEAD} bytes"
        );
        let n = timeout(IO_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("timed out reading the response head")
            .expect("read error while reading the response head");
        assert!(
            n != 0,
            "connection closed before a complete response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end]).expect("response head is not UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    assert_eq!(version, "HTTP/1.1", "bad status line {status_line:?}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    let rest = buf[end + 4..].to_vec();
    (ResponseHead { status, headers }, rest)
}

/// Connects, writes `request` verbatim, and reads the response head.
pub async fn roundtrip(addr: SocketAddr, request: &str) -> (TcpStream, ResponseHead, Vec<u8>) {
    let mut stream = connect(addr).await;
    timeout(IO_TIMEOUT, stream.write_all(request.as_bytes()))
        .await
        .expect("timed out writing the request")
        .expect("write the request");
    let (head, rest) = read_response_head(&mut stream).await;
    (stream, head, rest)
}

/// One WebSocket frame (payload already unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1 bit (permessage-deflate's "compressed" flag).
    pub rsv1: bool,
    /// RSV2 bit.
    pub rsv2: bool,
    /// RSV3 bit.
    pub rsv3: bool,
    /// Opcode, see [`opcode`].
    pub opcode: u8,
    /// Application data.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final frame with no RSV bits.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            payload: payload.into(),
        }
    }

    /// A final text frame.
    pub fn text(text: &str) -> Frame {
        Frame::new(opcode::TEXT, text.as_bytes())
    }

    /// A final binary frame.
    pub fn binary(data: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::BINARY, data)
    }

    /// A ping frame.
    pub fn ping(data: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::PING, data)
    }

    /// A close frame with a status code and reason.
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Frame::new(opcode::CLOSE, payload)
    }

    /// Returns the frame with FIN set to `fin`.
    pub fn with_fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    /// Returns the frame with RSV1 set to `rsv1`.
    pub fn with_rsv1(mut self, rsv1: bool) -> Frame {
        self.rsv1 = rsv1;
        self
    }

    /// The status code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, opcode::CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// Serialises the frame, masking the payload with `mask` if given.
    pub fn encode(&self, mask: Option<[u8; 4]>) -> Vec<u8> {
        let len = self.payload.len();
        let mut out = Vec::with_capacity(len + 14);
        out.push(
            (u8::from(self.fin) << 7)
                | (u8::from(self.rsv1) << 6)
                | (u8::from(self.rsv2) << 5)
                | (u8::from(self.rsv3) << 4)
                | (self.opcode & 0x0f),
        );
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if let Ok(len16) = u16::try_from(len) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&len16.to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }

    /// Parses one frame from the front of `buf`: `(frame, was_masked, bytes_used)`,
    /// or `None` if `buf` does not yet hold a whole frame.
    pub fn decode(buf: &[u8]) -> Option<(Frame, bool, usize)> {
        if buf.len() < 2 {
            return None;
        }
        let (b0, b1) = (buf[0], buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut pos) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let key = if masked {
            let key: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
            pos += 4;
            Some(key)
        } else {
            None
        };
        let len = usize::try_from(len).expect("frame length fits usize");
        let data = buf.get(pos..pos.checked_add(len)?)?;
        let payload = match key {
            Some(k) => data.iter().enumerate().map(|(i, b)| b ^ k[i % 4]).collect(),
            None => data.to_vec(),
        };
        let frame = Frame {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode: b0 & 0x0f,
            payload,
        };
        Some((frame, masked, pos + len))
    }
}

/// A fresh, never-zero masking key (varies per frame so unmasking offsets are exercised).
fn next_mask() -> [u8; 4] {
    static COUNTER: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let n = COUNTER.fetch_add(0x6d2b_79f5, Ordering::Relaxed);
    (n | 0x0101_0101).to_be_bytes()
}

/// A WebSocket client speaking raw frames over a TCP socket.
pub struct RawWebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWebSocket {
    /// Performs an upgrade to `path` (with `extra` headers), asserting a correct 101.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
    ) -> (RawWebSocket, ResponseHead) {
        let (stream, head, rest) = roundtrip(addr, &upgrade_request(path, extra)).await;
        assert_eq!(head.status, 101, "upgrade to {path} refused: {head:?}");
        assert!(
            head.header_has_token("upgrade", "websocket"),
            "101 without `Upgrade: websocket`: {head:?}"
        );
        assert!(
            head.header_has_token("connection", "upgrade"),
            "101 without `Connection: Upgrade`: {head:?}"
        );
        assert_eq!(
            head.header("sec-websocket-accept"),
            Some(SAMPLE_ACCEPT),
            "wrong Sec-WebSocket-Accept: {head:?}"
        );
        (RawWebSocket::from_parts(stream, rest), head)
    }

    /// Wraps an already-upgraded stream plus bytes already read past the 101 head.
    pub fn from_parts(stream: TcpStream, already_read: Vec<u8>) -> RawWebSocket {
        RawWebSocket {
            stream,
            buf: already_read,
        }
    }

    /// Sends `frame` masked, as a client must.
    pub async fn send(&mut self, frame: &Frame) {
        self.send_bytes(&frame.encode(Some(next_mask()))).await;
    }

    /// Sends `frame` unmasked (a protocol violation from a client).
    pub async fn send_unmasked(&mut self, frame: &Frame) {
        self.send_bytes(&frame.encode(None)).await;
    }

    /// Writes arbitrary bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        timeout(IO_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("timed out writing to the server")
            .expect("write to the server");
    }

    /// Reads the next frame (`None` on a clean EOF), asserting it is a valid server frame.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_within(IO_TIMEOUT).await
    }

    /// Like [`Self::read_frame`], with an explicit bound.
    pub async fn read_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((frame, masked, used)) = Frame::decode(&self.buf) {
                self.buf.drain(..used);
                assert!(!masked, "server sent a masked frame: {frame:?}");
                assert!(
                    !frame.rsv2 && !frame.rsv3,
                    "server set RSV2/RSV3: {frame:?}"
                );
                return Some(frame);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no complete frame from the server within {limit:?}"))
                .expect("read error while waiting for a frame");
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "EOF in the middle of a frame; pending bytes {:?}",
                    self.buf
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next frame, panicking on EOF.
    pub async fn expect_frame(&mut self) -> Frame {
        self.read_frame()
            .await
            .expect("server closed the connection, expected a frame")
    }

    /// Asserts the server closes the TCP connection within `limit` without sending more data.
    /// A reset counts as closed.
    pub async fn expect_eof(&mut self, limit: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            self.buf
        );
        let mut chunk = [0u8; 1024];
        match timeout(limit, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("server did not close the TCP connection within {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected EOF, got {n} more bytes: {:?}", &chunk[..n]),
        }
    }

    /// The underlying socket.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}
