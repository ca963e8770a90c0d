//! Engine.IO over HTTP at `/socket.io/`: the query (`EIO`, `transport`, `sid`), the reference
//! server's error answers, CORS for allowed origins, who opens a session, and handing
//! long-polling requests and WebSockets to `endpoints::socketio`. With `--echo`, the protocol
//! test suites' services under `/socketio-test/`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::per_ip;
use super::response::Body;
use super::sockjs::{cors, header_str};
use super::upgrade::{draining, PendingUpgrade, UpgradeKind, Upgrades};
use crate::auth::Auth;
use crate::endpoints::socketio::engine::{EngineError, EngineSession, Opening, Refused};
use crate::endpoints::socketio::{EngineWebSocket, Service, SocketIo};

/// What a path under Engine.IO serves.
pub(super) type Target = Service;

/// The service a path names, if any; `echo`: the test services are on.
pub(super) fn target(path: &str, echo: bool) -> Option<Target> {
    match path {
        "/socket.io/" | "/socket.io" => Some(Service::Chat),
        "/socketio-test/engine.io/" | "/socketio-test/engine.io" if echo => {
            Some(Service::EngineEcho)
        }
        "/socketio-test/socket.io/" | "/socketio-test/socket.io" if echo => {
            Some(Service::SocketIoTest)
        }
        _ => None,
    }
}

/// What answering an Engine.IO request needs.
pub(super) struct Ctx<'a> {
    pub(super) engine: &'a Arc<SocketIo>,
    pub(super) upgrades: &'a Upgrades,
    pub(super) auth: &'a Auth,
    pub(super) client: IpAddr,
    pub(super) upgrade: &'a Mutex<Option<PendingUpgrade>>,
    pub(super) body_timeout: Duration,
}

/// The query parameters Engine.IO uses.
#[derive(Default)]
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
    /// Cache busting, which balancers also route a handshake by.
    t: Option<&'a str>,
}

fn query(q: Option<&str>) -> Query<'_> {
    let mut found = Query::default();
    for pair in q.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "EIO" => found.eio = Some(value),
            "transport" => found.transport = Some(value),
            "sid" => found.sid = Some(value),
            "t" => found.t = Some(value),
            _ => {}
        }
    }
    found
}

/// Answers a request for `service`.
pub(super) async fn answer(
    ctx: Ctx<'_>,
    req: Request<Incoming>,
    service: Service,
) -> Response<Body> {
    let asked = req.headers().clone();
    let mut resp = route(&ctx, req, service).await;
    let allowed = ctx.auth.origin_allowed(
        header_str(&asked, header::ORIGIN),
        header_str(&asked, header::HOST),
    );
    if allowed
        && asked.contains_key(header::ORIGIN)
        && resp.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        cors(&asked, resp.headers_mut());
    }
    resp
}

async fn route(ctx: &Ctx<'_>, req: Request<Incoming>, service: Service) -> Response<Body> {
    let headers = req.headers();
    if req.method() == Method::OPTIONS {
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let methods = HeaderValue::from_static("GET, POST, OPTIONS");
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        return resp;
    }
    let uri = req.uri().clone();
    let q = query(uri.query());
    let websocket = match q.transport {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return error(EngineError::TransportUnknown),
    };
    if !ctx.auth.origin_allowed(
        header_str(headers, header::ORIGIN),
        header_str(headers, header::HOST),
    ) {
        return error(EngineError::Forbidden);
    }
    let upgrade =
        header_str(headers, header::UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket != upgrade {
        return error(EngineError::BadRequest);
    }
    match q.sid {
        Some(sid) => on_session(ctx, req, sid, websocket).await,
        None => handshake(ctx, req, service, websocket, &q).await,
    }
}

/// A request of an open session.
async fn on_session(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    sid: &str,
    websocket: bool,
) -> Response<Body> {
    let session = match ctx.engine.find(sid) {
        // A session's requests come from the address that opened it.
        Some(session) if session.client() == ctx.client => session,
        _ => return error(EngineError::SessionIdUnknown),
    };
    if websocket {
        if !session.may_upgrade() {
            return error(EngineError::BadRequest);
        }
        let kind = UpgradeKind::Engine(EngineWebSocket::upgrading(session));
        return ctx
            .upgrades
            .answer_as(req, ctx.upgrade, ctx.client, kind)
            .await;
    }
    match *req.method() {
        Method::GET => {
            let max = ctx.engine.settings().max_payload;
            match session.poll(max).await {
                Ok(payload) => text_plain(payload),
                Err(e) => error(e),
            }
        }
        Method::POST => post(ctx, req, &session).await,
        _ => error(EngineError::BadRequest),
    }
}

/// A `POST` of packets: `ok`, `413` past `maxPayload`, `400` (and the session closed) for a
/// malformed one.
async fn post(ctx: &Ctx<'_>, req: Request<Incoming>, session: &EngineSession) -> Response<Body> {
    let limit = ctx.engine.settings().max_payload;
    let read = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(ctx.body_timeout, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            session.fail();
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n");
        }
        Ok(Err(_)) => return error(EngineError::BadRequest),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
    };
    match session.post(&body) {
        Ok(Ok(())) => {
            let mut resp = Response::new(Body::from("ok"));
            let html = HeaderValue::from_static("text/html");
            resp.headers_mut().insert(header::CONTENT_TYPE, html);
            resp
        }
        Ok(Err(_busy)) => {
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "server busy: send more slowly\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Err(e) => error(e),
    }
}

/// Opens a session: the `open` packet on polling, or the WebSocket that carries it.
async fn handshake(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    service: Service,
    websocket: bool,
    q: &Query<'_>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return error(EngineError::BadHandshakeMethod);
    }
    if q.eio != Some("4") {
        return error(EngineError::UnsupportedProtocolVersion);
    }
    if ctx.upgrades.draining.is_cancelled() {
        return draining();
    }
    // A cookie alone needs an Origin on a WebSocket, as for `/ws`; polling requests follow
    // the same-origin rules of SockJS's.
    let pre = if service == Service::Chat {
        match ctx.upgrades.who(&req, false, websocket).await {
            Ok(pre) => pre,
            Err(refusal) => return refusal,
        }
    } else {
        None
    };
    let engine = ctx.engine;
    let opening = Opening {
        client: ctx.client,
        counted_as: per_ip::key(ctx.client),
        websocket,
    };
    let session = match engine.open(service, opening, q.t, pre) {
        Ok(session) => session,
        Err(Refused::Full) => {
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many Socket.IO sessions\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
        Err(Refused::TooManyFromAddress) => {
            let mut resp = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many Socket.IO sessions from your address\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            return resp;
        }
    };
    let open = engine.open_packet(&session, service, !websocket);
    if !websocket {
        return text_plain(open);
    }
    let kind = UpgradeKind::Engine(EngineWebSocket::opening(session.clone(), open));
    let resp = ctx
        .upgrades
        .answer_as(req, ctx.upgrade, ctx.client, kind)
        .await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Never carried: its app hears the client left.
        session.fail();
    }
    resp
}

/// A long-polling answer.
fn text_plain(payload: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::from(payload));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    super::response::text(status, body)
}

/// The reference server's error answer: `{"code":…,"message":…}`.
fn error(e: EngineError) -> Response<Body> {
    let (code, message) = e.code_and_message();
    let status = if e == EngineError::Forbidden {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let json = HeaderValue::from_static("application/json");
    resp.headers_mut().insert(header::CONTENT_TYPE, json);
    resp
}
