//! One bot connection in any of the three protocols: open, join, send, read.
//!
//! Reads hand what arrived to a [`Handler`] in place, so a received body is checked without
//! being copied.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use parley_stomp::{Command, Decoder, Frame, Limits, Version};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::checker::Stream;
use crate::scenario::Protocol;
use crate::stats::ErrorKind;

/// The receipt id of the room SUBSCRIBE, which tells the join took effect.
const JOIN_RECEIPT: &str = "join";

/// Room frames are small; this keeps a read buffer's spare room without holding much per idle
/// connection.
const READ_RESERVE: usize = 8 * 1024;

/// What a bot does with what arrives.
pub trait Handler {
    /// A message on the bot's room or addressed to it; `body` is borrowed from the read buffer.
    fn on_message(&mut self, stream: Stream, body: &[u8]);
    /// One of our sends was acknowledged (or refused: then `on_error` follows).
    fn on_ack(&mut self);
    /// The join is in effect.
    fn on_joined(&mut self);
    /// Something went wrong that is not fatal by itself.
    fn on_error(&mut self, kind: ErrorKind, why: &str);
}

/// Where the server listens.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// HTTP / WebSocket address.
    pub http: SocketAddr,
    /// STOMP over TCP address.
    pub stomp_tcp: SocketAddr,
}

/// How a connection proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A guest name.
    Guest,
    /// A bearer access token.
    Token(String),
}

/// Why opening failed.
#[derive(Debug)]
pub struct OpenError {
    /// How to count it.
    pub kind: ErrorKind,
    /// What happened, for the first few samples shown to the user.
    pub why: String,
}

impl OpenError {
    fn connect(why: impl ToString) -> Self {
        Self {
            kind: ErrorKind::Connect,
            why: why.to_string(),
        }
    }
}

/// The connection ended.
#[derive(Debug)]
pub struct Closed {
    /// Why.
    pub why: String,
    /// The server said why first (a STOMP ERROR), already counted as an error.
    pub announced: bool,
}

impl Closed {
    fn new(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            announced: false,
        }
    }
}

/// An open, authenticated connection.
pub struct Conn {
    link: Link,
    /// Reused for every outgoing STOMP frame (TCP) or raw JSON text.
    out: BytesMut,
}

enum Link {
    Raw(Box<WebSocketStream<TcpStream>>),
    StompWs(Box<WebSocketStream<TcpStream>>, StompIn),
    StompTcp(TcpStream, StompIn),
}

/// The receiving half of a STOMP connection: bytes waiting to be decoded.
struct StompIn {
    decoder: Decoder,
    buf: BytesMut,
}

/// Opens a TCP connection, bound to `source` first when given (so many source addresses
/// multiply the available ephemeral ports).
pub async fn tcp_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects and authenticates (for STOMP: CONNECT answered by CONNECTED).
    pub async fn open(
        protocol: Protocol,
        targets: Targets,
        source: Option<IpAddr>,
        name: &str,
        credential: &Credential,
    ) -> Result<Self, OpenError> {
        let link = match protocol {
            Protocol::Raw => {
                let path = match credential {
                    Credential::Guest => format!("/ws?name={name}"),
                    Credential::Token(_) => "/ws".to_owned(),
                };
                let ws = ws_open(targets.http, source, &path, credential, None).await?;
                Link::Raw(Box::new(ws))
            }
            Protocol::StompWs => {
                let ws = ws_open(
                    targets.http,
                    source,
                    "/stomp",
                    credential,
                    Some("v12.stomp"),
                )
                .await?;
                Link::StompWs(Box::new(ws), StompIn::new())
            }
            Protocol::StompTcp => {
                let tcp = tcp_connect(targets.stomp_tcp, source)
                    .await
                    .map_err(OpenError::connect)?;
                Link::StompTcp(tcp, StompIn::new())
            }
        };
        let mut conn = Conn {
            link,
            out: BytesMut::with_capacity(256),
        };
        if !matches!(conn.link, Link::Raw(_)) {
            conn.stomp_connect(targets.http, name, credential).await?;
        }
        Ok(conn)
    }

    async fn stomp_connect(
        &mut self,
        host: SocketAddr,
        name: &str,
        credential: &Credential,
    ) -> Result<(), OpenError> {
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", host.ip().to_string())
            // No heart-beats: an idle bot should cost the server nothing but its socket.
            .header("heart-beat", "0,0")
            .header("login", name);
        if let Credential::Token(token) = credential {
            connect = connect.header("passcode", token.as_str());
        }
        let bytes = parley_stomp::codec::encode(&connect, Version::V1_2);
        self.write_stomp(&bytes)
            .await
            .map_err(|e| OpenError::connect(e.why))?;
        loop {
            let frame = self.read_stomp_frame().await.map_err(|e| OpenError {
                kind: ErrorKind::Connect,
                why: format!("before CONNECTED: {}", e.why),
            })?;
            match frame.command {
                Command::Connected => return Ok(()),
                Command::Error => {
                    let message = frame.get("message").unwrap_or("ERROR").to_owned();
                    let kind = if message.contains("auth")
                        || message.contains("registered")
                        || message.contains("token")
                    {
                        ErrorKind::Auth
                    } else {
                        ErrorKind::Protocol
                    };
                    return Err(OpenError { kind, why: message });
                }
                _ => {}
            }
        }
    }

    /// One whole STOMP frame, during the handshake only (the hot path decodes in place).
    async fn read_stomp_frame(&mut self) -> Result<Frame, Closed> {
        loop {
            let (stomp, fill) = match &mut self.link {
                Link::Raw(_) => return Err(Closed::new("not STOMP")),
                Link::StompWs(ws, stomp) => (stomp, Fill::Ws(ws)),
                Link::StompTcp(tcp, stomp) => (stomp, Fill::Tcp(tcp)),
            };
            match stomp.decoder.decode(&mut stomp.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(Closed::new(format!("bad frame: {e}"))),
            }
            match fill {
                Fill::Ws(ws) => match next_ws_payload(ws).await? {
                    Some(payload) => stomp.buf.extend_from_slice(&payload),
                    None => continue,
                },
                Fill::Tcp(tcp) => {
                    stomp.buf.reserve(READ_RESERVE);
                    if tcp.read_buf(&mut stomp.buf).await.map_err(io_closed)? == 0 {
                        return Err(Closed::new("server closed the connection"));
                    }
                }
            }
        }
    }

    /// Joins `room` (and subscribes to direct messages when `dms`); [`Handler::on_joined`]
    /// follows once the server confirms.
    pub async fn join(&mut self, room: &str, dms: bool) -> Result<(), Closed> {
        match &mut self.link {
            Link::Raw(ws) => {
                let text = format!(r#"{{"type":"join","room":"{room}"}}"#);
                ws.send(Message::text(text)).await.map_err(ws_closed)
            }
            Link::StompWs(..) | Link::StompTcp(..) => {
                let mut frames = BytesMut::new();
                if dms {
                    let dm = Frame::new(Command::Subscribe)
                        .header("id", "dm")
                        .header("destination", "/user/queue/messages");
                    frames.extend_from_slice(&parley_stomp::codec::encode(&dm, Version::V1_2));
                }
                let sub = Frame::new(Command::Subscribe)
                    .header("id", "room")
                    .header("destination", format!("/topic/{room}"))
                    .header("receipt", JOIN_RECEIPT);
                frames.extend_from_slice(&parley_stomp::codec::encode(&sub, Version::V1_2));
                self.write_stomp(&frames).await
            }
        }
    }

    /// Sends a stamped `body` to `room`; its acknowledgement comes as [`Handler::on_ack`].
    pub async fn send_room(&mut self, room: &str, body: &str, seq: u64) -> Result<(), Closed> {
        self.send(Target::Room(room), body, seq).await
    }

    /// Sends a direct message to user `to`.
    pub async fn send_dm(&mut self, to: &str, body: &str, seq: u64) -> Result<(), Closed> {
        self.send(Target::User(to), body, seq).await
    }

    async fn send(&mut self, target: Target<'_>, body: &str, seq: u64) -> Result<(), Closed> {
        self.out.clear();
        if let Link::Raw(ws) = &mut self.link {
            // Rooms, user names and stamped bodies need no JSON escaping (validated at load).
            let mut text = String::with_capacity(body.len() + 64);
            let (field, value, tag) = match target {
                Target::Room(room) => ("room", room, 'r'),
                Target::User(user) => ("to", user, 'd'),
            };
            // Writing into a String cannot fail.
            write!(
                text,
                r#"{{"type":"send","{field}":"{value}","body":"{body}","ref":"{tag}{seq}"}}"#
            )
            .expect("write to String");
            return ws.send(Message::text(text)).await.map_err(ws_closed);
        }
        encode_send(&mut self.out, target, body.as_bytes(), seq);
        write_stomp(&mut self.link, &self.out).await
    }

    async fn write_stomp(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        write_stomp(&mut self.link, bytes).await
    }

    /// Waits for the next read and hands everything in it to `h`.
    ///
    /// Cancel-safe: the only await is the read itself; what it returned is handled before this
    /// returns.
    pub async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        match &mut self.link {
            Link::Raw(ws) => {
                let Some(payload) = next_ws_payload(ws).await? else {
                    return Ok(());
                };
                handle_raw(&payload, h);
                Ok(())
            }
            Link::StompWs(ws, stomp) => {
                let Some(payload) = next_ws_payload(ws).await? else {
                    return Ok(());
                };
                stomp.buf.extend_from_slice(&payload);
                stomp.handle_all(h)
            }
            Link::StompTcp(tcp, stomp) => {
                if stomp.buf.capacity() - stomp.buf.len() < READ_RESERVE / 2 {
                    stomp.buf.reserve(READ_RESERVE);
                }
                if tcp.read_buf(&mut stomp.buf).await.map_err(io_closed)? == 0 {
                    return Err(Closed::new("server closed the connection"));
                }
                // Many frames per read: decode everything the one syscall brought.
                stomp.handle_all(h)
            }
        }
    }

    /// Says goodbye politely (raw close frame, STOMP DISCONNECT), bounded in time.
    pub async fn close(mut self) {
        let polite = async {
            match &mut self.link {
                Link::Raw(ws) => {
                    let _ = (**ws).close(None).await;
                }
                Link::StompWs(..) | Link::StompTcp(..) => {
                    let bye = parley_stomp::codec::encode(
                        &Frame::new(Command::Disconnect),
                        Version::V1_2,
                    );
                    let _ = self.write_stomp(&bye).await;
                    match &mut self.link {
                        Link::StompWs(ws, _) => {
                            let _ = (**ws).close(None).await;
                        }
                        Link::StompTcp(tcp, _) => {
                            let _ = tcp.shutdown().await;
                        }
                        Link::Raw(_) => {}
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), polite).await;
    }
}

/// Writes encoded STOMP bytes on either transport.
async fn write_stomp(link: &mut Link, bytes: &[u8]) -> Result<(), Closed> {
    match link {
        Link::Raw(_) => Err(Closed::new("not STOMP")),
        Link::StompWs(ws, _) => {
            // Every frame we send is ASCII, so it goes as a text message like browsers send.
            let text = Utf8Bytes::try_from(bytes::Bytes::copy_from_slice(bytes))
                .map_err(|_| Closed::new("frame is not UTF-8"))?;
            ws.send(Message::Text(text)).await.map_err(ws_closed)
        }
        Link::StompTcp(tcp, _) => tcp.write_all(bytes).await.map_err(io_closed),
    }
}

enum Fill<'a> {
    Ws(&'a mut WebSocketStream<TcpStream>),
    Tcp(&'a mut TcpStream),
}

#[derive(Clone, Copy)]
enum Target<'a> {
    Room(&'a str),
    User(&'a str),
}

/// Encodes a SEND straight into `out`: the hot path, so no `Frame` with owned headers. Rooms and
/// user names need no header escaping (validated at load).
fn encode_send(out: &mut BytesMut, target: Target<'_>, body: &[u8], seq: u64) {
    out.put_slice(b"SEND\ndestination:");
    match target {
        Target::Room(room) => {
            out.put_slice(b"/topic/");
            out.put_slice(room.as_bytes());
        }
        Target::User(user) => {
            out.put_slice(b"/user/");
            out.put_slice(user.as_bytes());
            out.put_slice(b"/queue/messages");
        }
    }
    // Writing into a BytesMut cannot fail.
    write!(
        BytesWriter(out),
        "\ncontent-type:text/plain\ncontent-length:{}\nreceipt:{seq}\n\n",
        body.len()
    )
    .expect("write to BytesMut");
    out.put_slice(body);
    out.put_u8(0);
}

/// `fmt::Write` into a `BytesMut`.
struct BytesWriter<'a>(&'a mut BytesMut);

impl std::fmt::Write for BytesWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

impl StompIn {
    fn new() -> Self {
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(Version::V1_2);
        Self {
            decoder,
            buf: BytesMut::new(),
        }
    }

    fn handle_all(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => handle_stomp(&frame, h)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    h.on_error(ErrorKind::Protocol, &e.to_string());
                    return Err(Closed::new(format!("bad frame: {e}")));
                }
            }
        }
    }
}

fn handle_stomp(frame: &Frame, h: &mut impl Handler) -> Result<(), Closed> {
    match frame.command {
        Command::Message => {
            let dm = frame
                .get("destination")
                .is_some_and(|d| d.starts_with("/user/"));
            let stream = if dm { Stream::Direct } else { Stream::Room };
            h.on_message(stream, &frame.body);
        }
        Command::Receipt => match frame.get("receipt-id") {
            Some(JOIN_RECEIPT) => h.on_joined(),
            _ => h.on_ack(),
        },
        Command::Error => {
            let message = frame.get("message").unwrap_or("ERROR");
            h.on_error(ErrorKind::Protocol, message);
            // The server closes after an ERROR: stop here so it is not also counted as a close.
            return Err(Closed {
                why: format!("ERROR: {message}"),
                announced: true,
            });
        }
        _ => {}
    }
    Ok(())
}

/// A raw protocol message, borrowing from the text where it can.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
}

fn handle_raw(text: &[u8], h: &mut impl Handler) {
    let msg: Incoming<'_> = match serde_json::from_slice(text) {
        Ok(m) => m,
        Err(e) => return h.on_error(ErrorKind::Protocol, &format!("bad JSON from server: {e}")),
    };
    match &*msg.kind {
        "message" => {
            let stream = if msg.to.is_some() {
                Stream::Direct
            } else {
                Stream::Room
            };
            h.on_message(stream, msg.body.as_deref().unwrap_or("").as_bytes());
        }
        "ack" => h.on_ack(),
        "joined" => h.on_joined(),
        "error" => {
            // A refused send still frees its in-flight slot.
            if msg.reference.is_some() {
                h.on_ack();
            }
            h.on_error(
                ErrorKind::Protocol,
                &format!("error {}", msg.code.as_deref().unwrap_or("?")),
            );
        }
        _ => {}
    }
}

/// The next data message's payload; `Ok(None)` for control frames (tungstenite answers pings).
async fn next_ws_payload(
    ws: &mut WebSocketStream<TcpStream>,
) -> Result<Option<bytes::Bytes>, Closed> {
    match ws.next().await {
        None => Err(Closed::new("server closed the connection")),
        Some(Err(e)) => Err(ws_closed(e)),
        Some(Ok(Message::Text(t))) => Ok(Some(bytes::Bytes::from(t))),
        Some(Ok(Message::Binary(b))) => Ok(Some(b)),
        Some(Ok(Message::Close(frame))) => Err(Closed::new(match frame {
            Some(f) => format!("closed {}: {}", u16::from(f.code), f.reason),
            None => "closed".into(),
        })),
        Some(Ok(_)) => Ok(None),
    }
}

async fn ws_open(
    http: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    credential: &Credential,
    subprotocol: Option<&'static str>,
) -> Result<WebSocketStream<TcpStream>, OpenError> {
    let mut request = format!("ws://{http}{path}")
        .into_client_request()
        .map_err(OpenError::connect)?;
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    if let Credential::Token(token) = credential {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(OpenError::connect)?;
        request.headers_mut().insert("Authorization", value);
    }
    let tcp = tcp_connect(http, source)
        .await
        .map_err(OpenError::connect)?;
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let kind = if status == 401 || status == 403 {
                ErrorKind::Auth
            } else {
                ErrorKind::Connect
            };
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(OpenError {
                kind,
                why: format!("HTTP {status} {}", body.trim()),
            })
        }
        Err(e) => Err(OpenError::connect(format!("handshake: {e}"))),
    }
}

fn ws_closed(e: tungstenite::Error) -> Closed {
    Closed::new(e.to_string())
}

fn io_closed(e: io::Error) -> Closed {
    Closed::new(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        messages: Vec<(Stream, Vec<u8>)>,
        acks: usize,
        joined: bool,
        errors: Vec<(ErrorKind, String)>,
    }

    impl Handler for Seen {
        fn on_message(&mut self, stream: Stream, body: &[u8]) {
            self.messages.push((stream, body.to_vec()));
        }
        fn on_ack(&mut self) {
            self.acks += 1;
        }
        fn on_joined(&mut self) {
            self.joined = true;
        }
        fn on_error(&mut self, kind: ErrorKind, why: &str) {
            self.errors.push((kind, why.to_owned()));
        }
    }

    #[test]
    fn hand_encoded_send_matches_the_codec() {
        let mut out = BytesMut::new();
        encode_send(&mut out, Target::Room("r-1"), b"1:2:3:xx", 7);
        let expected = Frame::new(Command::Send)
            .header("destination", "/topic/r-1")
            .header("content-type", "text/plain")
            .header("content-length", "8")
            .header("receipt", "7")
            .body(&b"1:2:3:xx"[..]);
        assert_eq!(
            &out[..],
            &parley_stomp::codec::encode(&expected, Version::V1_2)[..]
        );
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(Version::V1_2);
        assert_eq!(decoder.decode(&mut out).unwrap(), Some(expected));

        let mut out = BytesMut::new();
        encode_send(&mut out, Target::User("bob"), b"x", 1);
        assert!(out.starts_with(b"SEND\ndestination:/user/bob/queue/messages\n"));
    }

    #[test]
    fn stomp_frames_reach_the_handler() {
        let mut stomp = StompIn::new();
        stomp.buf.extend_from_slice(
            b"RECEIPT\nreceipt-id:join\n\n\0\
              MESSAGE\ndestination:/topic/r\nmessage-id:1\nsubscription:room\ncontent-length:3\n\nabc\0\
              MESSAGE\ndestination:/user/queue/messages\nsubscription:dm\n\ndm\0\
              RECEIPT\nreceipt-id:5\n\n\0MESS",
        );
        let mut seen = Seen::default();
        stomp.handle_all(&mut seen).unwrap();
        assert!(seen.joined);
        assert_eq!(seen.acks, 1);
        assert_eq!(
            seen.messages,
            [
                (Stream::Room, b"abc".to_vec()),
                (Stream::Direct, b"dm".to_vec())
            ]
        );
        // The partial frame waits for more bytes.
        assert_eq!(&stomp.buf[..], b"MESS");

        stomp.buf.clear();
        stomp
            .buf
            .extend_from_slice(b"ERROR\nmessage:slow consumer\n\n\0");
        assert!(stomp.handle_all(&mut seen).is_err());
        assert_eq!(seen.errors[0].1, "slow consumer");
    }

    #[test]
    fn raw_messages_reach_the_handler() {
        let mut seen = Seen::default();
        for text in [
            r#"{"type":"joined","room":"r","members":["a","b"]}"#,
            r#"{"type":"message","room":"r","id":"1","from":"a","ts":1,"body":"1:1:1:x"}"#,
            r#"{"type":"message","to":"me","id":"2","from":"a","ts":1,"guest":true,"body":"d"}"#,
            r#"{"type":"ack","id":"1","ref":"r1"}"#,
            r#"{"type":"presence","room":"r","user":"b","event":"join"}"#,
            r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"r2"}"#,
            r#"not json"#,
        ] {
            handle_raw(text.as_bytes(), &mut seen);
        }
        assert!(seen.joined);
        assert_eq!(seen.acks, 2);
        assert_eq!(
            seen.messages,
            [
                (Stream::Room, b"1:1:1:x".to_vec()),
                (Stream::Direct, b"d".to_vec())
            ]
        );
        assert_eq!(seen.errors.len(), 2);
    }
}
