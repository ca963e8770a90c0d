//! Direct-message conversations over HTTP: the list of yours, and a conversation's history.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use super::rooms::page;
use super::{error, respond, storage_error, Api};
use crate::endpoints::raw::wire::MessageJson;
use crate::hub::Refusal;
use crate::store;

/// Most conversations listed.
const MAX_CONVERSATIONS: usize = 500;

impl Api<'_> {
    /// `GET /api/dms?limit=`: the caller's conversations, the latest first, with read state:
    /// `{"conversations":[{"with":"bob","last_id":"12","last_ts":…,"last_read":"10","unread":2}]}`.
    pub(super) async fn conversations(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        if let Err(why) = who.scope.reads(None) {
            return error(StatusCode::FORBIDDEN, &why);
        }
        let limit = match page(req.uri().query()) {
            Ok((_, limit)) => limit.min(MAX_CONVERSATIONS),
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        let name = who.name.to_string();
        let found = store::run(self.hub.store(), move |s| s.conversations(&name, limit)).await;
        let list = match found {
            Ok(list) => list,
            Err(e) => return storage_error(&e),
        };
        let streams = list.iter().map(|c| c.room.clone()).collect();
        let states = self
            .hub
            .read_states(&who, streams)
            .await
            .unwrap_or_default();
        let list: Vec<_> = list
            .into_iter()
            .map(|c| {
                let mut entry = json!({
                    "with": c.peer,
                    "last_id": c.last_id.to_string(),
                    "last_ts": c.last_ts,
                });
                if let Some(read) = states.get(&c.room) {
                    entry["last_read"] = json!(read.last_read.to_string());
                    entry["unread"] = json!(read.unread);
                }
                entry
            })
            .collect();
        respond(StatusCode::OK, &json!({ "conversations": list }))
    }

    /// `GET /api/dms/<user>/messages?before=&limit=`: a page of the caller's conversation with
    /// `user`, oldest first, in the shape of room history.
    pub(super) async fn conversation_history(
        &self,
        req: &Request<Incoming>,
        peer: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let (before, limit) = match page(req.uri().query()) {
            Ok(page) => page,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        let stream = match self.hub.conversation_with(&who, peer).await {
            Ok(stream) => stream,
            Err(refusal) => return refused(&refusal),
        };
        match self.hub.history(stream, before, limit).await {
            Ok(messages) => {
                let messages: Vec<MessageJson<'_>> =
                    messages.iter().map(MessageJson::from).collect();
                respond(StatusCode::OK, &json!({"with": peer, "messages": messages}))
            }
            Err(e) => storage_error(&e),
        }
    }
}

fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let status = match refusal.code {
        "no_such_user" => StatusCode::NOT_FOUND,
        "forbidden" => StatusCode::FORBIDDEN,
        "invalid_user" => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &refusal.message)
}
