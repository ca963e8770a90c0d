//! Socket.IO 5 over Engine.IO 4, on a WebSocket or long-polling, in Parley's event vocabulary
//! (docs/socketio.md): `join`, `send`, `edit` and `react` asking for acknowledgements, which
//! carry the raw protocol's answers; `message` and change events carrying the raw protocol's
//! objects (then a recovery offset); the server's pings answered.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::link::{
    Change, ChangeSend, Closed, Credential, Dial, Handler, Link, OpenError, Sent, Target,
};
use super::polling::Polling;
use super::raw::{dispatch_raw, Incoming};
use super::transport::{next_ws_payload, ws_closed, ws_open, Ws};
use crate::checker::Stream;
use crate::stats::ErrorKind;

/// The Engine.IO v4 endpoint, WebSocket transport from the start.
const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// The Engine.IO v4 endpoint, long-polling (no upgrade).
const POLLING_PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// The Engine.IO transport a connection uses throughout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineTransport {
    /// A WebSocket from the start.
    WebSocket,
    /// HTTP long-polling.
    Polling,
}

/// A Socket.IO connection to the main namespace.
pub struct SocketIo {
    engine: Engine,
    socket: Socket,
}

/// The Engine.IO transport under the Socket.IO packets.
enum Engine {
    Ws(Box<Ws>),
    Polling(Polling),
}

impl Engine {
    async fn send(&mut self, packet: String) -> Result<(), Closed> {
        match self {
            Engine::Ws(ws) => ws.send(Message::text(packet)).await.map_err(ws_closed),
            Engine::Polling(polling) => polling.send(packet),
        }
    }

    /// The next Engine.IO packet; `None` for a WebSocket control frame. Cancel-safe.
    async fn recv(&mut self) -> Result<Option<Bytes>, Closed> {
        match self {
            Engine::Ws(ws) => next_ws_payload(ws).await,
            Engine::Polling(polling) => polling.recv().await.map(Some),
        }
    }
}

impl SocketIo {
    /// Opens the Engine.IO endpoint and connects to the main namespace, with the bot's token
    /// in the CONNECT packet (a guest names itself there: Parley takes `auth.name`).
    pub(super) async fn open(
        dial: &Dial<'_>,
        transport: EngineTransport,
    ) -> Result<Self, OpenError> {
        let engine = match transport {
            EngineTransport::WebSocket => {
                let path = dial.targets.path(WS_PATH);
                Engine::Ws(Box::new(
                    ws_open(dial, path, &Credential::Guest, None).await?,
                ))
            }
            EngineTransport::Polling => Engine::Polling(Polling::open(dial, POLLING_PATH).await?),
        };
        let mut sio = Self {
            engine,
            socket: Socket::default(),
        };
        sio.handshake(dial.credential, dial.name).await?;
        Ok(sio)
    }

    /// Engine.IO open (`0{...}`), then the Socket.IO CONNECT to the main namespace (`40`,
    /// answered by `40{"sid":...}`).
    async fn handshake(&mut self, credential: &Credential, name: &str) -> Result<(), OpenError> {
        let lost = |e: Closed| OpenError::connect(format!("socket.io handshake: {}", e.why));
        let auth = match credential {
            Credential::Guest => serde_json::json!({ "name": name }),
            Credential::Token(token) => serde_json::json!({ "token": token }),
        };
        let connect = format!("40{auth}");
        let mut opened = false;
        loop {
            let Some(packet) = self.engine.recv().await.map_err(lost)? else {
                continue;
            };
            match &packet[..] {
                [b'0', ..] if !opened => {
                    opened = true;
                    self.engine.send(connect.clone()).await.map_err(lost)?;
                }
                b"2" => self.engine.send("3".to_owned()).await.map_err(lost)?,
                [b'4', b'0', ..] if opened => return Ok(()),
                [b'4', b'4', why @ ..] => {
                    return Err(OpenError {
                        kind: ErrorKind::Auth,
                        why: format!(
                            "socket.io connect refused: {}",
                            String::from_utf8_lossy(why)
                        ),
                    })
                }
                _ => {}
            }
        }
    }
}

impl Link for SocketIo {
    async fn join(&mut self, room: &str, _dms: bool, since: Option<u64>) -> Result<(), Closed> {
        // Direct messages need no subscription, as on the raw protocol. Room names need no
        // JSON escaping (validated at load).
        let arg = match since {
            Some(id) => format!(r#"{{"room":"{room}","since":"{id}"}}"#),
            None => format!(r#"{{"room":"{room}"}}"#),
        };
        let packet = self.socket.emit("join", &arg, Asked::Join);
        self.engine.send(packet).await
    }

    async fn send(&mut self, to: Target<'_>, body: &str, _seq: u64) -> Result<(), Closed> {
        // Rooms, user names and stamped bodies need no JSON escaping (validated at load).
        let (field, value, sent) = match to {
            Target::Room(room) => ("room", room, Sent::Message),
            Target::User(user) => ("to", user, Sent::Dm),
        };
        let arg = format!(r#"{{"{field}":"{value}","body":"{body}"}}"#);
        let packet = self.socket.emit("send", &arg, Asked::Sent(sent));
        self.engine.send(packet).await
    }

    async fn change(
        &mut self,
        room: &str,
        target: u64,
        what: ChangeSend<'_>,
        _n: u64,
    ) -> Result<(), Closed> {
        // Rooms and stamped bodies need no JSON escaping; the emoji is one of the bots' own.
        let (event, arg, change) = match what {
            ChangeSend::Edit(body) => (
                "edit",
                format!(r#"{{"room":"{room}","id":"{target}","body":"{body}"}}"#),
                Change::Edit,
            ),
            ChangeSend::React(emoji, on) => (
                "react",
                format!(r#"{{"room":"{room}","id":"{target}","emoji":"{emoji}","on":{on}}}"#),
                Change::React,
            ),
        };
        let packet = self
            .socket
            .emit(event, &arg, Asked::Sent(Sent::Change(change)));
        self.engine.send(packet).await
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        let Some(packet) = self.engine.recv().await? else {
            return Ok(());
        };
        match self.socket.handle(&packet, h) {
            Next::Continue => Ok(()),
            // tungstenite flushes a queued pong on the next read even if this future is
            // dropped after queueing it; long-polling queues it without waiting.
            Next::Pong => self.engine.send("3".to_owned()).await,
            Next::Closed(why) => Err(Closed::new(why)),
        }
    }

    async fn close(&mut self) {
        match &mut self.engine {
            // The WebSocket's own close (with a close frame), not `SinkExt::close` on the box.
            Engine::Ws(ws) => {
                let _ = (**ws).close(None).await;
            }
            Engine::Polling(polling) => polling.close().await,
        }
    }
}

/// What a command asking for an acknowledgement was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    Join,
    Sent(Sent),
}

/// The Socket.IO side of a connection, without IO: packets out, packets in.
#[derive(Default)]
struct Socket {
    next_ack: u64,
    /// The commands waiting for their acknowledgement, by its id.
    waiting: HashMap<u64, Asked>,
    /// Binary attachments still to come of a binary event or acknowledgement: skipped.
    attachments: usize,
}

/// What a connection does after a packet.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// The server pinged (Engine.IO `2`): answer `3`.
    Pong,
    /// The server disconnected us.
    Closed(String),
}

/// An event's argument as the bots read it: the event name, a raw protocol object, or
/// anything else (a recovery offset, a positional argument).
#[derive(Deserialize)]
#[serde(untagged)]
enum Arg<'a> {
    // Only matched: the raw object's own `type` says what it is.
    #[allow(dead_code)]
    Text(#[serde(borrow)] Cow<'a, str>),
    Raw(#[serde(borrow)] Incoming<'a>),
    Other(IgnoredAny),
}

impl Socket {
    /// An EVENT packet on the main namespace, asking for an acknowledgement of what `asked`
    /// says; `arg` is JSON.
    fn emit(&mut self, event: &str, arg: &str, asked: Asked) -> String {
        let id = self.next_ack;
        self.next_ack += 1;
        self.waiting.insert(id, asked);
        format!(r#"42{id}["{event}",{arg}]"#)
    }

    /// Handles one Engine.IO packet of an open connection.
    fn handle(&mut self, packet: &[u8], h: &mut impl Handler) -> Next {
        if self.attachments > 0 {
            self.attachments -= 1;
            return Next::Continue;
        }
        match packet {
            b"2" => Next::Pong,
            b"1" => Next::Closed("engine.io close".into()),
            [b'4', socket_packet @ ..] => self.socket_packet(socket_packet, h),
            // Pongs, noops (`6`), and binary packets (`b<base64>` on long-polling).
            _ => Next::Continue,
        }
    }

    /// One Socket.IO packet (what follows Engine.IO's `4`).
    fn socket_packet(&mut self, packet: &[u8], h: &mut impl Handler) -> Next {
        match packet {
            // Other namespaces (`2/nsp,…`): the bots are on the main one only.
            [_, b'/', ..] => {}
            [b'1', ..] => return Next::Closed("socket.io disconnect".into()),
            [b'2', rest @ ..] => on_event(split_ack_id(rest).1, h),
            [b'3', rest @ ..] => self.on_ack(rest, h),
            [b'4', why @ ..] => {
                let why = format!("socket.io connect_error {}", String::from_utf8_lossy(why));
                h.on_error(ErrorKind::Protocol, &why);
                return Next::Closed(why);
            }
            // BINARY_EVENT, BINARY_ACK (`5<n>-…`): the chat has none; skip its attachments.
            [b'5' | b'6', rest @ ..] => {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if rest.get(digits) == Some(&b'-') {
                    self.attachments = std::str::from_utf8(&rest[..digits])
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
            }
            // CONNECT again.
            _ => {}
        }
        Next::Continue
    }

    /// An ACK: the raw protocol's answer to the command it acknowledges.
    fn on_ack(&mut self, packet: &[u8], h: &mut impl Handler) {
        let (id, args) = split_ack_id(packet);
        let Some(asked) = id.and_then(|id| self.waiting.remove(&id)) else {
            return h.on_error(ErrorKind::Protocol, "socket.io ack of nothing asked");
        };
        let answers = match asked {
            Asked::Join => None,
            Asked::Sent(sent) => Some(sent),
        };
        let why = match serde_json::from_slice::<Vec<Arg<'_>>>(args) {
            Ok(args) => match args.first() {
                Some(Arg::Raw(answer)) => return dispatch_raw(answer, answers, h),
                _ => "socket.io ack without an answer".to_owned(),
            },
            Err(e) => format!("bad socket.io ack: {e}"),
        };
        // Still frees the send's in-flight slot.
        if let Some(sent) = answers {
            h.on_ack(sent);
        }
        h.on_error(ErrorKind::Protocol, &why);
    }
}

/// An EVENT's arguments: a raw protocol object first is handed on as the raw protocol's.
fn on_event(args: &[u8], h: &mut impl Handler) {
    if let Some((id, body)) = room_message(args) {
        return h.on_message(Stream::Room, id, body);
    }
    match serde_json::from_slice::<Vec<Arg<'_>>>(args) {
        Ok(args) => {
            if let [Arg::Text(_), Arg::Raw(object), ..] = &args[..] {
                dispatch_raw(object, None, h);
            }
        }
        Err(e) => h.on_error(ErrorKind::Protocol, &format!("bad socket.io event: {e}")),
    }
}

/// The fast path of a room message, `["message",{"type":"message","room":"…",…,"body":"…"}…`:
/// its id and body, found without parsing the JSON. Only when that is safe: nothing nested
/// and no escape before the body (so its key is the object's own), and no escape in the body
/// (so it is the text as sent). Anything else takes the parse.
fn room_message(args: &[u8]) -> Option<(Option<u64>, &[u8])> {
    const HEAD: &[u8] = br#"["message",{"type":"message","room":""#;
    const BODY: &[u8] = br#""body":""#;
    let rest = args.strip_prefix(HEAD)?;
    let at = find(rest, BODY)?;
    let fields = &rest[..at];
    if fields.iter().any(|b| matches!(b, b'{' | b'[' | b'\\')) {
        return None;
    }
    let body = &rest[at + BODY.len()..];
    let end = body.iter().position(|&b| b == b'"' || b == b'\\')?;
    if body[end] != b'"' {
        return None;
    }
    let id = find(fields, br#""id":""#).and_then(|i| {
        let digits = &fields[i + 6..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
    });
    Some((id, &body[..end]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A packet's acknowledgement id (the digits before its JSON) and the rest.
fn split_ack_id(packet: &[u8]) -> (Option<u64>, &[u8]) {
    let digits = packet.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&packet[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    (id, &packet[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::Seen;
    use crate::conn::Refused;

    /// Feeds Engine.IO packets to a socket that asked a join (ack 0), two room sends (1, 2),
    /// a DM (3) and an edit (4); returns what each packet led to.
    fn feed(packets: &[&[u8]], seen: &mut Seen) -> Vec<Next> {
        let mut socket = Socket::default();
        let sent = [
            socket.emit("join", r#"{"room":"r"}"#, Asked::Join),
            socket.emit(
                "send",
                r#"{"room":"r","body":"b"}"#,
                Asked::Sent(Sent::Message),
            ),
            socket.emit(
                "send",
                r#"{"room":"r","body":"c"}"#,
                Asked::Sent(Sent::Message),
            ),
            socket.emit("send", r#"{"to":"u","body":"d"}"#, Asked::Sent(Sent::Dm)),
            socket.emit(
                "edit",
                r#"{"room":"r","id":"1"}"#,
                Asked::Sent(Sent::Change(Change::Edit)),
            ),
        ];
        assert_eq!(sent[0], r#"420["join",{"room":"r"}]"#);
        assert_eq!(sent[3], r#"423["send",{"to":"u","body":"d"}]"#);
        packets.iter().map(|p| socket.handle(p, seen)).collect()
    }

    #[test]
    fn acknowledgements_answer_what_they_were_asked() {
        let mut seen = Seen::default();
        let next = feed(
            &[
                br#"430[{"type":"joined","room":"r","members":[],"last_id":"0"}]"#,
                br#"431[{"type":"ack","id":"7"}]"#,
                br#"432[{"type":"error","code":"rate_limited","message":"slow down"}]"#,
                br#"433[{"type":"error","code":"no_such_user","message":"who"}]"#,
                br#"434[{"type":"ack","id":"9"}]"#,
                br#"439[{"type":"ack","id":"9"}]"#,
                br#"431[{"type":"ack","id":"7"}]"#,
            ],
            &mut seen,
        );
        assert!(seen.joined);
        // The refused send frees its slot too.
        assert_eq!(seen.acks, 2);
        assert_eq!(seen.refused, [Refused::Dm]);
        assert_eq!(seen.change_acks, [Change::Edit]);
        // rate_limited, then two acks of nothing waiting (unknown, and answered already).
        assert_eq!(seen.errors.len(), 3);
        assert!(next.iter().all(|n| *n == Next::Continue));
    }

    #[test]
    fn message_events_with_offsets_reach_the_handler() {
        let mut seen = Seen::default();
        feed(
            &[
                // The fast path, with and without the recovery offset after the object.
                br#"42["message",{"type":"message","room":"r","id":"12","from":"a","ts":1,"body":"1:2:3:x"}]"#,
                br#"42["message",{"type":"message","room":"r","id":"13","from":"a","ts":1,"guest":true,"body":"1:2:4:x"},"r:13"]"#,
                // Escapes and nesting take the parse.
                br#"42["message",{"type":"message","room":"r","id":"14","from":"a","ts":1,"body":"a\"b"},"r:14"]"#,
                br#"42["message",{"type":"message","room":"r","id":"15","reply_to":{"body":"q"},"body":"e"}]"#,
                br#"42["message",{"type":"message","to":"me","id":"2","from":"a","ts":1,"body":"dm"},"o"]"#,
                br#"42["edit",{"type":"edit","room":"r","id":"16","target":"12","from":"a","ts":1,"body":"e"},"r:16"]"#,
                br#"42["offset","r:16"]"#,
                br#"42["presence",{"type":"presence","room":"r","user":"b","event":"join"}]"#,
                br#"42["error",{"type":"error","code":"forbidden","message":"no"}]"#,
                b"42[nope",
            ],
            &mut seen,
        );
        let bodies: Vec<_> = seen.messages.iter().map(|(s, b)| (*s, &b[..])).collect();
        assert_eq!(
            bodies,
            [
                (Stream::Room, &b"1:2:3:x"[..]),
                (Stream::Room, b"1:2:4:x"),
                (Stream::Room, b"a\"b"),
                (Stream::Room, b"e"),
                (Stream::Direct, b"dm"),
            ]
        );
        assert_eq!(
            seen.events,
            [(Change::Edit, Some(16), Some("a".to_owned()))]
        );
        assert_eq!(seen.errors.len(), 2);
    }

    #[test]
    fn the_fast_path_takes_only_what_is_safe() {
        let id_body = |text: &[u8]| room_message(text).map(|(id, b)| (id, b.to_vec()));
        assert_eq!(
            id_body(
                br#"["message",{"type":"message","room":"r","id":"3","from":"x","body":"hi"}]"#
            ),
            Some((Some(3), b"hi".to_vec()))
        );
        for unsafe_text in [
            &br#"["message",{"type":"message","room":"r","id":"3","body":"a\nb"}]"#[..],
            br#"["message",{"type":"message","room":"r\"x","body":"a"}]"#,
            br#"["message",{"type":"message","room":"r","q":{"body":"a"},"body":"b"}]"#,
            br#"["message",{"type":"message","to":"u","body":"a"}]"#,
            br#"["message",{"type":"message","room":"r","body":"unterminated"#,
        ] {
            assert_eq!(id_body(unsafe_text), None);
        }
    }

    #[test]
    fn engine_packets_binary_attachments_and_disconnects() {
        let mut seen = Seen::default();
        let next = feed(
            &[
                b"2",
                b"6",
                b"bAQID",
                // A binary event and its two attachments (on a WebSocket: raw binary messages).
                br#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                b"\x01\x02",
                b"42",
                br#"42["message",{"type":"message","room":"r","id":"2","body":"me"}]"#,
                br#"40{"sid":"x"}"#,
                br#"42/other,["message",{"type":"message","room":"r","body":"x"}]"#,
                b"41",
                b"1",
                br#"44{"message":"unauthorized"}"#,
            ],
            &mut seen,
        );
        assert_eq!(next[0], Next::Pong);
        assert!(next[1..9].iter().all(|n| *n == Next::Continue));
        assert!(next[9..].iter().all(|n| matches!(n, Next::Closed(_))));
        assert_eq!(seen.messages, [(Stream::Room, b"me".to_vec())]);
        assert_eq!(seen.errors.len(), 1);
    }
}
