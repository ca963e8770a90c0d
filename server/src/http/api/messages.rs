//! A room's messages over HTTP: posting, editing, deleting and reacting to them (history pages
//! are in `rooms`). A post is sent as a raw client sends ([`ChatSession`], a durable receipt);
//! each change goes through the hub's one set of rules ([`Hub::change`]).
//!
//! [`Hub::change`]: crate::hub::Hub::change

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parley_stomp::broker::Receipt;
use parley_stomp::destination::RoomName;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, refused, respond, Api};
use crate::hub::{Change, ChatSession, Next, Notice, SendExtras, Target};
use crate::metrics::{Protocol, Transport};

/// Longest wait for a post to be durable; storage that slow answers 503 (the message may still
/// be stored: a retry with the same `client_id` is safe).
const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// Which change a request asks for.
#[derive(Clone, Copy, Debug)]
enum Edit {
    /// `DELETE …/messages/<id>`.
    Delete,
    /// `PATCH …/messages/<id>` with `{"body":…}`.
    Text,
    /// `POST …/messages/<id>/reactions` with `{"emoji":…,"on":true|false}` (`on` absent: toggle).
    Reaction,
}

#[derive(Deserialize)]
struct EditBody {
    body: String,
}

/// `POST …/messages`: what a raw `send` to a room carries.
#[derive(Deserialize)]
struct PostBody {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
    /// A message id, as a string (as the server sends them) or a number.
    #[serde(default)]
    reply_to: Option<Value>,
}

#[derive(Deserialize)]
struct ReactionBody {
    emoji: String,
    on: Option<bool>,
}

impl Api<'_> {
    /// `POST /api/rooms/<room>/messages`: `201 {"id","room","ts","sender"}` once the message is
    /// durable, with what every other client receives of it.
    pub(super) async fn post_message(
        &self,
        req: Request<Incoming>,
        room: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let post = match self.json_body::<PostBody>(req).await {
            Ok(post) => post,
            Err(resp) => return resp,
        };
        let reply_to = match post.reply_to.as_ref().map(message_id) {
            Some(None) => return error(StatusCode::BAD_REQUEST, "message ids are decimal numbers"),
            reply_to => reply_to.flatten(),
        };
        // Posting creates no room: a raw client's join is what creates one, with its rules.
        if RoomName::parse(room).is_ok() && !self.hub.acl().exists(room) {
            return error(StatusCode::NOT_FOUND, "no such room");
        }
        let rate = self.chat.rate_limit;
        if !self.posts.take(&who.name, rate) {
            let why = format!("more than {rate} messages per second");
            return error(StatusCode::TOO_MANY_REQUESTS, &why);
        }
        let extras = SendExtras {
            reply_to,
            client_id: post.client_id,
        };
        // A session for this one message: its receipt comes to it once the message is durable.
        let mut chat = ChatSession::open(
            self.hub,
            who,
            self.chat.clone(),
            (Protocol::Raw, Transport::Http),
        );
        if let (Some(client_id), true) = (&extras.client_id, self.hub.is_clustered()) {
            // Its client id may have been sent through another node: storage says.
            chat.recall(&Target::Room(room), client_id).await;
        }
        // The receipt's bytes are this session's whole wire format: the message's id.
        let receipt = Receipt(Arc::new(|id| Bytes::from(id.to_string())));
        if let Err(refusal) = chat.post(room, &post.body, extras, receipt) {
            return refused(&refusal);
        }
        if let Some(Err(refusal)) = chat.flush().pop() {
            return refused(&refusal);
        }
        let durable = tokio::time::timeout(DURABLE_WAIT, durable_id(&mut chat)).await;
        chat.close();
        let id = match durable {
            Ok(Some(id)) => id,
            Ok(None) => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage error"),
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "storage is not keeping up"),
        };
        self.posted(room, id).await
    }

    /// The `201` for message `id` of `room`, as stored: its sender and timestamp are what
    /// every client received (a retried `client_id`'s are the first send's).
    async fn posted(&self, room: &str, id: u64) -> Response<Full<Bytes>> {
        let name = room.to_owned();
        let found = self.store(move |s| s.before(&name, Some(id + 1), 1)).await;
        match found.map(|page| page.into_iter().find(|m| m.id == id)) {
            Ok(Some(m)) => respond(
                StatusCode::CREATED,
                &json!({"id": id.to_string(), "room": room, "ts": m.ts, "sender": m.from}),
            ),
            Ok(None) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage error"),
            Err(resp) => resp,
        }
    }

    /// `DELETE /api/rooms/<room>/messages/<id>`.
    pub(super) async fn delete_message(
        &self,
        req: Request<Incoming>,
        room: &str,
        id: &str,
    ) -> Response<Full<Bytes>> {
        self.change_message(req, room, id, Edit::Delete).await
    }

    /// `PATCH /api/rooms/<room>/messages/<id>`.
    pub(super) async fn edit_message(
        &self,
        req: Request<Incoming>,
        room: &str,
        id: &str,
    ) -> Response<Full<Bytes>> {
        self.change_message(req, room, id, Edit::Text).await
    }

    /// `POST /api/rooms/<room>/messages/<id>/reactions`.
    pub(super) async fn react_to_message(
        &self,
        req: Request<Incoming>,
        room: &str,
        id: &str,
    ) -> Response<Full<Bytes>> {
        self.change_message(req, room, id, Edit::Reaction).await
    }

    /// Edits, deletes or reacts to message `id` of `room`; `200 {"id":<the event's id>}` once
    /// it is durable.
    async fn change_message(
        &self,
        req: Request<Incoming>,
        room: &str,
        id: &str,
        edit: Edit,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let Ok(id) = id.parse::<u64>() else {
            return error(StatusCode::BAD_REQUEST, "message ids are numbers");
        };
        let change = match edit {
            Edit::Delete => Change::Delete,
            Edit::Text => match self.json_body::<EditBody>(req).await {
                Ok(edit) => Change::Edit(edit.body),
                Err(resp) => return resp,
            },
            Edit::Reaction => match self.json_body::<ReactionBody>(req).await {
                Ok(r) => Change::React {
                    emoji: r.emoji,
                    on: r.on,
                },
                Err(resp) => return resp,
            },
        };
        let published = match self.hub.change(&who, None, room, id, change, None).await {
            Ok(published) => published,
            Err(refusal) => return refused(&refusal),
        };
        // Answered once durable, so what the caller reads next shows it.
        if !self.hub.durable().await {
            return error(StatusCode::SERVICE_UNAVAILABLE, "storage is not keeping up");
        }
        // In cluster mode storage numbers the event: its id is not known here.
        let id = (published.id > 0).then(|| published.id.to_string());
        respond(StatusCode::OK, &json!({ "id": id }))
    }
}

/// The id a post's receipt carries, once its message is durable; `None` if the session ended
/// first (storage failed). What else reaches the session (its DMs, read marks) is not its
/// business.
async fn durable_id(chat: &mut ChatSession) -> Option<u64> {
    loop {
        match chat.session().next().await {
            Next::Notice(Notice::Encoded(id)) => {
                return std::str::from_utf8(&id).ok()?.parse().ok()
            }
            Next::Evicted(..) | Next::Expired => return None,
            _ => {}
        }
    }
}

/// A message id, given as a string (as the server sends them) or a number.
fn message_id(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}
