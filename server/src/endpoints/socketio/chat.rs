//! The chat namespace: Socket.IO events turned into commands of the raw JSON protocol, one to
//! one (the event's name is the command's `type`), run by the raw endpoint itself; its answers
//! back as acknowledgements, everything else as events. Room events carry the recovery offset:
//! every room (and conversation) of the session with the last id it received there.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use parley_protocol::{CloseCode, Limits};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::packet;
use crate::auth::{Auth, Authenticated};
use crate::endpoints::hosted::{Hosted, Out};
use crate::endpoints::raw::{Deliveries, RawClient};
use crate::hub::{ChatSettings, Hub, Origin, Protocol, Transport};
use crate::ws::Outbound;

/// What the chat sends on its own ([`ChatNsp::outbound`]).
pub type Sent = Outbound<Deliveries>;

/// Most rooms and conversations an offset may name.
pub const MAX_OFFSET_ENTRIES: usize = 1024;
/// Acknowledgements a session may owe at once.
const MAX_AWAITED: usize = 1024;
/// Longest offset accepted back.
const MAX_OFFSET: usize = 64 * 1024;
/// The `ref` of a recovery's rejoin: its refusal names the room.
const REJOIN: &str = "rejoin:";
/// Events whose second argument is the offset: they have an id in a room's sequence.
const SEQUENCED: [&str; 4] = ["message", "edit", "delete", "reaction"];

/// What a command's acknowledgement waits for.
#[derive(Debug, PartialEq, Eq)]
enum Awaited {
    /// An answer carrying our `ref` (`ack`, `error`).
    Ref,
    /// `joined` for this room.
    Joined(String),
    /// `history` of this room or conversation.
    History(String),
    /// `pong`.
    Pong,
    /// `authed`.
    Authed,
    /// Nothing: the command has no answer but an error, so `ok` once it ran without one.
    Nothing,
}

/// The head of a raw JSON message: what routing it needs, nothing copied.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    with: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last_id: Option<Cow<'a, str>>,
}

/// A session connected to the chat namespace.
pub struct ChatNsp {
    raw: Hosted<RawClient>,
    me: String,
    /// Room (or `@peer` for a conversation) → the last id the client received there.
    positions: BTreeMap<String, u64>,
    /// Acknowledgements owed, by ack id.
    awaited: HashMap<u64, Awaited>,
    /// Joins under way: room → where their catch-up starts.
    joining: HashMap<String, Option<u64>>,
    /// Commands of the current read, as raw JSON.
    batch: Vec<Bytes>,
    /// A leave changed the offset: the client hears the new one.
    left: bool,
    out: Vec<Out>,
}

/// Why the session must end.
pub enum Ended {
    /// The raw endpoint closed (token expired, too many errors, a slow consumer, shutdown).
    Closed(u16, String),
}

impl ChatNsp {
    /// Connects `who`; `resume` are the positions of a recovered session (its offset).
    pub fn open(
        hub: &Arc<Hub>,
        auth: Arc<Auth>,
        chat: Arc<ChatSettings>,
        who: Authenticated,
        max: usize,
        address: IpAddr,
    ) -> Self {
        let me = who.identity.name.to_string();
        let origin = Origin::new(Protocol::SocketIo, Transport::EngineIo, address);
        let client = RawClient::open(hub, auth, chat, who, origin);
        Self {
            raw: Hosted::new(client, Limits::new(max, max)),
            me,
            positions: BTreeMap::new(),
            awaited: HashMap::new(),
            joining: HashMap::new(),
            batch: Vec::new(),
            left: false,
            out: Vec::new(),
        }
    }

    /// Rejoins every room of a recovered offset with `since`, and catches up its conversations.
    pub fn resume(&mut self, positions: BTreeMap<String, u64>) {
        for (place, since) in &positions {
            let command = match place.strip_prefix('@') {
                Some(with) => json!({"type": "catch_up", "with": with, "since": since.to_string()}),
                None => {
                    self.joining.insert(place.clone(), Some(*since));
                    let reference = format!("{REJOIN}{place}");
                    json!({"type": "join", "room": place, "since": since.to_string(), "ref": reference})
                }
            };
            self.batch.push(Bytes::from(command.to_string()));
        }
        self.positions = positions;
    }

    /// Queues one event as a raw command; an immediate answer (a malformed event) goes to
    /// `reply`.
    pub fn event(&mut self, name: &str, args: &[Value], ack: Option<u64>, reply: &mut Vec<Bytes>) {
        if ack.is_some() && self.awaited.len() >= MAX_AWAITED {
            // Answers that never come (a storage error answers a page with no `ref`) must not
            // pile up: past the bound, commands with acknowledgements wait for room.
            let why = "too many acknowledgements outstanding";
            let error = json!({"type": "error", "code": "busy", "message": why});
            return reply.push(answer(ack, error));
        }
        let fields = match command_fields(name, args) {
            Ok(fields) => fields,
            Err(why) => {
                let error = json!({"type": "error", "code": "invalid_field", "message": why});
                return reply.push(answer(ack, error));
            }
        };
        let mut command = Map::new();
        command.insert("type".into(), Value::from(name));
        command.extend(fields);
        if let Some(ack) = ack {
            command.insert("ref".into(), Value::from(ack.to_string()));
            self.awaited.insert(ack, awaited(name, &command));
        }
        self.track(name, &command);
        self.batch
            .push(Bytes::from(Value::Object(command).to_string()));
    }

    /// An event with binary attachments: the chat's fields are text.
    pub fn binary_event(ack: Option<u64>, reply: &mut Vec<Bytes>) {
        let why = "binary attachments are not chat text";
        reply.push(answer(
            ack,
            json!({"type": "error", "code": "invalid_field", "message": why}),
        ));
    }

    /// What joins and leaves change in the offset.
    fn track(&mut self, name: &str, command: &Map<String, Value>) {
        let room = command.get("room").and_then(Value::as_str);
        match (name, room) {
            // Only names that can be rooms, and as many as an offset holds: a refused join
            // leaves its entry until the next join of that room.
            ("join", Some(room))
                if valid_place(room) && self.joining.len() < MAX_OFFSET_ENTRIES =>
            {
                let since = command.get("since").and_then(as_id);
                self.joining.insert(room.to_owned(), since);
            }
            ("leave", Some(room)) => {
                // A join still answering in this read is not rejoined by a recovery.
                self.joining.remove(room);
                self.left |= self.positions.remove(room).is_some();
            }
            _ => {}
        }
    }

    /// Runs the queued commands; their answers go to `into` as Engine.IO messages.
    pub async fn run(&mut self, into: &mut Vec<Bytes>) -> Result<(), Ended> {
        let batch: Vec<Bytes> = self.batch.drain(..).collect();
        let ran: Vec<u64> = self
            .awaited
            .iter()
            .filter(|(_, a)| **a == Awaited::Nothing)
            .map(|(ack, _)| *ack)
            .collect();
        self.raw.feed(batch).await;
        let ended = self.translate(into);
        // Commands with no answer of their own: `ok`, unless an error answered them.
        for ack in ran {
            if self.awaited.remove(&ack).is_some() {
                into.push(answer(Some(ack), json!({"type": "ok"})));
            }
        }
        if std::mem::take(&mut self.left) {
            into.push(self.offset_event());
        }
        ended
    }

    /// Waits for something the raw endpoint sends on its own.
    pub async fn outbound(&mut self) -> Sent {
        self.raw.outbound().await
    }

    /// Takes in what [`ChatNsp::outbound`] returned; the messages go to `into`.
    pub fn apply(&mut self, sent: Sent, into: &mut Vec<Bytes>) -> Result<(), Ended> {
        self.raw.apply(sent);
        self.translate(into)
    }

    /// Closes the raw endpoint (the session is ending).
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.raw.close(code, reason);
    }

    /// Everything the raw endpoint wrote, as Socket.IO packets.
    fn translate(&mut self, into: &mut Vec<Bytes>) -> Result<(), Ended> {
        let mut out = std::mem::take(&mut self.out);
        self.raw.drain(&mut out);
        let mut ended = Ok(());
        for item in out.drain(..) {
            match item {
                Out::Message(json) => self.message(json, into),
                Out::Close(code, reason) => ended = Err(Ended::Closed(code, reason)),
            }
        }
        self.out = out;
        ended
    }

    /// One raw message: an acknowledgement if it answers one, else an event.
    fn message(&mut self, json: Bytes, into: &mut Vec<Bytes>) {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(&json) else {
            return;
        };
        if let Some(ack) = head
            .reference
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
        {
            if self.awaited.remove(&ack).is_some() {
                return into.push(answer_without_ref(ack, &json));
            }
        }
        if let Some(room) = head
            .reference
            .as_deref()
            .and_then(|r| r.strip_prefix(REJOIN))
        {
            return self.rejoin_refused(room.to_owned(), &json, into);
        }
        let kind = head.kind.as_ref();
        let owed = match kind {
            "joined" => {
                let room = head.room.as_deref().unwrap_or_default();
                self.joined(room, head.last_id.as_deref().and_then(|i| i.parse().ok()));
                Some(Awaited::Joined(room.to_owned()))
            }
            "history" => Some(Awaited::History(place_of(&head).to_lowercase())),
            "pong" => Some(Awaited::Pong),
            "authed" => Some(Awaited::Authed),
            _ => None,
        };
        if let Some(owed) = owed {
            // The oldest command waiting for this kind of answer.
            let ack = self
                .awaited
                .iter()
                .filter(|(_, a)| **a == owed)
                .map(|(k, _)| *k)
                .min();
            if let Some(ack) = ack {
                self.awaited.remove(&ack);
                into.push(packet::encode("3", "/", Some(ack), &wrap(&json)));
            } else {
                into.push(event_packet(kind, &json, None));
            }
            if kind == "joined" {
                into.push(self.offset_event());
            }
            return;
        }
        let offset = SEQUENCED.contains(&kind).then(|| self.advance(&head));
        into.push(event_packet(kind, &json, offset.flatten().as_deref()));
    }

    /// A recovery could not rejoin `room` (the user may no longer read it, say): the client
    /// hears which, and the room leaves the offset.
    fn rejoin_refused(&mut self, room: String, json: &[u8], into: &mut Vec<Bytes>) {
        let mut error: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut error {
            fields.remove("ref");
            fields.insert("room".into(), Value::from(room.as_str()));
        }
        self.joining.remove(&room);
        // A lasting refusal drops the room; anything else (a rate, storage) keeps its place for
        // the next recovery.
        let code = error
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if matches!(
            code,
            "forbidden" | "no_such_room" | "invalid_room" | "invalid_field"
        ) {
            self.positions.remove(&room);
        }
        into.push(packet::event("/", &json!(["error", error])));
        into.push(self.offset_event());
    }

    /// A join's answer: the room's place in the offset.
    /// A place that is already in the offset stays where it is: a join of a room the client is
    /// in answers the room's newest id, which messages still on their way to the client are
    /// below. A join not tracked (left in the same read, or past the offset's size) adds none.
    fn joined(&mut self, room: &str, last_id: Option<u64>) {
        let Some(since) = self.joining.remove(room) else {
            return;
        };
        let at = since.or(last_id).unwrap_or(0);
        self.positions.entry(room.to_owned()).or_insert(at);
    }

    /// A room event arrived: its place moves to it; the offset to send with it.
    fn advance(&mut self, head: &Head<'_>) -> Option<String> {
        let id = head.id.as_deref()?.parse::<u64>().ok()?;
        let place = match (&head.room, &head.to) {
            (Some(room), _) => room.to_string(),
            (None, Some(to)) => {
                let from = head.from.as_deref().unwrap_or_default();
                format!("@{}", if from == self.me { to.as_ref() } else { from })
            }
            (None, None) => return None,
        };
        // A room is in the offset from its `joined` on; a conversation from its first message.
        // Ids of a room (and of a conversation) are consecutive, so a place moves only to the
        // next one: after a gap (a catch-up cut short, say) it stays before it, and a recovery
        // repeats messages rather than skipping any.
        let room_for_more = self.positions.len() < MAX_OFFSET_ENTRIES;
        match self.positions.get_mut(&place) {
            Some(at) if id == *at + 1 => *at = id,
            Some(_) => {}
            None if place.starts_with('@') && room_for_more => {
                self.positions.insert(place, id);
            }
            None => {}
        }
        Some(self.offset())
    }

    /// The offset: `place:id` for every room and conversation, comma-separated.
    fn offset(&self) -> String {
        let mut offset = String::new();
        for (place, id) in &self.positions {
            if !offset.is_empty() {
                offset.push(',');
            }
            let _ = write!(offset, "{place}:{id}");
        }
        offset
    }

    /// `offset` with the offset alone, so the client keeps it.
    fn offset_event(&self) -> Bytes {
        packet::event("/", &json!(["offset", self.offset()]))
    }
}

/// A room or user name as an offset may hold it.
fn valid_place(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A client's offset back: the positions it names, or `None` if it is not one of ours.
pub fn parse_offset(offset: &str) -> Option<BTreeMap<String, u64>> {
    if offset.len() > MAX_OFFSET {
        return None;
    }
    let mut positions = BTreeMap::new();
    for entry in offset.split(',').filter(|e| !e.is_empty()) {
        let (place, id) = entry.rsplit_once(':')?;
        let name = place.strip_prefix('@').unwrap_or(place);
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid || positions.len() >= MAX_OFFSET_ENTRIES {
            return None;
        }
        positions.insert(place.to_owned(), id.parse().ok()?);
    }
    Some(positions)
}

/// The raw command's fields from an event's arguments: one object, or the positional forms
/// (`join(room, since)`, `send(room, body)`, …).
fn command_fields(name: &str, args: &[Value]) -> Result<Map<String, Value>, &'static str> {
    let mut fields = match args.first() {
        None => Map::new(),
        Some(Value::Object(fields)) => fields.clone(),
        Some(Value::String(_)) => {
            let names: &[&str] = match name {
                "join" => &["room", "since"],
                "send" => &["room", "body"],
                "history" => &["room", "before"],
                "leave" | "typing" => &["room"],
                _ => return Err("give the command's fields as one object"),
            };
            names
                .iter()
                .zip(args)
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect()
        }
        Some(_) => return Err("give the command's fields as one object"),
    };
    fields.remove("type");
    fields.remove("ref");
    Ok(fields)
}

/// What answers `command`.
fn awaited(name: &str, command: &Map<String, Value>) -> Awaited {
    let field = |f: &str| {
        command
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match name {
        "send" | "edit" | "delete" | "react" => Awaited::Ref,
        "join" => Awaited::Joined(field("room")),
        // Names are answered in their stored spelling.
        "history" => Awaited::History(match command.get("with") {
            Some(_) => format!("@{}", field("with")).to_lowercase(),
            None => field("room").to_lowercase(),
        }),
        "ping" => Awaited::Pong,
        "auth" => Awaited::Authed,
        _ => Awaited::Nothing,
    }
}

fn place_of(head: &Head<'_>) -> String {
    match (&head.room, &head.with) {
        (_, Some(with)) => format!("@{with}"),
        (Some(room), None) => room.to_string(),
        (None, None) => String::new(),
    }
}

fn as_id(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        other => other.as_u64(),
    }
}

/// `[value]`: an acknowledgement's arguments.
fn wrap(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 2);
    out.push(b'[');
    out.extend_from_slice(json);
    out.push(b']');
    out
}

/// An acknowledgement carrying `value` (or, without an ack id, the `error` event).
fn answer(ack: Option<u64>, value: Value) -> Bytes {
    match ack {
        Some(ack) => packet::encode("3", "/", Some(ack), json!([value]).to_string().as_bytes()),
        None => packet::event("/", &json!(["error", value])),
    }
}

/// An answer carrying our `ref`, as the acknowledgement `ack` (the `ref` was ours, not theirs).
fn answer_without_ref(ack: u64, json: &[u8]) -> Bytes {
    let mut value: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.remove("ref");
    }
    answer(Some(ack), value)
}

/// `42["<kind>",<json>(,"<offset>")]`, built around the shared JSON without parsing it.
fn event_packet(kind: &str, json: &[u8], offset: Option<&str>) -> Bytes {
    let mut out =
        BytesMut::with_capacity(json.len() + kind.len() + 16 + offset.map_or(0, str::len));
    out.extend_from_slice(b"42[\"");
    // Our own type names: letters and `_`, nothing to escape.
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(json);
    if let Some(offset) = offset {
        // Room names, user names and digits: nothing to escape.
        out.extend_from_slice(b",\"");
        out.extend_from_slice(offset.as_bytes());
        out.put_u8(b'"');
    }
    out.put_u8(b']');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_refuse_what_is_not_ours() {
        let parsed = parse_offset("general:42,@bob:7,x-y_z:0").unwrap();
        assert_eq!(parsed.get("general"), Some(&42));
        assert_eq!(parsed.get("@bob"), Some(&7));
        assert_eq!(parse_offset("").unwrap().len(), 0);
        for bad in ["general", "a:b", "a b:1", ":1", "a:1,,@:2", "a\":1"] {
            assert!(parse_offset(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn positional_arguments_name_the_fields() {
        let fields = command_fields("send", &[json!("general"), json!("hi")]).unwrap();
        assert_eq!(
            Value::Object(fields),
            json!({"room": "general", "body": "hi"})
        );
        let fields =
            command_fields("join", &[json!({"room": "a", "ref": "x", "type": "y"})]).unwrap();
        assert_eq!(Value::Object(fields), json!({"room": "a"}));
        assert!(command_fields("send", &[json!(1)]).is_err());
        assert!(command_fields("edit", &[json!("a")]).is_err());
    }

    #[test]
    fn events_wrap_the_shared_json() {
        let e = event_packet(
            "message",
            br#"{"type":"message","id":"1"}"#,
            Some("general:1"),
        );
        assert_eq!(
            &e[..],
            br#"42["message",{"type":"message","id":"1"},"general:1"]"#
        );
        let a = answer_without_ref(5, br#"{"type":"ack","id":"9","ref":"5"}"#);
        assert_eq!(&a[..], br#"435[{"type":"ack","id":"9"}]"#);
    }
}
