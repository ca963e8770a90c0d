//! The raw WebSocket JSON protocol at `/ws`: one JSON object per text message, turned into the
//! hub's chat commands ([`ChatSession`]); deliveries come back as JSON built once per message
//! and shared by every raw recipient. See `docs/protocol.md`.

mod reads;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parley_protocol::{CloseCode, Connection, Event, Message};
use parley_stomp::broker::{Published, Receipt};
use parley_stomp::SharedMessage;
use serde_json::{json, Map, Value};

use self::reads::Place;
use crate::auth::{Auth, Authenticated};
use crate::clock::now_ms;
use crate::hub::{
    is_typing_subscription, live_from_stored, Change, ChatSession, ChatSettings, Delivered, Held,
    Hub, JoinAnswer, Next, Notice, Origin, Queued, Refusal, SendExtras, Target, CLOSE_REMOVED,
    CLOSE_UNAUTHORIZED, READ_SUBSCRIPTION,
};
use crate::store::ReadState;
use crate::ws::{deflate, Endpoint, Outbound};

/// Errors in a row after which a client is disconnected (1008) instead of answered.
const MAX_ERRORS_IN_A_ROW: u32 = 20;

/// One raw client.
pub struct RawClient {
    chat: ChatSession,
    auth: Arc<Auth>,
    errors_in_a_row: u32,
    /// An operator ended the session and the client was told why: close next.
    told_removed: bool,
    /// The messages of the current read, handled in order once it is all in (`after_events`).
    inbox: Vec<Message>,
    /// The `ref` of each send queued in `chat`, in order, for its answer.
    send_refs: Vec<Option<String>>,
    /// Cluster mode: the read state of rooms whose `joined` answer is still to come.
    join_reads: HashMap<String, ReadState>,
    /// Deliveries go in the compressed form shared by every such subscriber.
    shared_deflate: bool,
}

/// Where a waiting send goes.
enum Recipient {
    /// A joined room.
    Room(String),
    /// A user, by the name the client gave.
    Named(String),
}

/// What a client reads of a conversation.
enum Read {
    /// A page before `before`.
    History { before: Option<u64>, limit: usize },
    /// Everything after `since`, then live.
    CatchUp { since: u64 },
}

/// A refusal, and the `ref` of the command it answers.
type Failed = (Refusal, Option<String>);

/// What a command did.
enum Step {
    /// Done; this is its answer, if it has one.
    Reply(Option<Bytes>),
    /// A join, still to run (it may wait for storage).
    Join {
        room: String,
        since: Option<u64>,
        reference: Option<String>,
    },
    /// A send still to queue: a direct message (its recipient is looked up), or in cluster mode
    /// one with a client id (storage is asked whether another node had it).
    Send {
        to: Recipient,
        body: String,
        extras: SendExtras,
        reference: Option<String>,
    },
    /// A read of a conversation, still to run (it looks the other person up).
    Conversation {
        with: String,
        read: Read,
        reference: Option<String>,
    },
    /// An edit, deletion or reaction, still to run (it reads its message from storage).
    Change {
        room: String,
        target: u64,
        change: Change,
        reference: Option<String>,
    },
    /// A read mark, still to store.
    Read {
        place: Place,
        id: u64,
        reference: Option<String>,
    },
}

impl RawClient {
    /// Connects an authenticated client (or a guest) to the hub.
    pub fn open(
        hub: &Arc<Hub>,
        auth: Arc<Auth>,
        settings: Arc<ChatSettings>,
        who: Authenticated,
        origin: Origin,
    ) -> Self {
        let mut chat = ChatSession::open(hub, who.identity, settings, origin);
        chat.session().set_expiry(who.expires_ms);
        chat.session().set_revocation(who.revoked);
        Self {
            chat,
            auth,
            errors_in_a_row: 0,
            told_removed: false,
            inbox: Vec::new(),
            send_refs: Vec::new(),
            join_reads: HashMap::new(),
            shared_deflate: false,
        }
    }

    /// Sends deliveries in their compressed form, made once for every subscriber whose
    /// permessage-deflate parameters allow it ([`deflate::shares`]).
    pub fn with_shared_deflate(mut self, shared: bool) -> Self {
        self.shared_deflate = shared;
        self
    }

    /// Names the session in the current span's log lines: a session opened while its upgrade
    /// request was answered, in its connection's span.
    pub fn name_span(&self) {
        self.chat.name_span();
    }

    /// Waits (cluster mode) until this node hears the user's channel ([`ChatSession::until_live`]).
    pub async fn until_live(&self) {
        self.chat.until_live().await;
    }

    /// Handles one client message; returns the reply, if any.
    fn handle(&mut self, message: Message, conn: &mut Connection) -> Result<Step, Failed> {
        let Message::Text(text) = message else {
            return Err((refused("bad_json", "send JSON as text messages"), None));
        };
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| (refused("bad_json", format!("not valid JSON: {e}")), None))?;
        let Value::Object(msg) = value else {
            return Err((refused("bad_json", "expected a JSON object"), None));
        };
        let reference = msg.get("ref").and_then(Value::as_str).map(str::to_owned);
        self.command(&msg, reference.clone(), conn)
            .map_err(|refusal| (refusal, reference))
    }

    /// Carries out one command, but for a join, which may wait for storage: that is returned
    /// for `after_events` to run.
    fn command(
        &mut self,
        msg: &Map<String, Value>,
        reference: Option<String>,
        conn: &mut Connection,
    ) -> Result<Step, Refusal> {
        self.chat.admit()?;
        let kind = string(msg, "type")?;
        if kind != "send" {
            // Everything before this command takes effect first.
            self.flush_sends(conn);
        }
        if let Some(step) = waiting_step(kind, msg, &reference)? {
            return Ok(step);
        }
        let reply = match kind {
            "ping" => Some(wire::text_frame(&json!({"type": "pong"}))),
            "away" => {
                let away = msg.get("away").and_then(Value::as_bool);
                let away = away.ok_or_else(|| refused("invalid_field", "away is true or false"))?;
                let session = self.chat.session();
                session.hub().set_away(session.id(), away);
                None
            }
            "leave" => self.chat.leave(string(msg, "room")?).map(|()| None)?,
            "watch_rooms" => self.chat.watch_rooms().map(|()| None)?,
            "send" => match self.send(msg, reference)? {
                Some(step) => return Ok(step),
                None => None,
            },
            "auth" => Some(self.renew(string(msg, "access_token")?)?),
            "typing" => self.chat.typing(string(msg, "room")?).map(|()| None)?,
            "history" => {
                let room = self.chat.readable(string(msg, "room")?)?;
                let before = msg.get("before").map(message_id).transpose()?;
                self.chat.history(room, before, page_size(msg));
                None
            }
            other => {
                return Err(refused(
                    "unknown_type",
                    format!("unknown message type {other:?}"),
                ))
            }
        };
        Ok(Step::Reply(reply))
    }

    /// Joins `room`, catching up from `since`; the answer, unless it comes later (cluster).
    async fn join(&mut self, room: String, since: Option<u64>) -> Result<Option<Bytes>, Refusal> {
        let answer = self.chat.join(&room, since).await?;
        let read = reads::state_of(&self.chat, &room).await;
        Ok(match answer {
            JoinAnswer::Members { members, last_id } => {
                Some(reads::joined(&room, &members, last_id, read))
            }
            JoinAnswer::Later => {
                self.join_reads.extend(read.map(|r| (room, r)));
                None
            }
        })
    }

    /// Edits, deletes or reacts to message `target` of `room`; the `ack` (with the event's id)
    /// comes once the event is durable.
    async fn change(
        &mut self,
        room: String,
        target: u64,
        change: Change,
        reference: Option<String>,
    ) -> Result<Option<Bytes>, Refusal> {
        let receipt = durable_ack(reference);
        let session = self.chat.session();
        let (id, hub) = (session.id(), session.hub().clone());
        hub.change(
            self.chat.identity(),
            Some(id),
            &room,
            target,
            change,
            Some(receipt),
        )
        .await?;
        Ok(None)
    }

    /// A fresh access token for the same user extends the connection's life.
    fn renew(&mut self, token: &str) -> Result<Bytes, Refusal> {
        let expires_ms = self
            .auth
            .renew(self.chat.identity(), token)
            .map_err(|why| refused("unauthorized", why))?;
        self.chat.session().set_expiry(expires_ms);
        let expires_in = expires_ms.map_or(0, |e| e.saturating_sub(now_ms()) / 1000);
        Ok(wire::text_frame(
            &json!({"type": "authed", "expires_in": expires_in}),
        ))
    }

    /// Queues a room message; a direct message is returned to run (it looks its recipient up).
    fn send(
        &mut self,
        msg: &Map<String, Value>,
        reference: Option<String>,
    ) -> Result<Option<Step>, Refusal> {
        let body = string(msg, "body")?;
        self.chat.check_body(body)?;
        let extras = SendExtras {
            reply_to: msg.get("reply_to").map(message_id).transpose()?,
            client_id: optional_string(msg, "client_id")?.map(str::to_owned),
        };
        let room = match (msg.get("room"), msg.get("to")) {
            (Some(_), _) => string(msg, "room")?,
            (None, Some(_)) => {
                return Ok(Some(Step::Send {
                    to: Recipient::Named(string(msg, "to")?.to_owned()),
                    body: body.to_owned(),
                    extras,
                    reference,
                }))
            }
            (None, None) => return Err(refused("missing_field", "send needs \"room\" or \"to\"")),
        };
        if extras.client_id.is_some() && self.chat.session().hub().is_clustered() {
            // Its client id may have been sent through another node: storage says (async).
            return Ok(Some(Step::Send {
                to: Recipient::Room(room.to_owned()),
                body: body.to_owned(),
                extras,
                reference,
            }));
        }
        // A room message is acknowledged once it is durable: the ack travels with it to storage.
        self.chat.send(
            Target::Room(room),
            body,
            extras,
            durable_ack(reference.clone()),
        )?;
        self.send_refs.push(reference);
        Ok(None)
    }

    /// Reads this user's conversation `with` someone: a history page, or a catch-up.
    async fn conversation(&mut self, with: String, read: Read) -> Result<Option<Bytes>, Refusal> {
        match read {
            Read::History { before, limit } => {
                self.chat.direct_history(&with, before, limit).await?
            }
            Read::CatchUp { since } => self.chat.catch_up_direct(&with, since).await?,
        }
        Ok(None)
    }

    /// Queues a send that needed a wait first: a direct message's recipient ([`Hub::recipient`]),
    /// in cluster mode a client id's earlier send through another node.
    async fn send_later(
        &mut self,
        to: Recipient,
        body: String,
        extras: SendExtras,
        reference: Option<String>,
    ) -> Result<Option<Bytes>, Refusal> {
        let hub = self.chat.session().hub().clone();
        let target = match &to {
            Recipient::Room(room) => Target::Room(room),
            Recipient::Named(name) => Target::User(hub.recipient(name).await?),
        };
        if let Some(client_id) = &extras.client_id {
            self.chat.recall(&target, client_id).await;
        }
        let ack = durable_ack(reference.clone());
        self.chat.send(target, &body, extras, ack)?;
        self.send_refs.push(reference);
        Ok(None)
    }

    /// Publishes the queued sends in one step and writes their answers: a DM is acknowledged
    /// once accepted (DMs are not stored), a room message later, once durable.
    fn flush_sends(&mut self, conn: &mut Connection) {
        let results = self.chat.flush();
        for (result, reference) in results.into_iter().zip(self.send_refs.drain(..)) {
            let reply = match result {
                Ok(Published { stored: true, .. }) => continue,
                Ok(published) => wire::text_frame(&wire::ack(published.id, reference.as_deref())),
                Err(refusal) => {
                    self.errors_in_a_row += 1;
                    wire::error(&refusal, reference)
                }
            };
            let _ = conn.send_encoded(reply);
        }
    }

    /// The frames of what the hub handed this session; deliveries are written by reference.
    fn frames_for(&mut self, next: Next) -> Outbound<Deliveries> {
        let frame = match next {
            Next::Evicted(code, reason) if code == CLOSE_REMOVED && !self.told_removed => {
                // Kicked or banned: said as JSON first, then the close (whose reason may be cut).
                self.told_removed = true;
                return Outbound::Frames(vec![wire::removed(&reason)]);
            }
            Next::Evicted(code, reason) => return Outbound::Close(code, reason),
            Next::Expired => {
                return Outbound::Close(CLOSE_UNAUTHORIZED, "token expired".to_owned())
            }
            Next::Delivery(first) => return Outbound::Ready(Deliveries(first)),
            Next::Held(Held::Replay { messages, .. }) => match messages {
                Ok(messages) => {
                    // In the shape of live messages and events, so a client handles one kind.
                    let user = self.chat.identity().name.clone();
                    let frames = messages
                        .into_iter()
                        .map(|m| wire::message_frame(&live_from_stored(m), &user));
                    return Outbound::Frames(frames.collect());
                }
                Err(()) => wire::error(&refused("storage_error", "catch-up failed"), None),
            },
            Next::Held(Held::Joined {
                room,
                members,
                last_id,
            }) => {
                let read = self.join_reads.remove(&room);
                reads::joined(&room, &members, last_id, read)
            }
            Next::Held(Held::Lost) => return Outbound::Frames(Vec::new()),
            Next::Notice(Notice::Encoded(bytes)) => bytes,
            Next::Notice(Notice::Revoked { room, reason }) => wire::revoked(&room, &reason),
            Next::Notice(Notice::History { room, messages }) => match messages {
                Ok(messages) => wire::history(&room, &self.chat.identity().name, &messages),
                Err(()) => wire::error(&refused("storage_error", "history is unavailable"), None),
            },
        };
        Outbound::Frames(vec![frame])
    }
}

/// Deliveries the hub handed a raw session, the first of a batch ([`RawClient::write_ready`]).
pub struct Deliveries(Queued);

impl Endpoint for RawClient {
    type Ready = Deliveries;

    fn on_event(&mut self, _conn: &mut Connection, event: Event) {
        if let Event::Message(message) = event {
            self.inbox.push(message);
        }
    }

    async fn after_events(&mut self, conn: &mut Connection) {
        let inbox = std::mem::take(&mut self.inbox);
        for message in inbox {
            // Once we closed (too many errors, say), the rest is not acted on. Messages that
            // came before the peer's own close (or before a broken frame) still count: a
            // client may send and close in one go.
            if conn.is_closing() {
                break;
            }
            let outcome = match self.handle(message, conn) {
                Ok(Step::Reply(reply)) => Ok(reply),
                // Boxed: joins are rare, and every idle connection's future is as large as the
                // largest wait of its loop.
                Ok(Step::Join {
                    room,
                    since,
                    reference,
                }) => Box::pin(self.join(room, since))
                    .await
                    .map_err(|refusal| (refusal, reference)),
                Ok(Step::Send {
                    to,
                    body,
                    extras,
                    reference,
                }) => Box::pin(self.send_later(to, body, extras, reference.clone()))
                    .await
                    .map_err(|refusal| (refusal, reference)),
                Ok(Step::Conversation {
                    with,
                    read,
                    reference,
                }) => Box::pin(self.conversation(with, read))
                    .await
                    .map_err(|refusal| (refusal, reference)),
                Ok(Step::Change {
                    room,
                    target,
                    change,
                    reference,
                }) => Box::pin(self.change(room, target, change, reference.clone()))
                    .await
                    .map_err(|refusal| (refusal, reference)),
                Ok(Step::Read {
                    place,
                    id,
                    reference,
                }) => Box::pin(reads::mark(&self.chat, place, id))
                    .await
                    .map(|()| None)
                    .map_err(|refusal| (refusal, reference)),
                Err(failed) => Err(failed),
            };
            let reply = match outcome {
                Ok(reply) => {
                    self.errors_in_a_row = 0;
                    reply
                }
                Err((refusal, reference)) => {
                    self.errors_in_a_row += 1;
                    Some(wire::error(&refusal, reference))
                }
            };
            if let Some(reply) = reply {
                let _ = conn.send_encoded(reply);
            }
            self.close_if_hopeless(conn);
        }
        self.flush_sends(conn);
        self.close_if_hopeless(conn);
    }

    async fn outbound(&mut self) -> Outbound<Deliveries> {
        let next = self.chat.session().next().await;
        self.frames_for(next)
    }

    const PARKS: bool = true;

    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.chat.session().poll_ready(cx)
    }

    fn parks_now(&self) -> bool {
        self.chat.parks()
    }

    /// The batch `first` starts: each message's frame, shared by every raw recipient, written
    /// by reference (the writer copies it when small; no list of frames per wake-up).
    fn write_ready(&mut self, Deliveries(first): Deliveries, mut out: impl FnMut(&Bytes)) {
        let user = self.chat.identity().name.clone();
        let shared = self.shared_deflate;
        for queued in self.chat.session().batch(first) {
            for delivered in queued.iter() {
                if let Some(frame) = frame_for(&delivered, &user, shared) {
                    out(frame);
                }
            }
        }
    }

    fn finish(&mut self) {
        // Sends already read are published even if the connection is going.
        self.chat.close();
    }
}

impl RawClient {
    fn close_if_hopeless(&mut self, conn: &mut Connection) {
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
            conn.close(CloseCode::POLICY_VIOLATION, "too many errors in a row");
        }
    }
}

/// The frame a delivery becomes for `user`'s client, or `None` for their own typing. What it
/// is comes from its subscription, so a room message costs no header lookup.
fn frame_for<'m>(delivered: &Delivered<'m>, user: &str, shared_deflate: bool) -> Option<&'m Bytes> {
    let message: &'m SharedMessage = delivered.message;
    let subscription = &**delivered.subscription;
    if is_typing_subscription(subscription) && message.header("sender") == Some(user) {
        return None;
    }
    if subscription == READ_SUBSCRIPTION {
        return Some(message.other_wire(reads::mark_frame));
    }
    let plain = |m: &SharedMessage| wire::message_frame(m, user);
    Some(if shared_deflate {
        deflate::shared_frame(message, plain)
    } else {
        message.other_wire(plain)
    })
}

fn refused(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

/// A message id, given as a string (as the server sends them) or a number.
fn message_id(v: &Value) -> Result<u64, Refusal> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| refused("invalid_field", "message ids are decimal numbers"))
}

/// The `limit` of a history request (clamped later).
fn page_size(msg: &Map<String, Value>) -> usize {
    let limit = msg.get("limit").and_then(Value::as_u64).unwrap_or(50);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The commands that wait (storage, a lookup) before they are done, parsed: `None` for the
/// others.
fn waiting_step(
    kind: &str,
    msg: &Map<String, Value>,
    reference: &Option<String>,
) -> Result<Option<Step>, Refusal> {
    let step = match kind {
        "join" => {
            let room = ChatSession::room_name(string(msg, "room")?)?;
            let since = msg.get("since").map(message_id).transpose()?;
            Step::Join {
                room,
                since,
                reference: reference.clone(),
            }
        }
        "edit" | "delete" | "react" => {
            let change = match kind {
                "edit" => Change::Edit(string(msg, "body")?.to_owned()),
                "delete" => Change::Delete,
                _ => Change::React {
                    emoji: string(msg, "emoji")?.to_owned(),
                    on: msg.get("on").and_then(Value::as_bool),
                },
            };
            Step::Change {
                room: string(msg, "room")?.to_owned(),
                target: required_id(msg, "id")?,
                change,
                reference: reference.clone(),
            }
        }
        "read" => {
            let with = optional_string(msg, "with")?;
            Step::Read {
                place: match with {
                    Some(with) => Place::With(with.to_owned()),
                    None => Place::Room(string(msg, "room")?.to_owned()),
                },
                id: required_id(msg, "id")?,
                reference: reference.clone(),
            }
        }
        "history" if msg.contains_key("with") => Step::Conversation {
            with: string(msg, "with")?.to_owned(),
            read: Read::History {
                before: msg.get("before").map(message_id).transpose()?,
                limit: page_size(msg),
            },
            reference: reference.clone(),
        },
        "catch_up" => Step::Conversation {
            with: string(msg, "with")?.to_owned(),
            read: Read::CatchUp {
                since: required_id(msg, "since")?,
            },
            reference: reference.clone(),
        },
        _ => return Ok(None),
    };
    Ok(Some(step))
}

/// A required message id field.
fn required_id(msg: &Map<String, Value>, field: &'static str) -> Result<u64, Refusal> {
    let value = msg
        .get(field)
        .ok_or_else(|| refused("missing_field", format!("missing field {field:?}")))?;
    message_id(value)
}

/// A room message's `ack`, sent once it is durable: the ack travels with it to storage.
fn durable_ack(reference: Option<String>) -> Receipt {
    Receipt(Arc::new(move |id| {
        wire::text_frame(&wire::ack(id, reference.as_deref()))
    }))
}

/// An optional string field.
fn optional_string<'m>(
    msg: &'m Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'m str>, Refusal> {
    match msg.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(msg, field).map(Some),
    }
}

fn string<'m>(msg: &'m Map<String, Value>, field: &'static str) -> Result<&'m str, Refusal> {
    match msg.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(refused(
            "invalid_field",
            format!("{field:?} must be a string"),
        )),
        None => Err(refused("missing_field", format!("missing field {field:?}"))),
    }
}
