//! Socket.IO 5 over Engine.IO 4 (WebSocket transport only): the handshake, `join` and
//! `msg` events, and answering the server's pings.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::link::{Closed, Credential, Dial, Handler, Link, OpenError, Target};
use super::transport::{next_ws_payload, ws_closed, ws_open, Ws};
use crate::checker::Stream;
use crate::stats::ErrorKind;

/// Socket.IO's Engine.IO v4 endpoint, WebSocket transport from the start.
const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// A Socket.IO connection to the main namespace.
pub struct SocketIo {
    ws: Box<Ws>,
}

impl SocketIo {
    /// Opens the Engine.IO endpoint as a guest and connects to the main namespace.
    pub(super) async fn open(dial: &Dial<'_>) -> Result<Self, OpenError> {
        let path = dial.targets.path(SOCKETIO_PATH);
        let mut ws = ws_open(dial, path, &Credential::Guest, None).await?;
        handshake(&mut ws).await?;
        Ok(Self { ws: Box::new(ws) })
    }
}

impl Link for SocketIo {
    async fn join(&mut self, room: &str, _dms: bool, _since: Option<u64>) -> Result<(), Closed> {
        let text = format!(r#"42["join","{room}"]"#);
        self.ws.send(Message::text(text)).await.map_err(ws_closed)
    }

    async fn send(&mut self, to: Target<'_>, body: &str, _seq: u64) -> Result<(), Closed> {
        match to {
            Target::Room(_) => {
                // Stamped bodies need no JSON escaping.
                let text = format!(r#"42["msg","{body}"]"#);
                self.ws.send(Message::text(text)).await.map_err(ws_closed)
            }
            Target::User(_) => Err(Closed::new("this protocol has no direct messages")),
        }
    }

    async fn read(&mut self, h: &mut impl Handler) -> Result<(), Closed> {
        let Some(payload) = next_ws_payload(&mut self.ws).await? else {
            return Ok(());
        };
        match handle_socketio(&payload, h) {
            SocketIoNext::Continue => Ok(()),
            // tungstenite flushes a queued pong on the next read even if this future is
            // dropped after queueing it.
            SocketIoNext::Pong => self.ws.send(Message::text("3")).await.map_err(ws_closed),
            SocketIoNext::Closed(why) => Err(Closed::new(why)),
        }
    }

    async fn close(&mut self) {
        // The WebSocket's own close (with a close frame), not `SinkExt::close` on the box.
        let _ = (*self.ws).close(None).await;
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
async fn handshake(ws: &mut Ws) -> Result<(), OpenError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::Seen;

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
}
