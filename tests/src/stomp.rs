//! A minimal STOMP 1.2 client over TCP, written here so tests do not trust the server's codec.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A frame's bytes: `command`, `headers` written verbatim, `content-length`, `body`, NUL.
pub fn encode_frame(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{command}\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}:{v}\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length:{}\n\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// A received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command line.
    pub command: String,
    /// Headers (first occurrence kept), values unescaped.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// A header's value, or "" if absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A byte stream a STOMP client runs on: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

/// A STOMP client connection.
pub struct StompClient {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
}

impl StompClient {
    /// Like [`StompClient::connect`], `None` instead of a panic when the server is not there
    /// or does not answer CONNECTED (for clients that reconnect).
    pub async fn try_connect(addr: SocketAddr, login: &str) -> Option<StompClient> {
        Self::open(addr, &[("login", login)]).await.ok()
    }

    /// Like [`StompClient::connect_as`], `None` when the server does not answer CONNECTED.
    pub async fn try_connect_as(
        addr: SocketAddr,
        login: &str,
        passcode: &str,
    ) -> Option<StompClient> {
        Self::open(addr, &[("login", login), ("passcode", passcode)])
            .await
            .ok()
    }

    /// Connects as account `login` with `passcode` (a password or an access token).
    pub async fn connect_as(addr: SocketAddr, login: &str, passcode: &str) -> StompClient {
        Self::open(addr, &[("login", login), ("passcode", passcode)])
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// TCP connect and CONNECT with `headers`; `Err` says what went wrong.
    async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<StompClient, String> {
        let stream = match timeout(WAIT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            other => return Err(format!("connecting to {addr}: {other:?}")),
        };
        Self::open_over(Box::new(stream), headers).await
    }

    /// CONNECT as `login` on a stream already open (a TLS one, say).
    pub async fn connect_over(stream: impl Io + 'static, login: &str) -> StompClient {
        Self::open_over(Box::new(stream), &[("login", login)])
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    async fn open_over(
        stream: Box<dyn Io>,
        headers: &[(&str, &str)],
    ) -> Result<StompClient, String> {
        let mut client = StompClient {
            stream,
            buf: Vec::new(),
        };
        let mut connect = String::from("CONNECT\naccept-version:1.2\nhost:/\n");
        for (name, value) in headers {
            connect.push_str(&format!("{name}:{value}\n"));
        }
        connect.push_str("\n\0");
        if !client.try_send_raw(connect.as_bytes()).await {
            return Err("writing CONNECT failed".into());
        }
        match client.try_recv(WAIT).await {
            Some(f) if f.command == "CONNECTED" => Ok(client),
            other => Err(format!("expected CONNECTED, got {other:?}")),
        }
    }

    /// The next frame within `limit`; `None` on close, error or timeout.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Frame> {
        timeout(limit, self.recv_inner()).await.ok().flatten()
    }

    /// Writes raw bytes; `false` if the connection is gone.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        matches!(
            timeout(WAIT, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Connects over TCP and completes CONNECT/CONNECTED as `login`.
    pub async fn connect(addr: SocketAddr, login: &str) -> StompClient {
        Self::open(addr, &[("login", login)])
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Sends a frame built from `command`, `headers` (written verbatim) and `body`.
    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send_raw(&encode_frame(command, headers, body)).await;
    }

    /// SUBSCRIBE with a receipt, waiting for the receipt so later SENDs are seen.
    pub async fn subscribe(&mut self, id: &str, destination: &str) {
        let receipt = format!("sub-{id}");
        self.send(
            "SUBSCRIBE",
            &[
                ("id", id),
                ("destination", destination),
                ("receipt", &receipt),
            ],
            b"",
        )
        .await;
        let frame = self.recv().await.expect("RECEIPT");
        assert_eq!(
            (frame.command.as_str(), frame.header("receipt-id")),
            ("RECEIPT", receipt.as_str()),
            "{frame:?}"
        );
    }

    /// The next frame, skipping heart-beats; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        timeout(WAIT, self.recv_inner())
            .await
            .expect("no frame within the wait")
    }

    async fn recv_inner(&mut self) -> Option<Frame> {
        loop {
            while self.buf.first().is_some_and(|&b| b == b'\n' || b == b'\r') {
                self.buf.remove(0);
            }
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Parses one frame from the front of `buf`: the frame and the bytes it took, or `None` until
/// it is complete.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let head_end = buf.windows(2).position(|w| w == b"\n\n")? + 2;
    let head = std::str::from_utf8(&buf[..head_end - 2]).ok()?;
    let mut lines = head.lines();
    let command = lines.next()?.to_owned();
    let mut headers = BTreeMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.entry(unescape(k)).or_insert_with(|| unescape(v));
    }
    let (body_end, used) = match headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) if buf.len() > head_end + len => (head_end + len, head_end + len + 1),
        Some(_) => return None,
        None => {
            let nul = buf[head_end..].iter().position(|&b| b == 0)? + head_end;
            (nul, nul + 1)
        }
    };
    Some((
        Frame {
            command,
            headers,
            body: buf[head_end..body_end].to_vec(),
        },
        used,
    ))
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\c", ":")
        .replace("\\r", "\r")
        .replace("\\\\", "\\")
}
