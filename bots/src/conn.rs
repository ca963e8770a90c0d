//! One bot connection in any of the protocols: open, join, send, read.
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
    fn on_message(&mut self, stream: Stream, id: Option<u64>, body: &[u8]);
    /// One of our sends was acknowledged (or refused: then `on_error` follows).
    fn on_ack(&mut self);
    /// The join is in effect.
    fn on_joined(&mut self);
    /// Something went wrong that is not fatal by itself.
    fn on_error(&mut self, kind: ErrorKind, why: &str);
}

/// Receive buffer of a slow consumer's socket: small, so that the server's queue fills soon.
const SLOW_RCVBUF: u32 = 4096;

/// Socket.IO's Engine.IO v4 endpoint, WebSocket transport from the start.
const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// Where the server listens, and what other servers need said differently.
#[derive(Clone, Debug)]
pub struct Targets {
    /// HTTP / WebSocket address.
    pub http: SocketAddr,
    /// STOMP over TCP address.
    pub stomp_tcp: SocketAddr,
    /// The WebSocket path (and query) instead of the protocol's default (`/ws`, `/stomp`, `/`,
    /// Socket.IO's `/socket.io/?EIO=4&transport=websocket`).
    pub ws_path: Option<String>,
    /// STOMP `login` for every bot instead of its name (e.g. RabbitMQ's `guest`).
    pub stomp_login: Option<String>,
    /// STOMP `passcode` for every bot instead of its token.
    pub stomp_passcode: Option<String>,
    /// STOMP `host` header (RabbitMQ: the virtual host, `/`) instead of the server's address.
    pub stomp_host: Option<String>,
}

impl Targets {
    /// Just the addresses; every protocol detail at its default.
    pub fn new(http: SocketAddr, stomp_tcp: SocketAddr) -> Self {
        Self {
            http,
            stomp_tcp,
            ws_path: None,
            stomp_login: None,
            stomp_passcode: None,
            stomp_host: None,
        }
    }

    fn path<'a>(&'a self, default: &'a str) -> &'a str {
        self.ws_path.as_deref().unwrap_or(default)
    }
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
    /// A join that needs no answer (a broadcast server): reported by the next `read`.
    joined_pending: bool,
}

enum Link {
    Raw(Box<WebSocketStream<TcpStream>>),
    StompWs(Box<WebSocketStream<TcpStream>>, StompIn),
    StompTcp(TcpStream, StompIn),
    Broadcast(Box<WebSocketStream<TcpStream>>),
    SocketIo(Box<WebSocketStream<TcpStream>>),
}

/// The receiving half of a STOMP connection: bytes waiting to be decoded.
struct StompIn {
    decoder: Decoder,
    buf: BytesMut,
}

/// Opens a TCP connection, bound to `source` first when given (so many source addresses
/// multiply the available ephemeral ports).
///
/// `rcvbuf` shrinks the socket's receive buffer (a slow consumer: the server's own queue, not
/// the kernels' buffers, should fill up).
pub async fn tcp_connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    rcvbuf: Option<u32>,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
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
        targets: &Targets,
        source: Option<IpAddr>,
        name: &str,
        credential: &Credential,
        slow: bool,
    ) -> Result<Self, OpenError> {
        let rcvbuf = slow.then_some(SLOW_RCVBUF);
        let link = match protocol {
            Protocol::Raw => {
                let base = targets.path("/ws");
                let path = match credential {
                    Credential::Guest => format!("{base}?name={name}"),
                    Credential::Token(_) => base.to_owned(),
                };
                let ws = ws_open(targets.http, (source, rcvbuf), &path, credential, None).await?;
                Link::Raw(Box::new(ws))
            }
            Protocol::StompWs => {
                let ws = ws_open(
                    targets.http,
                    (source, rcvbuf),
                    targets.path("/stomp"),
                    credential,
                    Some("v12.stomp"),
                )
                .await?;
                Link::StompWs(Box::new(ws), StompIn::new())
            }
            Protocol::WsBroadcast => {
                let path = targets.path("/");
                let ws = ws_open(
                    targets.http,
                    (source, rcvbuf),
                    path,
                    &Credential::Guest,
                    None,
                )
                .await?;
                Link::Broadcast(Box::new(ws))
            }
            Protocol::SocketIo => {
                let path = targets.path(SOCKETIO_PATH);
                let mut ws = ws_open(
                    targets.http,
                    (source, rcvbuf),
                    path,
                    &Credential::Guest,
                    None,
                )
                .await?;
                socketio_handshake(&mut ws).await?;
                Link::SocketIo(Box::new(ws))
            }
            Protocol::StompTcp => {
                let tcp = tcp_connect(targets.stomp_tcp, source, rcvbuf)
                    .await
                    .map_err(OpenError::connect)?;
                Link::StompTcp(tcp, StompIn::new())
            }
        };
        let mut conn = Conn {
            link,
            out: BytesMut::with_capacity(256),
            joined_pending: false,
        };
        if matches!(conn.link, Link::StompWs(..) | Link::StompTcp(..)) {
            conn.stomp_connect(targets, name, credential).await?;
        }
        Ok(conn)
    }

    async fn stomp_connect(
        &mut self,
        targets: &Targets,
        name: &str,
        credential: &Credential,
    ) -> Result<(), OpenError> {
        let host = match &targets.stomp_host {
            Some(h) => h.clone(),
            None => targets.http.ip().to_string(),
        };
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", host)
            // No heart-beats: an idle bot should cost the server nothing but its socket.
            .header("heart-beat", "0,0")
            .header("login", targets.stomp_login.as_deref().unwrap_or(name));
        if let Some(passcode) = &targets.stomp_passcode {
            connect = connect.header("passcode", passcode.as_str());
        } else if let Credential::Token(token) = credential {
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
                Link::Raw(_) | Link::Broadcast(_) | Link::SocketIo(_) => {
                    return Err(Closed::new("not STOMP"))
                }
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
    /// `since`: resume after this room message id (the server replays what came after it).
    pub async fn join(&mut self, room: &str, dms: bool, since: Option<u64>) -> Result<(), Closed> {
        match &mut self.link {
            // One server, one room: connected is joined.
            Link::Broadcast(_) => {
                self.joined_pending = true;
                Ok(())
            }
            Link::SocketIo(ws) => {
                let text = format!(r#"42["join","{room}"]"#);
                ws.send(Message::text(text)).await.map_err(ws_closed)
            }
            Link::Raw(ws) => {
                let text = match since {
                    Some(id) => format!(r#"{{"type":"join","room":"{room}","since":"{id}"}}"#),
                    None => format!(r#"{{"type":"join","room":"{room}"}}"#),
                };
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
                let mut sub = Frame::new(Command::Subscribe)
                    .header("id", "room")
                    .header("destination", format!("/topic/{room}"))
                    .header("receipt", JOIN_RECEIPT);
                if let Some(id) = since {
                    sub = sub.header("since", id.to_string());
                }
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
        match (&mut self.link, target) {
            (Link::Broadcast(ws), Target::Room(_)) => {
                return ws.send(Message::text(body)).await.map_err(ws_closed);
            }
            (Link::SocketIo(ws), Target::Room(_)) => {
                // Stamped bodies need no JSON escaping.
                let text = format!(r#"42["msg","{body}"]"#);
                return ws.send(Message::text(text)).await.map_err(ws_closed);
            }
            (Link::Broadcast(_) | Link::SocketIo(_), Target::User(_)) => {
                return Err(Closed::new("this protocol has no direct messages"));
            }
            _ => {}
        }
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
        if self.joined_pending {
            self.joined_pending = false;
            h.on_joined();
            return Ok(());
        }
        match &mut self.link {
            Link::Broadcast(ws) => {
                if let Some(payload) = next_ws_payload(ws).await? {
                    h.on_message(Stream::Room, None, &payload);
                }
                Ok(())
            }
            Link::SocketIo(ws) => {
                let Some(payload) = next_ws_payload(ws).await? else {
                    return Ok(());
                };
                match handle_socketio(&payload, h) {
                    SocketIoNext::Continue => Ok(()),
                    // tungstenite flushes a queued pong on the next read even if this future is
                    // dropped after queueing it.
                    SocketIoNext::Pong => ws.send(Message::text("3")).await.map_err(ws_closed),
                    SocketIoNext::Closed(why) => Err(Closed::new(why)),
                }
            }
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
                Link::Raw(ws) | Link::Broadcast(ws) | Link::SocketIo(ws) => {
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
                        Link::Raw(_) | Link::Broadcast(_) | Link::SocketIo(_) => {}
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
        Link::Raw(_) | Link::Broadcast(_) | Link::SocketIo(_) => Err(Closed::new("not STOMP")),
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
            let id = frame.get("message-id").and_then(|i| i.parse().ok());
            h.on_message(stream, id, &frame.body);
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
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
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
            let id = msg.id.as_deref().and_then(|i| i.parse().ok());
            h.on_message(stream, id, msg.body.as_deref().unwrap_or("").as_bytes());
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

/// What a Socket.IO connection does after a packet.
#[derive(Debug, PartialEq, Eq)]
enum SocketIoNext {
    Continue,
    /// The server pinged (Engine.IO `2`): answer `3`.
    Pong,
    /// The server disconnected us.
    Closed(String),
}

/// Handles one Engine.IO packet (one WebSocket message) of an open Socket.IO connection.
fn handle_socketio(packet: &[u8], h: &mut impl Handler) -> SocketIoNext {
    match packet {
        b"2" => return SocketIoNext::Pong,
        b"1" => return SocketIoNext::Closed("engine.io close".into()),
        [b'4', b'1', ..] => return SocketIoNext::Closed("socket.io disconnect".into()),
        [b'4', b'2', event @ ..] => {
            // The fast path for the event the bots send: `["msg","<stamped body>"]`.
            if let Some(body) = event
                .strip_prefix(br#"["msg",""#)
                .and_then(|rest| rest.strip_suffix(br#""]"#))
                .filter(|body| !body.contains(&b'\\'))
            {
                h.on_message(Stream::Room, None, body);
                return SocketIoNext::Continue;
            }
            match serde_json::from_slice::<Vec<serde_json::Value>>(event) {
                Ok(args) => match args.first().and_then(|e| e.as_str()) {
                    Some("msg") => {
                        let body = args.get(1).and_then(|b| b.as_str()).unwrap_or("");
                        h.on_message(Stream::Room, None, body.as_bytes());
                    }
                    Some("joined") => h.on_joined(),
                    _ => {}
                },
                Err(e) => h.on_error(ErrorKind::Protocol, &format!("bad socket.io event: {e}")),
            }
        }
        [b'4', b'4', ..] => {
            h.on_error(ErrorKind::Protocol, "socket.io connect_error");
            return SocketIoNext::Closed("socket.io connect_error".into());
        }
        _ => {}
    }
    SocketIoNext::Continue
}

/// Engine.IO open (`0{...}`), then the Socket.IO connect to the main namespace (`40` answered
/// by `40{"sid":...}`).
async fn socketio_handshake(ws: &mut WebSocketStream<TcpStream>) -> Result<(), OpenError> {
    let lost = |e: Closed| OpenError::connect(format!("socket.io handshake: {}", e.why));
    let mut opened = false;
    loop {
        let Some(packet) = next_ws_payload(ws).await.map_err(lost)? else {
            continue;
        };
        match &packet[..] {
            [b'0', ..] if !opened => {
                opened = true;
                ws.send(Message::text("40"))
                    .await
                    .map_err(|e| lost(ws_closed(e)))?;
            }
            b"2" => ws
                .send(Message::text("3"))
                .await
                .map_err(|e| lost(ws_closed(e)))?,
            [b'4', b'0', ..] if opened => return Ok(()),
            [b'4', b'4', ..] => {
                return Err(OpenError {
                    kind: ErrorKind::Auth,
                    why: format!(
                        "socket.io connect refused: {}",
                        String::from_utf8_lossy(&packet[2..])
                    ),
                })
            }
            _ => {}
        }
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
    (source, rcvbuf): (Option<IpAddr>, Option<u32>),
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
    let tcp = tcp_connect(http, source, rcvbuf)
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
        fn on_message(&mut self, stream: Stream, _id: Option<u64>, body: &[u8]) {
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
    fn socketio_packets_reach_the_handler() {
        let mut seen = Seen::default();
        let mut next = Vec::new();
        for packet in [
            &br#"42["joined","r"]"#[..],
            br#"42["msg","1:2:3:xx"]"#,
            br#"42["msg","a\"b"]"#,
            b"2",
            br#"42["other",1]"#,
            b"42[nope",
            b"3",
            b"41",
        ] {
            next.push(handle_socketio(packet, &mut seen));
        }
        assert!(seen.joined);
        assert_eq!(
            seen.messages,
            [
                (Stream::Room, b"1:2:3:xx".to_vec()),
                (Stream::Room, b"a\"b".to_vec())
            ]
        );
        assert_eq!(seen.errors.len(), 1);
        assert_eq!(next[3], SocketIoNext::Pong);
        assert!(matches!(next[7], SocketIoNext::Closed(_)));
        assert!(next[..7]
            .iter()
            .enumerate()
            .all(|(i, n)| i == 3 || *n == SocketIoNext::Continue));
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
