//! What runs inside an Engine.IO session: its heartbeat (a ping every interval, closed without
//! a pong in time), and the Socket.IO protocol on its messages — namespaces, CONNECT with its
//! `auth`, events, acknowledgements and binary attachments — for the chat namespace or, with
//! `--echo`, the protocol test suites' services.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::CloseCode;
use serde_json::{json, Value};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::chat::{self, ChatNsp, Ended, Sent};
use super::engine::new_id;
use super::packet::{self, EnginePacket, Kind, Packet};
use crate::auth::{Auth, Authenticated};
use crate::endpoints::pipe::AppEnd;
use crate::hub::{ChatSettings, Hub, CLOSE_UNAUTHORIZED};

/// What a session serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Socket.IO, namespace `/` being the chat.
    Chat,
    /// Conformance: Engine.IO echo.
    EngineEcho,
    /// Conformance: the Socket.IO test suite's namespaces `/` and `/custom`.
    SocketIoTest,
}

/// A session's clocks.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A ping this long after the last pong (or the open).
    pub ping_interval: Duration,
    /// The pong's deadline after a ping.
    pub ping_timeout: Duration,
    /// A session that connects to no namespace this long is closed.
    pub connect_timeout: Duration,
}

/// What sessions' apps need.
pub struct Apps {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Accounts and tokens.
    pub auth: Arc<Auth>,
    /// Limits of chat clients.
    pub chat: Arc<ChatSettings>,
    /// Largest raw command.
    pub max_message: usize,
    /// Longest wait for a client to collect what its session sent before.
    pub write_timeout: Duration,
}

/// The Socket.IO side of one session.
struct SocketIo {
    apps: Arc<Apps>,
    service: Service,
    /// Who the request that opened the session said the client is.
    pre: Option<Authenticated>,
    /// The client's address.
    client: IpAddr,
    /// Connected test namespaces.
    namespaces: Vec<String>,
    chat: Option<ChatNsp>,
    ever_connected: bool,
    /// A binary packet still collecting its attachments.
    partial: Option<(Packet, Vec<Vec<u8>>)>,
}

/// Most further chat messages taken in one step after the one that woke the session.
const MAX_BATCH: usize = 63;

/// The client broke the protocol: the session ends.
struct Broken;

/// Runs a session's app until it closes, the client goes, or the server shuts down.
pub async fn run(
    end: AppEnd,
    service: Service,
    timing: Timing,
    pre: Option<Authenticated>,
    client: IpAddr,
    apps: Arc<Apps>,
    shutdown: CancellationToken,
) {
    let write_timeout = apps.write_timeout;
    let mut sio = SocketIo {
        apps,
        service,
        pre,
        client,
        namespaces: Vec::new(),
        chat: None,
        ever_connected: false,
        partial: None,
    };
    let started = Instant::now();
    let mut next_ping = started + timing.ping_interval;
    let mut pong_due: Option<Instant> = None;
    let mut got = Vec::new();
    let mut out = Vec::new();
    // One timer for the session's life, moved as its deadline moves.
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);
    loop {
        let connect_due = (service != Service::EngineEcho && !sio.ever_connected)
            .then_some(started + timing.connect_timeout);
        let deadline = [pong_due.or(Some(next_ping)), connect_due]
            .into_iter()
            .flatten()
            .min();
        let deadline = deadline.unwrap_or(next_ping);
        if timer.deadline() != deadline || timer.is_elapsed() {
            timer.as_mut().reset(deadline.max(Instant::now()));
        }
        let step = tokio::select! {
            biased;
            () = shutdown.cancelled() => Err((1001, "server shutting down".to_owned())),
            more = end.recv(&mut got) => {
                if !more {
                    break;
                }
                let mut pong = false;
                let step = sio.packets(got.drain(..), &mut out, &mut pong).await;
                if pong {
                    pong_due = None;
                    next_ping = Instant::now() + timing.ping_interval;
                }
                step
            }
            sent = sio.chat_outbound() => sio.chat_apply_all(sent, &mut out),
            () = &mut timer => {
                let now = Instant::now();
                if pong_due.is_some_and(|due| now >= due) {
                    Err((1000, "ping timeout".to_owned()))
                } else if connect_due.is_some_and(|due| now >= due) {
                    Err((1000, "no namespace connected".to_owned()))
                } else {
                    if pong_due.is_none() && now >= next_ping {
                        out.push(Bytes::from_static(packet::PING));
                        pong_due = Some(now + timing.ping_timeout);
                    }
                    Ok(())
                }
            }
        };
        if !out.is_empty()
            && end
                .send_all_paced(out.drain(..), write_timeout)
                .await
                .is_err()
        {
            return;
        }
        if let Err((code, reason)) = step {
            if let Some(chat) = &mut sio.chat {
                chat.close(CloseCode::GOING_AWAY, &reason);
            }
            end.close(code, &reason);
            return;
        }
    }
}

impl SocketIo {
    /// Handles the client's packets of one read; `Err` closes the session.
    async fn packets(
        &mut self,
        packets: impl Iterator<Item = Bytes>,
        out: &mut Vec<Bytes>,
        pong: &mut bool,
    ) -> Result<(), (u16, String)> {
        let broken = || (1002, "malformed packet".to_owned());
        for raw in packets {
            match packet::engine_packet(&raw) {
                Ok(EnginePacket::Pong) => *pong = true,
                Ok(EnginePacket::Ping(data)) => {
                    let mut answer = b"3".to_vec();
                    answer.extend_from_slice(data);
                    out.push(Bytes::from(answer));
                }
                Ok(EnginePacket::Text(text)) if self.service == Service::EngineEcho => {
                    out.push(packet::text(text));
                }
                Ok(EnginePacket::Binary(data)) if self.service == Service::EngineEcho => {
                    out.push(packet::binary(&data));
                }
                Ok(EnginePacket::Text(text)) => self.text(text, out).await.map_err(|_| broken())?,
                Ok(EnginePacket::Binary(data)) => self.binary(data, out).map_err(|_| broken())?,
                Ok(EnginePacket::Close | EnginePacket::Upgrade | EnginePacket::Noop) => {}
                Err(_) => return Err(broken()),
            }
        }
        if let Some(chat) = &mut self.chat {
            chat.run(out)
                .await
                .or_else(|ended| self.ended(ended, out))?;
        }
        Ok(())
    }

    /// One Socket.IO packet.
    async fn text(&mut self, text: &[u8], out: &mut Vec<Bytes>) -> Result<(), Broken> {
        if self.partial.is_some() {
            return Err(Broken);
        }
        let packet = packet::parse(text).map_err(|_| Broken)?;
        match packet.kind {
            Kind::Connect => self.connect(packet, out).await,
            Kind::Disconnect => {
                self.namespaces.retain(|n| *n != packet.nsp);
                if packet.nsp == "/" {
                    // What came before the disconnect in this read still runs, as the
                    // reference server runs each handler before the next packet.
                    if let Some(mut chat) = self.chat.take() {
                        let _ = chat.run(out).await;
                    }
                }
            }
            Kind::Event | Kind::Ack => self.dispatch(packet, Vec::new(), out),
            Kind::BinaryEvent | Kind::BinaryAck if packet.attachments > 0 => {
                self.partial = Some((packet, Vec::new()));
            }
            Kind::BinaryEvent | Kind::BinaryAck => self.dispatch(packet, Vec::new(), out),
            Kind::ConnectError => return Err(Broken),
        }
        Ok(())
    }

    /// One binary attachment.
    fn binary(&mut self, data: Vec<u8>, out: &mut Vec<Bytes>) -> Result<(), Broken> {
        let (packet, mut attachments) = self.partial.take().ok_or(Broken)?;
        // A packet's attachments together are at most one largest message; the chat refuses
        // them anyway, so it keeps none.
        let held: usize = attachments.iter().map(Vec::len).sum::<usize>() + data.len();
        if held > self.apps.max_message {
            return Err(Broken);
        }
        let keep = self.service == Service::SocketIoTest;
        attachments.push(if keep { data } else { Vec::new() });
        if attachments.len() < packet.attachments {
            self.partial = Some((packet, attachments));
        } else {
            self.dispatch(packet, attachments, out);
        }
        Ok(())
    }

    /// A CONNECT: the chat namespace, a test namespace, or a refusal.
    async fn connect(&mut self, packet: Packet, out: &mut Vec<Bytes>) {
        let nsp = packet.nsp.as_str();
        let test = self.service == Service::SocketIoTest && matches!(nsp, "/" | "/custom");
        if test {
            out.push(packet::encode(
                "0",
                nsp,
                None,
                json!({"sid": new_id()}).to_string().as_bytes(),
            ));
            let auth = packet.data.unwrap_or_else(|| json!({}));
            out.push(packet::event(nsp, &json!(["auth", auth])));
            self.namespaces.push(nsp.to_owned());
            self.ever_connected = true;
            return;
        }
        if self.service != Service::Chat || nsp != "/" {
            let error = json!({"message": "Invalid namespace"});
            return out.push(packet::encode("4", nsp, None, error.to_string().as_bytes()));
        }
        if self.chat.is_some() {
            return;
        }
        let auth = packet.data.unwrap_or_else(|| json!({}));
        let who = match self.who(&auth).await {
            Ok(who) => who,
            Err(why) => {
                let error = json!({"message": "unauthorized", "data": {"code": "unauthorized", "message": why}});
                return out.push(packet::encode("4", "/", None, error.to_string().as_bytes()));
            }
        };
        let apps = &self.apps;
        let max = apps.max_message;
        let (sign_in, chat) = (apps.auth.clone(), apps.chat.clone());
        let mut chat = ChatNsp::open(&apps.hub, sign_in, chat, who, max, self.client);
        let (pid, resumed) = recovery(&auth);
        if let Some(positions) = resumed {
            chat.resume(positions);
        }
        let answer = json!({"sid": new_id(), "pid": pid});
        out.push(packet::encode(
            "0",
            "/",
            None,
            answer.to_string().as_bytes(),
        ));
        self.chat = Some(chat);
        self.ever_connected = true;
    }

    /// Who connects: the CONNECT's token, else the opening request's credentials, else a
    /// guest (if guests are allowed).
    async fn who(&self, auth: &Value) -> Result<Authenticated, String> {
        let token = ["token", "access_token"]
            .iter()
            .find_map(|field| auth.get(field).and_then(Value::as_str));
        if let Some(token) = token {
            return self.apps.auth.verify_any(token).await;
        }
        if let Some(pre) = &self.pre {
            return Ok(pre.clone());
        }
        let name = auth.get("name").and_then(Value::as_str);
        if name.is_some_and(|n| parley_stomp::destination::valid_user(n).is_none()) {
            return Err("invalid name: 1-32 of letters, digits, _ - .".to_owned());
        }
        self.apps.auth.guest(name).await
    }

    /// An event (or a client's acknowledgement, which nothing here asks for) with its
    /// attachments.
    fn dispatch(&mut self, packet: Packet, attachments: Vec<Vec<u8>>, out: &mut Vec<Bytes>) {
        if !matches!(packet.kind, Kind::Event | Kind::BinaryEvent) {
            return;
        }
        let Some(Value::Array(args)) = &packet.data else {
            return;
        };
        let name = args.first().and_then(Value::as_str).unwrap_or_default();
        if self.service == Service::SocketIoTest {
            if self.namespaces.contains(&packet.nsp) {
                echo_test(&packet, name, args, &attachments, out);
            }
            return;
        }
        let Some(chat) = &mut self.chat else {
            return;
        };
        if packet.nsp != "/" {
            return;
        }
        if packet.kind == Kind::BinaryEvent {
            ChatNsp::binary_event(packet.ack, out);
        } else {
            chat.event(name, &args[1..], packet.ack, out);
        }
    }

    /// Waits for what the chat sends on its own (never, without the chat).
    async fn chat_outbound(&mut self) -> Sent {
        match &mut self.chat {
            Some(chat) => chat.outbound().await,
            None => std::future::pending().await,
        }
    }

    /// Takes in `sent` and whatever else the chat has ready now, so that a backlog goes to the
    /// client in one step.
    fn chat_apply_all(&mut self, sent: Sent, out: &mut Vec<Bytes>) -> Result<(), (u16, String)> {
        self.chat_apply(sent, out)?;
        for _ in 0..MAX_BATCH {
            let ready = {
                let mut more = std::pin::pin!(self.chat_outbound());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match more.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(sent) => Some(sent),
                    std::task::Poll::Pending => None,
                }
            };
            match ready {
                Some(sent) => self.chat_apply(sent, out)?,
                None => break,
            }
        }
        Ok(())
    }

    fn chat_apply(&mut self, sent: Sent, out: &mut Vec<Bytes>) -> Result<(), (u16, String)> {
        let Some(chat) = &mut self.chat else {
            return Ok(());
        };
        chat.apply(sent, out)
            .or_else(|ended| self.ended(ended, out))
    }

    /// The chat ended the connection: an expired token disconnects the client for good (a
    /// reconnect needs a new token); anything else closes the session, and the client
    /// reconnects and recovers.
    fn ended(&mut self, ended: Ended, out: &mut Vec<Bytes>) -> Result<(), (u16, String)> {
        let Ended::Closed(code, reason) = ended;
        self.chat = None;
        if code == CLOSE_UNAUTHORIZED.as_u16() {
            let error = json!({"type": "error", "code": "unauthorized", "message": reason});
            out.push(packet::event("/", &json!(["error", error])));
            out.push(packet::encode("1", "/", None, b""));
        }
        Err((code, reason))
    }
}

/// The pid to answer, and the positions to resume from when the client asks to recover.
fn recovery(auth: &Value) -> (String, Option<BTreeMap<String, u64>>) {
    let pid = auth.get("pid").and_then(Value::as_str);
    let offset = auth.get("offset").and_then(Value::as_str);
    let valid_pid = pid.filter(|p| {
        !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    });
    match (valid_pid, offset.and_then(chat::parse_offset)) {
        (Some(pid), Some(positions)) => (pid.to_owned(), Some(positions)),
        _ => (new_id(), None),
    }
}

/// The test suite's namespaces: `message` comes back as `message-back`, `message-with-ack`
/// as its acknowledgement, attachments included.
fn echo_test(
    packet: &Packet,
    name: &str,
    args: &[Value],
    attachments: &[Vec<u8>],
    out: &mut Vec<Bytes>,
) {
    let binary = packet.kind == Kind::BinaryEvent;
    let head = |kind: char| {
        if binary {
            format!(
                "{}{}-",
                if kind == '2' { '5' } else { '6' },
                attachments.len()
            )
        } else {
            kind.to_string()
        }
    };
    match (name, packet.ack) {
        ("message", _) => {
            let mut back = args.to_vec();
            back[0] = Value::from("message-back");
            let data = Value::Array(back).to_string();
            out.push(packet::encode(
                &head('2'),
                &packet.nsp,
                None,
                data.as_bytes(),
            ));
        }
        ("message-with-ack", Some(ack)) => {
            let data = Value::Array(args[1..].to_vec()).to_string();
            out.push(packet::encode(
                &head('3'),
                &packet.nsp,
                Some(ack),
                data.as_bytes(),
            ));
        }
        _ => return,
    }
    out.extend(attachments.iter().map(|a| packet::binary(a)));
}
