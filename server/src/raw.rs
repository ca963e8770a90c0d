//! The raw WebSocket JSON protocol at `/ws`: one JSON object per text message.
//!
//! A raw client is a session of the same broker STOMP clients use, so rooms are shared: joining
//! room `general` subscribes to `/topic/general` (plus `.typing` and `.presence`), sending
//! publishes there, and a direct message goes to `/user/<name>/queue/messages`. Each message is
//! turned into its JSON WebSocket frame once and that frame is shared by every raw recipient.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::frame::{self, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Message};
use parley_stomp::broker::{AckMode, Delivery, Publish, Published, Receipt, SessionId};
use parley_stomp::destination::{valid_user, Destination};
use parley_stomp::rate::TokenBucket;
use parley_stomp::session::Identity;
use parley_stomp::SharedMessage;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::api::MessageJson;
use crate::auth::Authenticated;
use crate::mailbox;
use crate::stomp::{instant_at, now_ms, Eviction, SessionChannels, Speaks, StompHub};
use crate::ws::{Endpoint, Outbound};

/// Deliveries turned into frames per wake-up, so a busy client gets batched writes.
const MAX_BATCH: usize = 256;
/// Errors in a row after which a client is disconnected (1008) instead of answered.
const MAX_ERRORS_IN_A_ROW: u32 = 20;
/// The user queue direct messages go to.
const DM_QUEUE: &str = "messages";
/// Close code for a connection whose token expired (like HTTP 401).
const TOKEN_EXPIRED: u16 = 4401;

/// Limits of the raw protocol.
#[derive(Clone, Debug)]
pub struct RawSettings {
    /// Largest message body, in bytes.
    pub max_body: usize,
    /// Messages per second a connection may send; 0 disables the limit.
    pub rate_limit: u32,
}

/// One raw client.
pub struct RawClient {
    hub: Arc<StompHub>,
    settings: Arc<RawSettings>,
    id: SessionId,
    user: Arc<str>,
    identity: Identity,
    /// When the credential runs out (ms since the epoch); renewed by `auth`; `None` for guests.
    expires_ms: Option<u64>,
    deliveries: mailbox::Receiver<Delivery>,
    /// Acks that come back once messages are durable, and history answers.
    control: mailbox::Receiver<Bytes>,
    control_tx: mailbox::Sender<Bytes>,
    /// Catch-up replays to write, in order, before any live delivery.
    replays: VecDeque<oneshot::Receiver<Vec<Bytes>>>,
    evicted: Arc<Eviction>,
    rooms: HashSet<String>,
    errors_in_a_row: u32,
    bucket: TokenBucket,
    /// Sends of the current read, published together in one step (see `flush_sends`).
    sends: Vec<QueuedSend>,
    /// Replies produced by `flush_sends`, written before anything that follows them.
    out: Vec<Vec<u8>>,
}

/// A validated `send`, waiting for the rest of its read.
struct QueuedSend {
    destination: Destination,
    publish: Publish,
    reference: Option<String>,
}

/// A refusal: machine-readable code and a human-readable message.
struct Refusal(&'static str, String);

impl RawClient {
    /// Registers an authenticated client (or a guest) with the hub.
    pub fn open(hub: Arc<StompHub>, settings: Arc<RawSettings>, who: Authenticated) -> Self {
        let SessionChannels {
            id,
            deliveries,
            control,
            control_tx,
            evicted,
        } = hub.open_session(Speaks::Raw);
        let Authenticated {
            identity,
            expires_ms,
        } = who;
        let user = identity.name.clone();
        hub.apply(|broker, events| {
            broker.connect_as(id, user.clone(), identity.guest);
            let dms = Destination::OwnUserQueue(DM_QUEUE.to_owned());
            let _ = broker.subscribe(id, "dm", &dms, AckMode::Auto, events);
        });
        let bucket = TokenBucket::default();
        Self {
            hub,
            settings,
            id,
            user,
            identity,
            expires_ms,
            deliveries,
            control,
            control_tx,
            replays: VecDeque::new(),
            evicted,
            rooms: HashSet::new(),
            errors_in_a_row: 0,
            bucket,
            sends: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Handles one client message; returns the reply, if any.
    fn handle(&mut self, text: &[u8]) -> Result<Option<Value>, (Refusal, Option<String>)> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| (Refusal("bad_json", format!("not valid JSON: {e}")), None))?;
        let Value::Object(msg) = value else {
            return Err((Refusal("bad_json", "expected a JSON object".into()), None));
        };
        let reference = msg.get("ref").and_then(Value::as_str).map(str::to_owned);
        self.command(&msg).map_err(|refusal| (refusal, reference))
    }

    fn command(&mut self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        if !self.bucket.take(now_ms(), self.settings.rate_limit) {
            return Err(Refusal(
                "rate_limited",
                format!("more than {} messages per second", self.settings.rate_limit),
            ));
        }
        let kind = string(msg, "type")?;
        if kind != "send" {
            // Everything before this command takes effect first.
            self.flush_sends();
        }
        match kind {
            "ping" => Ok(Some(serde_json::json!({"type": "pong"}))),
            "join" => self.join(msg),
            "leave" => self.leave(msg),
            "send" => self.send(msg),
            "auth" => self.renew(msg),
            "typing" => {
                let room = self.joined_room(msg)?;
                self.may_use(&room)?;
                self.publish(
                    &Destination::Topic(format!("{room}.typing")),
                    Publish {
                        now_ms: now_ms(),
                        ..Publish::default()
                    },
                )?;
                Ok(None)
            }
            "history" => self.history(msg),
            other => Err(Refusal(
                "unknown_type",
                format!("unknown message type {other:?}"),
            )),
        }
    }

    /// A fresh access token for the same user extends the connection's life.
    fn renew(&mut self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let token = string(msg, "access_token")?;
        let renewed = self
            .hub
            .auth()
            .verify(token)
            .map_err(|why| Refusal("unauthorized", why))?;
        if self.identity.guest || renewed.identity.name != self.identity.name {
            return Err(Refusal(
                "unauthorized",
                "the token is for another user".into(),
            ));
        }
        self.expires_ms = renewed.expires_ms;
        let expires_in = renewed
            .expires_ms
            .map_or(0, |e| e.saturating_sub(now_ms()) / 1000);
        Ok(Some(
            serde_json::json!({"type": "authed", "expires_in": expires_in}),
        ))
    }

    /// Refuses a room this client may not read or post in.
    fn may_use(&self, room: &str) -> Result<(), Refusal> {
        self.hub
            .acl()
            .may_use(&self.identity, room)
            .map_err(|why| Refusal("forbidden", why))
    }

    fn join(&mut self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let room = room_name(string(msg, "room")?)?;
        let since = msg.get("since").map(message_id).transpose()?;
        let (id, topic) = (self.id, Destination::Topic(room.clone()));
        let sub = format!("room:{room}");
        // The access check, the subscription and the room's last id in one step under the
        // broker's lock: a removal cannot slip in between, everything after `last` arrives live,
        // everything up to it is replayed. The room first, announced to the others as its own
        // step, then its side channels, so we do not receive our own join. The broker, not our
        // own list, says whether we are subscribed: a removal may have ended it.
        let acl = self.hub.acl().clone();
        let identity = &self.identity;
        self.hub.prepare_rooms(std::slice::from_ref(&room));
        let joined = self.hub.apply(|broker, events| {
            acl.may_use(identity, &room)
                .map_err(|why| Refusal("forbidden", why))?;
            if broker.has_subscription(id, &sub) {
                return Ok(None);
            }
            broker
                .subscribe(id, &sub, &topic, AckMode::Auto, events)
                .map_err(|e| Refusal("join_failed", e.to_string()))?;
            Ok(Some(broker.room_last_id(&room)))
        })?;
        // Cluster mode: `joined` is written once this node receives the room (so nothing sent
        // after it is missed), with everyone present on any node; it goes first in the replay
        // queue so it still comes before the catch-up and the live messages.
        let joined_slot = self.hub.is_clustered().then(|| {
            let (slot, frames) = oneshot::channel();
            self.replays.push_back(frames);
            slot
        });
        if let Some(last) = joined {
            self.hub.apply(|broker, events| {
                for channel in ["typing", "presence"] {
                    let dest = Destination::Topic(format!("{room}.{channel}"));
                    let _ = broker.subscribe(
                        id,
                        &format!("{channel}:{room}"),
                        &dest,
                        AckMode::Auto,
                        events,
                    );
                }
            });
            if let Some(since) = since.filter(|&s| s < last) {
                self.replays
                    .push_back(self.replay(room.clone(), since, last));
            }
        }
        self.rooms.insert(room.clone());
        if !self.hub.is_clustered() {
            let members = self.hub.apply(|broker, _| broker.members(&topic));
            let members: Vec<&str> = members.iter().map(|m| &**m).collect();
            return Ok(Some(
                serde_json::json!({"type": "joined", "room": room, "members": members}),
            ));
        }
        let Some(slot) = joined_slot else {
            return Ok(None);
        };
        let waits = self.hub.not_live_yet(&[format!("/topic/{room}")]);
        let hub = self.hub.clone();
        tokio::spawn(async move {
            crate::stomp::until_live(waits).await;
            let members = hub.present(&room).await;
            let reply = serde_json::json!({"type": "joined", "room": room, "members": members});
            let json = serde_json::to_vec(&reply).unwrap_or_default();
            let _ = slot.send(vec![frame::encode(OpCode::Text, &json)]);
        });
        Ok(None)
    }

    /// The catch-up frames for `since < id <= last` of `room`; live deliveries wait for them.
    fn replay(&self, room: String, since: u64, last: u64) -> oneshot::Receiver<Vec<Bytes>> {
        let stored = self.hub.stored_between(room, since, last);
        let (frames_tx, frames_rx) = oneshot::channel();
        tokio::spawn(async move {
            let frames = match stored.await {
                Ok(Ok(messages)) => messages
                    .iter()
                    .map(|m| {
                        frame::encode(
                            OpCode::Text,
                            &serde_json::to_vec(&MessageJson::from(m)).unwrap_or_default(),
                        )
                    })
                    .collect(),
                _ => {
                    let e = error_json(&Refusal("storage_error", "catch-up failed".into()), None);
                    vec![frame::encode(OpCode::Text, &e)]
                }
            };
            let _ = frames_tx.send(frames);
        });
        frames_rx
    }

    fn history(&self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let room = room_name(string(msg, "room")?)?;
        self.may_use(&room)?;
        let before = msg.get("before").map(message_id).transpose()?;
        let limit = msg
            .get("limit")
            .and_then(Value::as_u64)
            .unwrap_or(50)
            .clamp(1, 500) as usize;
        let store = self.hub.store().clone();
        let reply = self.control_tx.clone();
        let evicted = self.evicted.clone();
        tokio::spawn(async move {
            let name = room.clone();
            let read =
                tokio::task::spawn_blocking(move || store.before(&name, before, limit)).await;
            let json = match read {
                Ok(Ok(messages)) => {
                    let messages: Vec<MessageJson<'_>> =
                        messages.iter().map(MessageJson::from).collect();
                    serde_json::to_vec(
                        &serde_json::json!({"type": "history", "room": room, "messages": messages}),
                    )
                    .unwrap_or_default()
                }
                _ => error_json(
                    &Refusal("storage_error", "history is unavailable".into()),
                    None,
                ),
            };
            if let Err(mailbox::TrySendError::Full(_)) =
                reply.try_send(frame::encode(OpCode::Text, &json))
            {
                evicted.evict_slow("too many replies waiting to be written");
            }
        });
        Ok(None)
    }

    fn leave(&mut self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let room = self.joined_room(msg)?;
        let id = self.id;
        self.hub.apply(|broker, events| {
            for sub in [
                format!("presence:{room}"),
                format!("typing:{room}"),
                format!("room:{room}"),
            ] {
                let _ = broker.unsubscribe(id, &sub, events);
            }
        });
        self.rooms.remove(&room);
        Ok(None)
    }

    fn send(&mut self, msg: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let body = string(msg, "body")?;
        if body.len() > self.settings.max_body {
            return Err(Refusal(
                "body_too_large",
                format!("body exceeds {} bytes", self.settings.max_body),
            ));
        }
        let destination = match (msg.get("room"), msg.get("to")) {
            (Some(_), _) => {
                let room = self.joined_room(msg)?;
                self.may_use(&room)?;
                Destination::Topic(room)
            }
            (None, Some(_)) => {
                let to = string(msg, "to")?;
                let user = valid_user(to)
                    .ok_or_else(|| Refusal("invalid_user", format!("no such user name {to:?}")))?;
                Destination::UserQueue {
                    user,
                    queue: DM_QUEUE.to_owned(),
                }
            }
            (None, None) => {
                return Err(Refusal(
                    "missing_field",
                    "send needs \"room\" or \"to\"".into(),
                ))
            }
        };
        let reference = msg.get("ref").and_then(Value::as_str).map(str::to_owned);
        // A room message is acknowledged once it is durable: the ack travels with it to storage.
        let durable_ack = {
            let reference = reference.clone();
            Receipt(Arc::new(move |id| {
                frame::encode(
                    OpCode::Text,
                    &serde_json::to_vec(&ack_json(id, reference.as_deref())).unwrap_or_default(),
                )
            }))
        };
        let headers = vec![(
            "content-type".to_owned(),
            "text/plain;charset=utf-8".to_owned(),
        )];
        let body = Bytes::copy_from_slice(body.as_bytes());
        self.sends.push(QueuedSend {
            destination,
            publish: Publish {
                headers,
                body,
                now_ms: now_ms(),
                receipt: Some(durable_ack),
            },
            reference,
        });
        Ok(None)
    }

    /// Publishes the queued sends in one step under the broker's lock, so their fan-out reaches
    /// each subscriber as one batch (one wake-up, one write), and queues their replies.
    fn flush_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let id = self.id;
        let mut sends = std::mem::take(&mut self.sends);
        let results: Vec<_> = self.hub.apply(|broker, events| {
            sends
                .drain(..)
                .map(|q| {
                    let published = broker.publish(id, &q.destination, q.publish, events);
                    (published, q.reference)
                })
                .collect()
        });
        // Keep the (now empty) allocation for the next read.
        self.sends = sends;
        for (published, reference) in results {
            let reply = match published {
                Ok(p) if p.stored => continue,
                // DMs are not stored: accepted is all there is to say.
                Ok(p) => {
                    serde_json::to_vec(&ack_json(p.id, reference.as_deref())).unwrap_or_default()
                }
                Err(e) => {
                    self.errors_in_a_row += 1;
                    error_json(&Refusal("send_failed", e.to_string()), reference)
                }
            };
            self.out.push(reply);
        }
    }

    fn publish(&self, destination: &Destination, publish: Publish) -> Result<Published, Refusal> {
        let id = self.id;
        self.hub
            .apply(|broker, events| broker.publish(id, destination, publish, events))
            .map_err(|e| Refusal("send_failed", e.to_string()))
    }

    fn joined_room(&self, msg: &Map<String, Value>) -> Result<String, Refusal> {
        let room = room_name(string(msg, "room")?)?;
        if !self.rooms.contains(&room) {
            return Err(Refusal("not_joined", format!("join room {room:?} first")));
        }
        Ok(room)
    }

    /// Writes the replies `flush_sends` queued.
    fn write_out(&mut self, conn: &mut Connection) {
        for reply in self.out.drain(..) {
            let _ = conn.send_encoded(frame::encode(OpCode::Text, &reply));
        }
    }

    /// The frame a delivery becomes for this client, or `None` for our own typing.
    fn frame_for(&self, delivery: &Delivery) -> Option<Bytes> {
        let message = &delivery.message;
        let is_typing = message
            .header("destination")
            .is_some_and(|d| d.ends_with(".typing"));
        if is_typing && message.header("sender") == Some(&*self.user) {
            return None;
        }
        // A DM's "to" is its recipient: every session that receives it belongs to that user.
        Some(message.other_wire(|m| json_frame(m, &self.user)).clone())
    }
}

impl Endpoint for RawClient {
    fn on_event(&mut self, conn: &mut Connection, event: Event) {
        let text = match event {
            Event::Message(Message::Text(text)) => text,
            Event::Message(Message::Binary(_)) => {
                let e = error_json(
                    &Refusal("bad_json", "send JSON as text messages".into()),
                    None,
                );
                self.errors_in_a_row += 1;
                let _ = conn.send_encoded(frame::encode(OpCode::Text, &e));
                return;
            }
            _ => return,
        };
        let reply = match self.handle(&text) {
            Ok(reply) => {
                self.errors_in_a_row = 0;
                reply.map(|v| serde_json::to_vec(&v).unwrap_or_default())
            }
            Err((refusal, reference)) => {
                self.errors_in_a_row += 1;
                Some(error_json(&refusal, reference))
            }
        };
        self.write_out(conn);
        if let Some(reply) = reply {
            let _ = conn.send_encoded(frame::encode(OpCode::Text, &reply));
        }
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
            conn.close(CloseCode::POLICY_VIOLATION, "too many errors in a row");
        }
    }

    fn after_events(&mut self, conn: &mut Connection) {
        self.flush_sends();
        self.write_out(conn);
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
            conn.close(CloseCode::POLICY_VIOLATION, "too many errors in a row");
        }
    }

    async fn outbound(&mut self) -> Outbound {
        let expiry = self.expires_ms.map(instant_at);
        let expired = async move {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        if let Some(replay) = self.replays.front_mut() {
            // Polling the receiver by reference keeps it if the driver wakes for something else.
            let frames = replay.await.unwrap_or_default();
            self.replays.pop_front();
            return Outbound::Frames(frames);
        }
        {
            tokio::select! {
                biased;
                () = self.evicted.token().cancelled() => {
                    let (code, reason) = self.evicted.reason();
                    Outbound::Close(code, reason.to_owned())
                }
                () = expired => {
                    let code = CloseCode::from_wire(TOKEN_EXPIRED).unwrap_or(CloseCode::POLICY_VIOLATION);
                    Outbound::Close(code, "token expired".to_owned())
                }
                Some(ack) = self.control.recv() => Outbound::Frames(vec![ack]),
                delivery = self.deliveries.recv() => {
                    let Some(first) = delivery else {
                        return Outbound::Close(CloseCode::INTERNAL_ERROR, String::new());
                    };
                    let mut frames: Vec<Bytes> = self.frame_for(&first).into_iter().collect();
                    while frames.len() < MAX_BATCH {
                        let Some(next) = self.deliveries.try_recv() else { break };
                        frames.extend(self.frame_for(&next));
                    }
                    Outbound::Frames(frames)
                }
            }
        }
    }

    fn finish(&mut self) {
        // Sends already read are published even if the connection is going.
        self.flush_sends();
        let id = self.id;
        self.hub
            .close_session(id, |broker, events| broker.disconnect(id, events));
    }
}

/// Room names: 1-128 of letters, digits, `_ -` (dots are kept for `.typing` / `.presence`).
fn room_name(room: &str) -> Result<String, Refusal> {
    let ok = (1..=128).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(room.to_owned())
    } else {
        Err(Refusal(
            "invalid_room",
            "room names are 1-128 of letters, digits, _ -".into(),
        ))
    }
}

/// A message id, given as a string (as the server sends them) or a number.
fn message_id(v: &Value) -> Result<u64, Refusal> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| Refusal("invalid_field", "message ids are decimal numbers".into()))
}

fn string<'m>(msg: &'m Map<String, Value>, field: &'static str) -> Result<&'m str, Refusal> {
    match msg.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Refusal(
            "invalid_field",
            format!("{field:?} must be a string"),
        )),
        None => Err(Refusal("missing_field", format!("missing field {field:?}"))),
    }
}

/// `{"type":"ack","id":…,"ref":…}`.
fn ack_json(id: u64, reference: Option<&str>) -> Value {
    let mut ack = serde_json::json!({"type": "ack", "id": id.to_string()});
    if let Some(reference) = reference {
        ack["ref"] = Value::from(reference);
    }
    ack
}

fn error_json(refusal: &Refusal, reference: Option<String>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    }
    let e = Error {
        r#type: "error",
        code: refusal.0,
        message: &refusal.1,
        reference,
    };
    serde_json::to_vec(&e).unwrap_or_default()
}

/// What a message, typing or presence announcement looks like to raw clients, `type` first.
#[derive(Serialize, Default)]
struct Outgoing<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    guest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<std::borrow::Cow<'a, str>>,
}

/// Encodes a broker message as the raw protocol's JSON, in a ready WebSocket text frame.
fn json_frame(m: &SharedMessage, recipient: &str) -> Bytes {
    let destination = m.header("destination").unwrap_or_default();
    let sender = m.header("sender");
    let mut out = Outgoing {
        r#type: "message",
        room: None,
        to: None,
        id: m.header("message-id"),
        from: sender,
        user: None,
        guest: m.header("sender-guest") == Some("true"),
        event: None,
        ts: m.header("timestamp").and_then(|t| t.parse().ok()),
        body: Some(String::from_utf8_lossy(m.body())),
    };
    if let Some(topic) = destination.strip_prefix("/topic/") {
        if let Some(room) = topic.strip_suffix(".typing") {
            out = Outgoing {
                r#type: "typing",
                room: Some(room),
                user: sender,
                guest: m.header("sender-guest") == Some("true"),
                ..Outgoing::default()
            };
        } else if let Some(room) = topic.strip_suffix(".presence") {
            out = match m.header("event") {
                Some("delete") => Outgoing {
                    r#type: "deleted",
                    room: Some(room),
                    id: m.header("deleted-id"),
                    ..Outgoing::default()
                },
                event => Outgoing {
                    r#type: "presence",
                    room: Some(room),
                    user: m.header("user"),
                    guest: m.header("guest") == Some("true"),
                    event,
                    ..Outgoing::default()
                },
            };
        } else {
            out.room = Some(topic);
        }
    } else {
        out.to = Some(recipient);
    }
    frame::encode(OpCode::Text, &serde_json::to_vec(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(room_name("general").is_ok());
        assert!(room_name("a.b").is_err());
        assert!(room_name("").is_err());
    }
}
