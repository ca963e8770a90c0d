//! Read state over HTTP: marking a room read (`POST /api/rooms/<room>/read`), every room's
//! counts (`GET /api/unread`), and the counts `GET /api/rooms` adds to its entries. The rules
//! are the hub's ([`Hub::mark_read`]); guests have none.
//!
//! [`Hub::mark_read`]: crate::hub::Hub::mark_read

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parley_stomp::session::Identity;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, respond, storage_error, Api};
use crate::store::ReadState;

/// `{"id":"42"}` (or `42`).
#[derive(Deserialize)]
struct Mark {
    id: Value,
}

impl Api<'_> {
    /// Marks `room` read up to the body's `id`: `200 {"room":…,"last_read":"42"}` (the mark now
    /// stored, which never goes back). Every session of the account hears it.
    pub(super) async fn mark_read(
        &self,
        req: Request<Incoming>,
        room: &str,
    ) -> Response<Full<Bytes>> {
        self.mark(req, room, false).await
    }

    /// Marks the conversation with `peer` read up to the body's `id`:
    /// `200 {"with":…,"last_read":"42"}`.
    pub(super) async fn mark_read_with(
        &self,
        req: Request<Incoming>,
        peer: &str,
    ) -> Response<Full<Bytes>> {
        self.mark(req, peer, true).await
    }

    /// Marks a room, or the conversation `with` someone, read.
    async fn mark(&self, req: Request<Incoming>, place: &str, with: bool) -> Response<Full<Bytes>> {
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let mark: Mark = match self.json_body(req).await {
            Ok(mark) => mark,
            Err(resp) => return resp,
        };
        let id = match &mark.id {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        let Some(id) = id else {
            return error(StatusCode::BAD_REQUEST, "id must be a message id");
        };
        let (marked, key) = if with {
            (self.hub.mark_read_with(&who, place, id).await, "with")
        } else {
            (self.hub.mark_read(&who, place, id).await, "room")
        };
        match marked {
            Ok(last) => respond(
                StatusCode::OK,
                &json!({ key: place, "last_read": last.to_string() }),
            ),
            Err(refusal) => {
                let status = match refusal.code {
                    "forbidden" => StatusCode::FORBIDDEN,
                    "no_such_user" => StatusCode::NOT_FOUND,
                    "guest" => StatusCode::UNAUTHORIZED,
                    "storage_error" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_REQUEST,
                };
                error(status, &refusal.message)
            }
        }
    }

    /// `200 {"rooms":[{"name":…,"last_read":…,"unread":…,"mentions":…}, …]}`: the account's
    /// read state in every room it marked read and may still read, by name.
    pub(super) async fn unread(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        match self.hub.all_read_states(&who).await {
            Ok(found) => {
                let rooms: Vec<Value> = found
                    .into_iter()
                    .map(|(name, state)| {
                        let mut entry = json!({"name": name});
                        add_counts(&mut entry, state);
                        entry
                    })
                    .collect();
                respond(StatusCode::OK, &json!({"rooms": rooms}))
            }
            Err(e) => storage_error(&e),
        }
    }

    /// Adds an account's read state to the entries of a room list (`name` each), read in one
    /// query; guests' entries stay as they are.
    pub(super) async fn with_counts(&self, who: Option<&Identity>, entries: &mut [Value]) {
        let Some(who) = who.filter(|w| !w.guest) else {
            return;
        };
        let names = entries
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        let Some(states) = self.hub.read_states(who, names).await else {
            return;
        };
        for entry in entries {
            let state = entry["name"].as_str().and_then(|n| states.get(n)).copied();
            add_counts(entry, state.unwrap_or_default());
        }
    }
}

/// `"last_read":"40","unread":2,"mentions":1` on a JSON object.
fn add_counts(entry: &mut Value, state: ReadState) {
    entry["last_read"] = Value::from(state.last_read.to_string());
    entry["unread"] = Value::from(state.unread);
    entry["mentions"] = Value::from(state.mentions);
}
