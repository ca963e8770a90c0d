//! STOMP 1.2 as the bots speak it, over WebSocket (`/stomp`, `v12.stomp`), plain TCP or SockJS:
//! the CONNECT handshake, SUBSCRIBE with a join receipt, hand-encoded SENDs (messages and
//! changes, `kind` + `target-id`), and decoding in place what arrives. Both transports share the framing; only [`Io`] differs.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use parley_stomp::{Command, Decoder, Frame, Limits, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::link::{
    Change, ChangeSend, Closed, Credential, Dial, Handler, Link, OpenError, Refused, Sent, Target,
};
use super::sockjs::{Receiving, SockJs};
use super::transport::{io_closed, next_ws_payload, tcp_connect, ws_closed, ws_open, Ws};
use crate::checker::Stream;
use crate::stats::ErrorKind;

/// The receipt id of the room SUBSCRIBE, which tells the join took effect.
const JOIN_RECEIPT: &str = "join";

/// Room frames are small; this keeps a read buffer's spare room without holding much per idle
/// connection.
const READ_RESERVE: usize = 8 * 1024;

/// A STOMP connection on either transport.
pub struct Stomp {
    io: Io,
    inbound: StompIn,
    /// Reused for every outgoing SEND.
    out: BytesMut,
}

/// The transport under the STOMP frames.
enum Io {
    Ws(Box<Ws>),
    Tcp(TcpStream),
    SockJs(Box<SockJs>),
}

/// The receiving half of a STOMP connection: bytes waiting to be decoded.
struct StompIn {
    decoder: Decoder,
    buf: BytesMut,
}

impl Stomp {
    /// Opens `/stomp` (subprotocol `v12.stomp`) and connects.
    pub(super) async fn open_ws(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let path = dial.targets.path("/stomp");
        let ws = ws_open(dial, path, dial.credential, Some("v12.stomp")).await?;
        Self::connect(Io::Ws(Box::new(ws)), dial).await
    }

    /// Opens a SockJS session at `/stomp` and connects.
    pub(super) async fn open_sockjs(
        dial: &Dial<'_>,
        receiving: Receiving,
    ) -> Result<Self, OpenError> {
        let sockjs = SockJs::open(dial, dial.targets.path("/stomp"), receiving).await?;
        Self::connect(Io::SockJs(Box::new(sockjs)), dial).await
    }

    /// Opens the STOMP TCP address and connects.
    pub(super) async fn open_tcp(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let address = dial
            .targets
            .stomp_tcp
            .ok_or_else(|| OpenError::connect("no STOMP TCP address"))?;
        let tcp = tcp_connect(address, dial.source, dial.rcvbuf)
            .await
            .map_err(OpenError::connect)?;
        Self::connect(Io::Tcp(tcp), dial).await
    }

    /// CONNECT, answered by CONNECTED (or an ERROR, counted as auth when it says so).
    async fn connect(io: Io, dial: &Dial<'_>) -> Result<Self, OpenError> {
        let mut stomp = Self {
            io,
            inbound: StompIn::new(),
            out: BytesMut::with_capacity(256),
        };
        let targets = dial.targets;
        let host = match &targets.stomp_host {
            Some(h) => h.clone(),
            None => targets.http.ip().to_string(),
        };
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", host)
            // No heart-beats: an idle bot should cost the server nothing but its socket.
            .header("heart-beat", "0,0");
        // A token names its user itself: a personal access token (`--token`) is another
        // user's than the bot's name, and Parley refuses a `login` that differs from it.
        let login = match dial.credential {
            Credential::Token(_) => targets.stomp_login.as_deref(),
            Credential::Guest => Some(targets.stomp_login.as_deref().unwrap_or(dial.name)),
        };
        if let Some(login) = login {
            connect = connect.header("login", login);
        }
        if let Some(passcode) = &targets.stomp_passcode {
            connect = connect.header("passcode", passcode.as_str());
        } else if let Credential::Token(token) = dial.credential {
            connect = connect.header("passcode", token.as_str());
        }
        let bytes = parley_stomp::codec::encode(&connect, Version::V1_2);
        stomp
            .io
            .write(&bytes)
            .await
            .map_err(|e| OpenError::connect(e.why))?;
        loop {
            let frame = stomp.read_frame().await.map_err(|e| OpenError {
                kind: ErrorKind::Connect,
                why: format!("before CONNECTED: {}", e.why),
            })?;
            match frame.command {
                Command::Connected => return Ok(stomp),
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
    async fn read_frame(&mut self) -> Result<Frame, Closed> {
        loop {
            match self.inbound.decoder.decode(&mut self.inbound.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(Closed::new(format!("bad frame: {e}"))),
            }
            self.io.fill(&mut self.inbound.buf).await?;
        }
    }
}

impl Link for Stomp {
    async fn join(&mut self, room: &str, dms: bool, since: Option<u64>) -> Result<(), Closed> {
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
        self.io.write(&frames).await
    }

    async fn send(&mut self, to: Target<'_>, body: &str, seq: u64) -> Result<(), Closed> {
        self.out.clear();
        encode_send(&mut self.out, to, body.as_bytes(), seq);
        self.io.write(&self.out).await
    }

    async fn change(
        &mut self,
        room: &str,
        target: u64,
        what: ChangeSend<'_>,
        n: u64,
    ) -> Result<(), Closed> {
        let (kind, body, tag) = match what {
            ChangeSend::Edit(body) => ("edit", body, Change::Edit.tag()),
            ChangeSend::React(emoji, true) => ("react", emoji, Change::React.tag()),
            ChangeSend::React(emoji, false) => ("unreact", emoji, Change::React.tag()),
        };
        let frame = Frame::new(Command::Send)
            .header("destination", format!("/topic/{room}"))
            .header("kind", kind)
            .header("target-id", target.to_string())
            .header("content-type", "text/plain")
            .header("receipt", format!("{tag}{n}"))
            .body(body.as_bytes().to_vec());
        self.io
            .write(&parley_stomp::codec::encode(&frame, Version::V1_2))
            .await
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        // Many frames per read: decode everything the one read brought.
        self.io.fill(&mut self.inbound.buf).await?;
        self.inbound.handle_all(h)
    }

    async fn close(&mut self) {
        let bye = parley_stomp::codec::encode(&Frame::new(Command::Disconnect), Version::V1_2);
        let _ = self.io.write(&bye).await;
        match &mut self.io {
            Io::Ws(ws) => {
                let _ = (**ws).close(None).await;
            }
            Io::Tcp(tcp) => {
                let _ = tcp.shutdown().await;
            }
            // The server closes the session after the DISCONNECT; dropping ends our requests.
            Io::SockJs(_) => {}
        }
    }
}

impl Io {
    /// Writes encoded STOMP bytes.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        match self {
            Io::Ws(ws) => {
                // Every frame we send is ASCII, so it goes as a text message like browsers send.
                let text = Utf8Bytes::try_from(bytes::Bytes::copy_from_slice(bytes))
                    .map_err(|_| Closed::new("frame is not UTF-8"))?;
                ws.send(Message::Text(text)).await.map_err(ws_closed)
            }
            Io::Tcp(tcp) => tcp.write_all(bytes).await.map_err(io_closed),
            Io::SockJs(sockjs) => sockjs.send(bytes).await,
        }
    }

    /// Appends what one read brings to `buf` (nothing for a WebSocket control frame).
    /// Cancel-safe: the read is the only await.
    async fn fill(&mut self, buf: &mut BytesMut) -> Result<(), Closed> {
        match self {
            Io::Ws(ws) => {
                if let Some(payload) = next_ws_payload(ws).await? {
                    buf.extend_from_slice(&payload);
                }
            }
            Io::Tcp(tcp) => {
                if buf.capacity() - buf.len() < READ_RESERVE / 2 {
                    buf.reserve(READ_RESERVE);
                }
                if tcp.read_buf(buf).await.map_err(io_closed)? == 0 {
                    return Err(Closed::new("server closed the connection"));
                }
            }
            Io::SockJs(sockjs) => buf.extend_from_slice(&sockjs.recv().await?),
        }
        Ok(())
    }
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
    // The receipt's tag tells a DM's from a room message's (as the raw protocol's `ref`).
    let tag = match target {
        Target::Room(_) => 'r',
        Target::User(_) => 'd',
    };
    // Writing into a BytesMut cannot fail.
    write!(
        BytesWriter(out),
        "\ncontent-type:text/plain\ncontent-length:{}\nreceipt:{tag}{seq}\n\n",
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
            let change = match frame.get("kind") {
                None => None,
                Some("edit") => Some(Change::Edit),
                Some("delete") => Some(Change::Delete),
                Some(_) => Some(Change::React),
            };
            match change {
                Some(change) if !dm => h.on_event(change, id, frame.get("sender")),
                _ => h.on_message(stream, id, &frame.body),
            }
        }
        Command::Receipt => match frame.get("receipt-id") {
            Some(JOIN_RECEIPT) => h.on_joined(),
            other => h.on_ack(other.map_or(Sent::Message, Sent::of_ref)),
        },
        Command::Error => {
            let message = frame.get("message").unwrap_or("ERROR");
            let refused = refusal(message);
            match refused {
                Some(what) => h.on_refused(what),
                None => h.on_error(ErrorKind::Protocol, message),
            }
            // The server closes after an ERROR: stop here so it is not also counted as a close.
            return Err(Closed {
                why: format!("ERROR: {message}"),
                announced: true,
                refused: refused.is_some(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// The refusal an ERROR's message tells of, when it is one the bots expect (the ERROR names no
/// frame, so the code says what was refused).
fn refusal(message: &str) -> Option<Refused> {
    let code = message.split(':').next().unwrap_or_default();
    match code {
        "no_such_user" => Some(Refused::Dm),
        "too_late" | "no_such_message" | "invalid_emoji" => Some(Refused::Change(Change::Edit)),
        // The same code refuses messages over --rate-limit: only the change limit says so.
        "rate_limited" if message.contains("edits, deletions and reactions") => {
            Some(Refused::Change(Change::Edit))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::Seen;

    #[test]
    fn hand_encoded_send_matches_the_codec() {
        let mut out = BytesMut::new();
        encode_send(&mut out, Target::Room("r-1"), b"1:2:3:xx", 7);
        let expected = Frame::new(Command::Send)
            .header("destination", "/topic/r-1")
            .header("content-type", "text/plain")
            .header("content-length", "8")
            .header("receipt", "r7")
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
              RECEIPT\nreceipt-id:5\n\n\0\
              MESSAGE\ndestination:/topic/r\nmessage-id:2\nkind:react\ntarget-id:1\nsender:b\n\nx\0\
              RECEIPT\nreceipt-id:k1\n\n\0MESS",
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
        assert_eq!(
            seen.events,
            [(Change::React, Some(2), Some("b".to_owned()))]
        );
        assert_eq!(seen.change_acks, [Change::React]);
        // The partial frame waits for more bytes.
        assert_eq!(&stomp.buf[..], b"MESS");

        stomp.buf.clear();
        stomp
            .buf
            .extend_from_slice(b"ERROR\nmessage:slow consumer\n\n\0");
        assert!(stomp.handle_all(&mut seen).is_err());
        assert_eq!(seen.errors[0].1, "slow consumer");

        // A DM to nobody online is a refusal, not a protocol error; the server hangs up all
        // the same.
        stomp.buf.clear();
        stomp
            .buf
            .extend_from_slice(b"ERROR\nmessage:no_such_user: no user \"x\"\n\n\0");
        let closed = stomp.handle_all(&mut seen).unwrap_err();
        assert!(closed.refused && closed.announced);
        assert_eq!(seen.refused, [Refused::Dm]);
        assert_eq!(seen.errors.len(), 1);
    }
}
