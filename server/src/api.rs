//! The JSON REST API for the browser and tools: rooms and their history.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use parley_stomp::destination::Destination;

use crate::stomp::StompHub;
use crate::store::{Room, Store, StoredMessage};

/// Largest request body accepted.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Default and largest page of history.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// One stored message as JSON, in the shape of the raw protocol's `message`.
#[derive(Serialize)]
pub struct MessageJson<'a> {
    r#type: &'static str,
    room: &'a str,
    id: String,
    from: &'a str,
    ts: u64,
    body: &'a str,
}

impl<'a> From<&'a StoredMessage> for MessageJson<'a> {
    fn from(m: &'a StoredMessage) -> Self {
        Self {
            r#type: "message",
            room: &m.room,
            id: m.id.to_string(),
            from: &m.from,
            ts: m.ts,
            body: &m.body,
        }
    }
}

/// Serves `/api/...`.
pub async fn handle(hub: Arc<StompHub>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let store = hub.store().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["rooms"]) => {
            blocking(
                move || store.rooms(),
                |rooms| {
                    let list: Vec<_> = rooms
                        .iter()
                        .map(|r| json!({"name": r.name, "private": r.private}))
                        .collect();
                    (StatusCode::OK, json!(list))
                },
            )
            .await
        }
        (&Method::POST, ["rooms"]) => create_room(store, req).await,
        (&Method::GET, ["rooms", room, "members"]) => {
            if !valid_room(room) {
                return error(StatusCode::BAD_REQUEST, "invalid room name");
            }
            let topic = Destination::Topic((*room).to_owned());
            let members = hub.apply(|broker, _| broker.members(&topic));
            let members: Vec<&str> = members.iter().map(|m| &**m).collect();
            respond(StatusCode::OK, &json!(members))
        }
        (&Method::GET, ["rooms", room, "messages"]) => {
            let room = (*room).to_owned();
            if !valid_room(&room) {
                return error(StatusCode::BAD_REQUEST, "invalid room name");
            }
            let (before, limit) = match page(req.uri().query()) {
                Ok(page) => page,
                Err(why) => return error(StatusCode::BAD_REQUEST, why),
            };
            let name = room.clone();
            blocking(
                move || store.before(&name, before, limit),
                move |messages| {
                    let messages: Vec<MessageJson<'_>> =
                        messages.iter().map(MessageJson::from).collect();
                    (StatusCode::OK, json!({"room": room, "messages": messages}))
                },
            )
            .await
        }
        (_, ["rooms"] | ["rooms", _, "messages" | "members"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn create_room(store: Arc<dyn Store>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    #[derive(Deserialize)]
    struct NewRoom {
        name: String,
        #[serde(default)]
        private: bool,
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let new: NewRoom = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"name\",\"private\"}}: {e}"),
            )
        }
    };
    if !valid_room(&new.name) {
        return error(
            StatusCode::BAD_REQUEST,
            "room names are 1-128 of letters, digits, _ -",
        );
    }
    let room = Room {
        name: new.name,
        private: new.private,
    };
    let answer = json!({"name": room.name, "private": room.private});
    blocking(
        move || store.create_room(&room),
        move |created| {
            if created {
                (StatusCode::CREATED, answer)
            } else {
                (StatusCode::CONFLICT, json!({"error": "room exists"}))
            }
        },
    )
    .await
}

/// Room names: 1-128 of letters, digits, `_ -`.
pub fn valid_room(room: &str) -> bool {
    (1..=128).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn page(query: Option<&str>) -> Result<(Option<u64>, usize), &'static str> {
    let (mut before, mut limit) = (None, DEFAULT_PAGE);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("before", v)) => {
                before = Some(v.parse().map_err(|_| "before must be a message id")?)
            }
            Some(("limit", v)) => limit = v.parse().map_err(|_| "limit must be a number")?,
            _ => {}
        }
    }
    Ok((before, limit.clamp(1, MAX_PAGE)))
}

/// Runs a store call off the async runtime and answers with `ok`'s JSON, or 500.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ok: impl FnOnce(T) -> (StatusCode, serde_json::Value),
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => {
            let (status, body) = ok(value);
            respond(status, &body)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storage error");
            error(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, &json!({"error": message}))
}
