//! A room's messages over HTTP: editing, deleting and reacting to them (history pages are in
//! `rooms`). Each change goes through the hub's one set of rules ([`Hub::change`]).
//!
//! [`Hub::change`]: crate::hub::Hub::change

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::{error, respond, Api};
use crate::hub::{Change, Refusal};

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

#[derive(Deserialize)]
struct ReactionBody {
    emoji: String,
    on: Option<bool>,
}

impl Api<'_> {
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

/// A refused change as its HTTP answer.
fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let status = match refusal.code {
        "forbidden" | "too_late" => StatusCode::FORBIDDEN,
        "no_such_message" => StatusCode::NOT_FOUND,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "busy" | "storage_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "storage_error" | "send_failed" => StatusCode::INTERNAL_SERVER_ERROR,
        "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &refusal.message)
}
