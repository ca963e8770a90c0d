//! The JSON REST API for the browser and tools (`/api/…`): routing, who is calling, and the
//! answers' shape. Accounts and tokens are in `account`, rooms, members and history in `rooms`,
//! read state in `reads`, direct-message conversations in `direct`, posts, edits and reactions
//! in `messages`, member details and leaving in `members`, the directory and who is online in
//! `users`, the SSE room feed's request in `feed` (the feed itself is `endpoints::sse`),
//! personal access tokens in `tokens`, operators' calls in `admin`. See `docs/auth.md`.

mod account;
mod admin;
mod direct;
mod feed;
mod identities;
mod members;
mod messages;
mod reads;
mod rooms;
mod tokens;
mod users;

pub(super) use account::{secure_cookies, set_cookie, set_session_cookie};
pub(super) use identities::signup_cookie;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use parley_stomp::destination::RoomName;
use parley_stomp::session::{Identity, Scope};
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::auth::{bearer, query_token, session_cookie, Auth, Authenticated};
use crate::endpoints::sse::FeedSettings;
use crate::endpoints::streaming::{whole, Reply};
use crate::hub::{ChangeRates, ChatSettings, Hub, Refusal};
use crate::store::{self, Store};

/// Largest request body accepted.
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// What the API works with, for one request from `peer`.
pub struct Api<'a> {
    /// The chat hub.
    pub hub: &'a Arc<Hub>,
    /// Accounts and tokens.
    pub auth: &'a Arc<Auth>,
    /// Where STOMP over TCP listens, if it does.
    pub stomp_tcp: Option<SocketAddr>,
    /// Where STOMP over TLS listens, if it does.
    pub stomp_tls: Option<SocketAddr>,
    /// The client's address.
    pub peer: IpAddr,
    /// Longest wait for a whole request body (`--body-timeout`).
    pub body_timeout: Duration,
    /// Limits of chat clients (body size, messages per second), which posts obey too.
    pub chat: &'a Arc<ChatSettings>,
    /// Each account's rate of posts (`POST …/messages`), at the chat clients' rate.
    pub posts: &'a ChangeRates,
    /// How SSE room feeds run.
    pub feed: &'a FeedSettings,
    /// Cancelled when shutdown starts: streamed answers end.
    pub shutdown: &'a CancellationToken,
}

/// An early answer (401, 403, ...).
type Refused = Response<Full<Bytes>>;

/// Serves `/api/...`: the SSE room feed streamed, the rest whole.
pub async fn handle(api: Api<'_>, req: Request<Incoming>) -> Response<Reply> {
    let path = req.uri().path();
    if req.method() == Method::GET {
        let room = path
            .strip_prefix("/api/rooms/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .filter(|room| !room.contains('/'));
        if let Some(room) = room {
            let room = room.to_owned();
            return api.room_feed(&req, &room).await;
        }
    }
    whole(handle_whole(api, req).await)
}

/// Serves the parts of `/api/...` answered whole.
async fn handle_whole(api: Api<'_>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    if req.method() != Method::GET && req.method() != Method::HEAD && !api.origin_allowed(&req) {
        // A page elsewhere must not log a browser in (login CSRF) or act with its cookie.
        return error(StatusCode::FORBIDDEN, "origin not allowed");
    }
    match (req.method(), segments.as_slice()) {
        (_, ["admin", rest @ ..]) => api.admin(req, rest).await,
        (&Method::GET, ["info"]) => api.info(),
        (&Method::GET, ["auth", "providers"]) => api.auth_providers(),
        (&Method::GET, ["auth", "signup"]) => api.pending_signup(&req),
        (&Method::POST, ["auth", "signup"]) => api.complete_signup(req).await,
        (&Method::GET, ["account", "identities"]) => api.identities(&req).await,
        (&Method::DELETE, ["account", "identities", provider]) => {
            let provider = (*provider).to_owned();
            api.unlink(&req, &provider).await
        }
        (&Method::POST, ["register"]) => api.register(req).await,
        (&Method::POST, ["login"]) => api.login(req).await,
        (&Method::POST, ["token", "refresh"]) => api.refresh(req).await,
        (&Method::POST, ["logout"]) => api.logout(req).await,
        (&Method::GET, ["me"]) => match api.caller(&req).await {
            Ok(Some(who)) => {
                let mut me = json!({"username": &*who.name, "guest": who.guest});
                // Only a personal access token's lesser grant is named.
                if who.scope != Scope::All {
                    me["scope"] = json!(who.scope.to_string());
                }
                respond(StatusCode::OK, &me)
            }
            Ok(None) => error(StatusCode::UNAUTHORIZED, "not signed in"),
            Err(resp) => resp,
        },
        (&Method::GET, ["users"]) => api.users(&req).await,
        (&Method::GET, ["users", "online"]) => api.online(&req).await,
        (&Method::GET, ["rooms"]) => api.list_rooms(&req).await,
        (&Method::GET, ["dms"]) => api.conversations(&req).await,
        (&Method::GET, ["dms", peer, "messages"]) => api.conversation_history(&req, peer).await,
        (&Method::POST, ["dms", peer, "read"]) => {
            let peer = (*peer).to_owned();
            api.mark_read_with(req, &peer).await
        }
        (&Method::POST, ["rooms"]) => api.create_room(req).await,
        (&Method::GET, ["rooms", room, "members"]) => api.members(&req, room).await,
        (&Method::POST, ["rooms", room, "members"]) => {
            let room = (*room).to_owned();
            api.add_member(req, &room).await
        }
        (&Method::DELETE, ["rooms", room, "members", user]) => {
            api.remove_member(&req, room, user).await
        }
        (&Method::GET, ["rooms", room, "messages"]) => api.messages(&req, room).await,
        (&Method::POST, ["rooms", room, "messages"]) => {
            let room = (*room).to_owned();
            api.post_message(req, &room).await
        }
        (&Method::POST, ["rooms", room, "read"]) => {
            let room = (*room).to_owned();
            api.mark_read(req, &room).await
        }
        (&Method::GET, ["unread"]) => api.unread(&req).await,
        (&Method::GET, ["tokens"]) => api.list_tokens(&req).await,
        (&Method::POST, ["tokens"]) => api.create_token(req).await,
        (&Method::DELETE, ["tokens", id]) => api.revoke_token(&req, id).await,
        (&Method::DELETE, ["rooms", room, "messages", id]) => {
            api.delete_message(req, room, id).await
        }
        (&Method::PATCH, ["rooms", room, "messages", id]) => {
            let (room, id) = ((*room).to_owned(), (*id).to_owned());
            api.edit_message(req, &room, &id).await
        }
        (&Method::POST, ["rooms", room, "messages", id, "reactions"]) => {
            let (room, id) = ((*room).to_owned(), (*id).to_owned());
            api.react_to_message(req, &room, &id).await
        }
        (_, ["info" | "me" | "rooms" | "dms" | "users" | "register" | "login" | "logout"])
        | (_, ["dms", _, "messages" | "read"])
        | (_, ["users", "online"])
        | (_, ["token", "refresh"])
        | (_, ["unread" | "tokens"])
        | (_, ["tokens", _])
        | (_, ["rooms", _, "messages" | "members" | "read" | "events"])
        | (_, ["rooms", _, "messages" | "members", _])
        | (_, ["rooms", _, "messages", _, "reactions"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

impl Api<'_> {
    /// What the server offers, and the rules clients check before asking (no auth needed).
    fn info(&self) -> Response<Full<Bytes>> {
        let settings = self.auth.settings();
        let limits = self.hub.acl().limits();
        let edits = self.hub.edit_limits();
        let registration = if settings.registration_open {
            "open"
        } else {
            "closed"
        };
        respond(
            StatusCode::OK,
            &json!({
                "guests": settings.allow_guests,
                "registration": registration,
                "rooms": {
                    "pattern": RoomName::PATTERN,
                    "max_length": RoomName::MAX_LEN,
                    "rule": RoomName::RULE,
                    "guests_create": limits.guests_create,
                    "max_per_account": limits.max_per_account,
                    "page": crate::acl::ROOM_PAGE,
                },
                "messages": {
                    "max_body": edits.max_body,
                    "edit_window_s": edits.window_ms / 1000,
                    "max_emoji_bytes": crate::hub::MAX_EMOJI_BYTES,
                    "max_client_id": crate::hub::MAX_CLIENT_ID,
                },
                "stomp_tcp": self.stomp_tcp.map(|a| a.to_string()),
                "stomp_tls": self.stomp_tls.map(|a| a.to_string()),
            }),
        )
    }

    /// Runs a storage call off the async runtime; a failure is already the 500 to answer.
    async fn store<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Refused> {
        store::run(self.hub.store(), call)
            .await
            .map_err(|e| storage_error(&e))
    }

    /// No `Origin` (a non-browser client), or an allowed one.
    fn origin_allowed(&self, req: &Request<Incoming>) -> bool {
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        self.auth.origin_allowed(origin, host)
    }

    /// CSRF rule for cookie-authenticated requests: an `Origin`, if sent, must be allowed, and a
    /// state-changing request must send one.
    fn cookie_origin_ok(&self, headers: &http::HeaderMap, state_changing: bool) -> bool {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match origin {
            None => !state_changing,
            Some(_) => self.auth.origin_allowed(origin, host),
        }
    }

    /// Who is calling: a bearer token, or the session cookie (CSRF-checked). `Ok(None)` when the
    /// request carries no credentials; a bad credential is an answer of its own (401/403).
    async fn caller(&self, req: &Request<Incoming>) -> Result<Option<Identity>, Refused> {
        Ok(self.authenticated(req, None).await?.map(|who| who.identity))
    }

    /// [`Api::caller`] with when the credential runs out, also taking `?access_token=` from
    /// `query` where a client cannot send headers (EventSource).
    async fn authenticated(
        &self,
        req: &Request<Incoming>,
        query: Option<&str>,
    ) -> Result<Option<Authenticated>, Refused> {
        let headers = req.headers();
        let token = bearer(headers)
            .map(str::to_owned)
            .or_else(|| query.and_then(query_token));
        if let Some(token) = token {
            return match self.auth.verify_any(&token).await {
                Ok(who) => Ok(Some(who)),
                Err(why) => Err(unauthenticated(&why)),
            };
        }
        if session_cookie(headers).is_some() {
            if !self.cookie_origin_ok(headers, req.method() != Method::GET) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "cookie requests need an allowed Origin",
                ));
            }
            return self
                .auth
                .authenticate(headers, None)
                .await
                .map_err(|why| unauthenticated(&why));
        }
        Ok(None)
    }

    /// The caller, who must be signed in with an account.
    async fn account(&self, req: &Request<Incoming>) -> Result<Identity, Refused> {
        match self.caller(req).await? {
            Some(who) if !who.guest => Ok(who),
            _ => Err(error(StatusCode::UNAUTHORIZED, "sign in first")),
        }
    }

    /// The caller, or an anonymous guest where guests are allowed.
    async fn caller_or_guest(&self, req: &Request<Incoming>) -> Result<Option<Identity>, Refused> {
        match self.caller(req).await? {
            Some(who) => Ok(Some(who)),
            None if self.auth.settings().allow_guests => Ok(None),
            None => Err(error(StatusCode::UNAUTHORIZED, "sign in first")),
        }
    }
}

impl Api<'_> {
    /// Reads a JSON request body (at most [`MAX_REQUEST_BODY`]).
    async fn json_body<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, Refused> {
        let body = self.read_body(req).await?;
        serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
    }

    /// Like [`Api::json_body`], where an empty body means the defaults.
    async fn json_body_or_empty<T: serde::de::DeserializeOwned + Default>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, Refused> {
        let body = self.read_body(req).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
    }

    /// The whole body within the body timeout: a client that declares a body and sends it
    /// slowly or never gets 408 and the connection closes, instead of holding it forever. A
    /// body hyper cannot read (broken chunked encoding, cut short) is a 400, and the connection
    /// closes too: where its next request would start is unknown.
    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, Refused> {
        let collect = Limited::new(req.into_body(), MAX_REQUEST_BODY).collect();
        let (status, why) = match tokio::time::timeout(self.body_timeout, collect).await {
            Ok(Ok(body)) => return Ok(body.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ))
            }
            Ok(Err(_)) => (StatusCode::BAD_REQUEST, "invalid request body"),
            Err(_) => (StatusCode::REQUEST_TIMEOUT, "request body too slow"),
        };
        let mut resp = error(status, why);
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        Err(resp)
    }
}

/// 503 with `Retry-After`: password checks are queued up.
fn busy(why: &str) -> Response<Full<Bytes>> {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, why);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

fn no_content() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn storage_error(e: &anyhow::Error) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "storage error");
    error(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
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

/// A refused credential: 401, or 403 for a banned user's (it says why).
fn unauthenticated(why: &str) -> Response<Full<Bytes>> {
    let status = if why.starts_with("banned:") {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    error(status, why)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, &json!({"error": message}))
}

/// A hub refusal (a change, a post, a feed's join) as its HTTP answer.
fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let status = match refusal.code {
        "forbidden" | "too_late" | "room_quota" | "room_closed" => StatusCode::FORBIDDEN,
        "no_such_message" | "no_such_room" => StatusCode::NOT_FOUND,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "busy" | "storage_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "storage_error" | "send_failed" | "join_failed" => StatusCode::INTERNAL_SERVER_ERROR,
        "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &refusal.message)
}
