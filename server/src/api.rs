//! The JSON REST API for the browser and tools: accounts, tokens, rooms, members, history.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use parley_stomp::session::Identity;

use crate::auth::{
    bearer, session_cookie, Auth, LoginError, RefreshError, RegisterError, TokenPair,
    SESSION_COOKIE,
};
use crate::stomp::StompHub;
use crate::store::{Role, Room, Store, StoredMessage};

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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    guest: bool,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

impl<'a> From<&'a StoredMessage> for MessageJson<'a> {
    fn from(m: &'a StoredMessage) -> Self {
        Self {
            r#type: "message",
            room: &m.room,
            id: m.id.to_string(),
            from: &m.from,
            guest: m.guest,
            ts: m.ts,
            body: (!m.deleted).then_some(m.body.as_str()),
            deleted: m.deleted,
        }
    }
}

/// Serves `/api/...` for a client at `peer`.
pub async fn handle(
    hub: Arc<StompHub>,
    req: Request<Incoming>,
    peer: IpAddr,
    stomp_tcp: Option<std::net::SocketAddr>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let api = Api { hub, peer };
    if req.method() != Method::GET && req.method() != Method::HEAD && !api.origin_allowed(&req) {
        // A page elsewhere must not log a browser in (login CSRF) or act with its cookie.
        return error(StatusCode::FORBIDDEN, "origin not allowed");
    }
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["info"]) => {
            let settings = api.hub.auth().settings();
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
                    "rooms": {"pattern": ROOM_PATTERN, "max_length": 128, "rule": ROOM_RULE},
                    "stomp_tcp": stomp_tcp.map(|a| a.to_string()),
                }),
            )
        }
        (&Method::POST, ["register"]) => api.register(req).await,
        (&Method::POST, ["login"]) => api.login(req).await,
        (&Method::POST, ["token", "refresh"]) => api.refresh(req).await,
        (&Method::POST, ["logout"]) => api.logout(req).await,
        (&Method::GET, ["me"]) => match api.caller(&req).await {
            Ok(Some(who)) => respond(
                StatusCode::OK,
                &json!({"username": &*who.name, "guest": who.guest}),
            ),
            Ok(None) => error(StatusCode::UNAUTHORIZED, "not signed in"),
            Err(resp) => resp,
        },
        (&Method::GET, ["rooms"]) => api.list_rooms(&req).await,
        (&Method::POST, ["rooms"]) => api.create_room(req).await,
        (&Method::GET, ["rooms", room, "members"]) => {
            let room = (*room).to_owned();
            if let Err(resp) = api.reader(&req, &room).await {
                return resp;
            }
            respond(StatusCode::OK, &json!(api.hub.present(&room).await))
        }
        (&Method::POST, ["rooms", room, "members"]) => {
            let room = (*room).to_owned();
            api.add_member(req, &room).await
        }
        (&Method::DELETE, ["rooms", room, "members", user]) => {
            api.remove_member(&req, room, user).await
        }
        (&Method::GET, ["rooms", room, "messages"]) => {
            let room = (*room).to_owned();
            if let Err(resp) = api.reader(&req, &room).await {
                return resp;
            }
            let (before, limit) = match page(req.uri().query()) {
                Ok(page) => page,
                Err(why) => return error(StatusCode::BAD_REQUEST, why),
            };
            let store = api.hub.store().clone();
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
        (&Method::DELETE, ["rooms", room, "messages", id]) => {
            api.delete_message(&req, room, id).await
        }
        (_, ["info" | "me" | "rooms" | "register" | "login" | "logout"])
        | (_, ["token", "refresh"])
        | (_, ["rooms", _, "messages" | "members"])
        | (_, ["rooms", _, "messages" | "members", _]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// One API request's context.
struct Api {
    hub: Arc<StompHub>,
    peer: IpAddr,
}

/// An early answer (401, 403, ...).
type Refused = Response<Full<Bytes>>;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    cookie: bool,
}

#[derive(Deserialize, Default)]
struct RefreshBody {
    refresh_token: Option<String>,
}

impl Api {
    fn auth(&self) -> &Auth {
        self.hub.auth()
    }

    /// Runs a storage call off the async runtime; a failure is already the 500 to answer.
    async fn store<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Refused> {
        let store = self.hub.store().clone();
        match tokio::task::spawn_blocking(move || call(&*store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(storage_error(&e)),
            Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
        }
    }

    async fn register(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let creds: Credentials = match json_body(req).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        match self.auth().register(&creds.username, &creds.password).await {
            Ok(()) => {
                // Guests who held this name lose it: from now on it means the account.
                self.hub.evict_guests_named(&creds.username);
                respond(StatusCode::CREATED, &json!({"username": creds.username}))
            }
            Err(e @ RegisterError::Invalid(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            Err(e @ RegisterError::Taken) => error(StatusCode::CONFLICT, &e.to_string()),
            Err(e @ RegisterError::Closed) => error(StatusCode::FORBIDDEN, &e.to_string()),
            Err(RegisterError::Storage(e)) => storage_error(&e),
            Err(e @ RegisterError::Busy(_)) => busy(&e.to_string()),
        }
    }

    async fn login(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let secure = secure_cookies(req.headers());
        let creds: Credentials = match json_body(req).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        match self
            .auth()
            .login(&creds.username, &creds.password, self.peer)
            .await
        {
            Ok(pair) => self.tokens(pair, creds.cookie, secure),
            Err(LoginError::Invalid) => {
                error(StatusCode::UNAUTHORIZED, "invalid username or password")
            }
            Err(e @ LoginError::Throttled(wait)) => {
                let mut resp = error(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(wait.as_secs().max(1)),
                );
                resp
            }
            Err(LoginError::Storage(e)) => storage_error(&e),
            Err(e @ LoginError::Busy(_)) => busy(&e.to_string()),
        }
    }

    async fn refresh(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (token, from_cookie, secure) = match self.refresh_token(req).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        match self.auth().refresh(&token).await {
            Ok(pair) => self.tokens(pair, from_cookie, secure),
            Err(e @ (RefreshError::Invalid | RefreshError::Reused)) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, &e.to_string());
                if from_cookie {
                    clear_cookie(&mut resp, secure);
                }
                resp
            }
            Err(RefreshError::Storage(e)) => storage_error(&e),
        }
    }

    async fn logout(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (token, from_cookie, secure) = match self.refresh_token(req).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        if let Err(e) = self.auth().logout(&token).await {
            return storage_error(&e);
        }
        let mut resp = no_content();
        if from_cookie {
            clear_cookie(&mut resp, secure);
        }
        resp
    }

    /// The refresh token of a refresh or logout: from the body, else the cookie (which must
    /// come with an allowed `Origin`: CSRF). Also says whether it came from the cookie, and
    /// whether cookies are `Secure` here.
    async fn refresh_token(&self, req: Request<Incoming>) -> Result<(String, bool, bool), Refused> {
        let secure = secure_cookies(req.headers());
        let cookie = session_cookie(req.headers()).map(str::to_owned);
        let csrf_ok = self.cookie_origin_ok(req.headers(), true);
        let body: RefreshBody = json_body_or_empty(req).await?;
        if let Some(token) = body.refresh_token.filter(|t| !t.is_empty()) {
            return Ok((token, false, secure));
        }
        match cookie {
            Some(_) if !csrf_ok => Err(error(
                StatusCode::FORBIDDEN,
                "cookie requests need an allowed Origin",
            )),
            Some(token) => Ok((token, true, secure)),
            None => Err(error(StatusCode::UNAUTHORIZED, "no refresh token")),
        }
    }

    /// A token pair as JSON; with `cookie`, the refresh token goes into the session cookie.
    fn tokens(&self, pair: TokenPair, cookie: bool, secure: bool) -> Response<Full<Bytes>> {
        let mut body = json!({
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
        });
        if !cookie {
            body["refresh_token"] = Value::from(pair.refresh_token.as_str());
        }
        let mut resp = respond(StatusCode::OK, &body);
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if cookie {
            let max_age = self.auth().settings().refresh_ttl.as_secs();
            let value = format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
                pair.refresh_token,
                if secure { "; Secure" } else { "" }
            );
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                resp.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        resp
    }

    /// No `Origin` (a non-browser client), or an allowed one.
    fn origin_allowed(&self, req: &Request<Incoming>) -> bool {
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        self.auth().origin_allowed(origin, host)
    }

    /// CSRF rule for cookie-authenticated requests: an `Origin`, if sent, must be allowed, and a
    /// state-changing request must send one.
    fn cookie_origin_ok(&self, headers: &http::HeaderMap, state_changing: bool) -> bool {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match origin {
            None => !state_changing,
            Some(_) => self.auth().origin_allowed(origin, host),
        }
    }

    /// Who is calling: a bearer token, or the session cookie (CSRF-checked). `Ok(None)` when the
    /// request carries no credentials; a bad credential is an answer of its own (401/403).
    async fn caller(&self, req: &Request<Incoming>) -> Result<Option<Identity>, Refused> {
        let headers = req.headers();
        if let Some(token) = bearer(headers) {
            return match self.auth().verify(token) {
                Ok(who) => Ok(Some(who.identity)),
                Err(why) => Err(error(StatusCode::UNAUTHORIZED, &why)),
            };
        }
        if session_cookie(headers).is_some() {
            if !self.cookie_origin_ok(headers, req.method() != Method::GET) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "cookie requests need an allowed Origin",
                ));
            }
            return match self.auth().authenticate(headers, None).await {
                Ok(who) => Ok(who.map(|w| w.identity)),
                Err(why) => Err(error(StatusCode::UNAUTHORIZED, &why)),
            };
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

    /// Checks that the caller may read `room`: members of private rooms; anyone signed in for
    /// public ones (and anyone at all when guests are allowed).
    async fn reader(&self, req: &Request<Incoming>, room: &str) -> Result<(), Refused> {
        if !valid_room(room) {
            return Err(error(StatusCode::BAD_REQUEST, "invalid room name"));
        }
        let who = match self.caller(req).await? {
            Some(who) => who,
            None if self.auth().settings().allow_guests => Identity {
                name: "".into(),
                guest: true,
            },
            None => return Err(error(StatusCode::UNAUTHORIZED, "sign in first")),
        };
        self.hub
            .acl()
            .may_use(&who, room)
            .map_err(|why| error(StatusCode::FORBIDDEN, &why))
    }

    async fn list_rooms(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let who = match self.caller(req).await {
            Ok(Some(who)) => Some(who),
            Ok(None) if self.auth().settings().allow_guests => None,
            Ok(None) => return error(StatusCode::UNAUTHORIZED, "sign in first"),
            Err(resp) => return resp,
        };
        // From memory: a room created by a join a moment ago is listed before it is stored.
        let list: Vec<Value> = self
            .hub
            .acl()
            .rooms_visible_to(who.as_ref())
            .into_iter()
            .map(|(name, private)| json!({"name": name, "private": private}))
            .collect();
        respond(StatusCode::OK, &json!(list))
    }

    async fn create_room(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        #[derive(Deserialize)]
        struct NewRoom {
            name: String,
            #[serde(default)]
            private: bool,
        }
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let new: NewRoom = match json_body(req).await {
            Ok(new) => new,
            Err(resp) => return resp,
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
            owner: Some(who.name.to_string()),
        };
        // The name is taken in memory first, under the broker's lock, so no join can create it
        // meanwhile and nobody who is not a member keeps a subscription made while it was free.
        if !self.hub.claim_room(&room.name, room.private, &who.name) {
            return error(StatusCode::CONFLICT, "room exists");
        }
        let answer = json!({"name": room.name, "private": room.private, "owner": &*who.name});
        let stored = room.clone();
        match self.store(move |store| store.create_room(&stored)).await {
            Ok(true) => {
                self.hub.acl_changed(&room.name);
                respond(StatusCode::CREATED, &answer)
            }
            // Stored earlier without being known here (a message sent before any join).
            Ok(false) => {
                self.hub.acl().forget(&room.name);
                error(StatusCode::CONFLICT, "room exists")
            }
            Err(resp) => {
                self.hub.acl().forget(&room.name);
                resp
            }
        }
    }

    async fn add_member(&self, req: Request<Incoming>, room: &str) -> Response<Full<Bytes>> {
        #[derive(Deserialize)]
        struct NewMember {
            user: String,
            role: Option<String>,
        }
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        if self.hub.acl().role(room, &who.name) != Some(Role::Owner) {
            return error(StatusCode::FORBIDDEN, "only the room's owner adds members");
        }
        let new: NewMember = match json_body(req).await {
            Ok(new) => new,
            Err(resp) => return resp,
        };
        let role = match new.role.as_deref().map(Role::parse) {
            None => Role::Member,
            Some(Some(role @ (Role::Member | Role::Admin))) => role,
            Some(_) => return error(StatusCode::BAD_REQUEST, "role is member or admin"),
        };
        if new.user == *who.name {
            // An owner demoting themselves would leave the room with nobody to run it.
            return error(StatusCode::BAD_REQUEST, "the owner's role cannot change");
        }
        match self.auth().is_registered(&new.user).await {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::NOT_FOUND, "no such user"),
            Err(e) => return storage_error(&e),
        }
        let (r, u) = (room.to_owned(), new.user.clone());
        if let Err(resp) = self
            .store(move |store| store.set_member(&r, &u, role))
            .await
        {
            return resp;
        }
        self.hub.acl().set_member(room, &new.user, role);
        self.hub.acl_changed(room);
        no_content()
    }

    async fn remove_member(
        &self,
        req: &Request<Incoming>,
        room: &str,
        user: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let acl = self.hub.acl();
        let (mine, theirs) = (acl.role(room, &who.name), acl.role(room, user));
        // Owners remove anyone but themselves; admins remove plain members.
        let allowed = match (mine, theirs) {
            (Some(Role::Owner), Some(Role::Member | Role::Admin)) => true,
            (Some(Role::Admin), Some(Role::Member)) => true,
            (Some(Role::Owner | Role::Admin), None) => {
                return error(StatusCode::NOT_FOUND, "not a member")
            }
            _ => false,
        };
        if !allowed {
            return error(StatusCode::FORBIDDEN, "you may not remove this member");
        }
        let (r, u) = (room.to_owned(), user.to_owned());
        if let Err(resp) = self.store(move |store| store.remove_member(&r, &u)).await {
            return resp;
        }
        acl.remove_member(room, user);
        if acl.is_private(room) {
            self.hub.revoke_room(user, room);
        }
        self.hub.acl_changed(room);
        no_content()
    }

    async fn delete_message(
        &self,
        req: &Request<Incoming>,
        room: &str,
        id: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        if !matches!(
            self.hub.acl().role(room, &who.name),
            Some(Role::Owner | Role::Admin)
        ) {
            return error(StatusCode::FORBIDDEN, "only room admins delete messages");
        }
        let Ok(id) = id.parse::<u64>() else {
            return error(StatusCode::BAD_REQUEST, "message ids are numbers");
        };
        // The message may still be on its way to storage.
        if !self.hub.durable().await {
            return error(StatusCode::SERVICE_UNAVAILABLE, "storage is not keeping up");
        }
        let r = room.to_owned();
        match self.store(move |store| store.delete_message(&r, id)).await {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::NOT_FOUND, "no such message"),
            Err(resp) => return resp,
        }
        self.hub.announce_deleted(room, id, &who.name);
        no_content()
    }
}

/// The room-name rule as a regular expression, for clients (`GET /api/info`).
const ROOM_PATTERN: &str = "^[A-Za-z0-9_-]{1,128}$";
/// The room-name rule in words.
const ROOM_RULE: &str = "room names are 1-128 of letters, digits, _ -";

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

/// Reads a JSON request body (at most [`MAX_REQUEST_BODY`]).
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refused> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

/// Like [`json_body`], where an empty body means the defaults.
async fn json_body_or_empty<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, Refused> {
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Refused> {
    match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
    }
}

/// Cookies are `Secure` unless the page is plain http on this machine (development).
fn secure_cookies(headers: &http::HeaderMap) -> bool {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let hostname = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let loopback = hostname == "localhost"
        || hostname
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    https || !loopback
}

fn clear_cookie(resp: &mut Response<Full<Bytes>>, secure: bool) {
    let value = format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, value);
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

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, &json!({"error": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn cookies_drop_secure_only_for_plain_http_on_this_machine() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(!secure_cookies(&headers(&[("host", host)])), "{host}");
        }
        assert!(secure_cookies(&headers(&[("host", "chat.example")])));
        assert!(secure_cookies(&headers(&[("host", "10.0.0.5:8080")])));
        assert!(secure_cookies(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https")
        ])));
        assert!(secure_cookies(&headers(&[])), "no Host: stay safe");
    }
}
