//! SockJS over HTTP (protocol 0.3.3): which prefix, session and transport a URL names, the
//! answers' headers as the protocol gives them (CORS, caching, `JSESSIONID`), who opens a
//! session, and handing receiving requests, sends and WebSockets to `endpoints::sockjs`.
//!
//! Prefixes: `/stomp` (STOMP) and `/ws` (the raw JSON protocol); with `--echo`, the protocol
//! test suite's services under `/sockjs-test/`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::per_ip;
use super::response::{text, Body};
use super::upgrade::{draining, PendingUpgrade, SockApp, UpgradeKind, Upgrades};
use crate::auth::Auth;
use crate::endpoints::sockjs::frames::{self, Wrap};
use crate::endpoints::sockjs::{Mode, Refused, Session, SockJs};
use crate::endpoints::streaming::{stream, whole, Reply};

/// How long browsers may cache what never changes (the protocol's one year).
const CACHE_FOR_SECONDS: u64 = 365 * 24 * 60 * 60;
/// Longest JSONP callback name.
const MAX_CALLBACK: usize = 32;
/// The page sockjs-client loads in an iframe for cross-domain transports in old browsers.
const IFRAME_SCRIPT: &str = "document.domain = document.domain;\n    SockJS.bootstrap_iframe();";

/// A URL under a SockJS prefix.
pub(super) struct Target {
    app: SockApp,
    /// The prefix, e.g. `/stomp`.
    prefix: &'static str,
    /// The rest of the path after the prefix.
    rest: String,
    websocket: bool,
    cookie_needed: bool,
}

/// The SockJS target of `path`, if it is under a prefix; `echo`: the test services are on.
pub(super) fn target(path: &str, echo: bool) -> Option<Target> {
    let mut prefixes = vec![("/stomp", SockApp::Stomp), ("/ws", SockApp::Raw)];
    if echo {
        prefixes.extend([
            ("/sockjs-test/echo", SockApp::Echo),
            ("/sockjs-test/close", SockApp::Close),
            ("/sockjs-test/disabled_websocket_echo", SockApp::Echo),
            ("/sockjs-test/cookie_needed_echo", SockApp::Echo),
        ]);
    }
    prefixes.into_iter().find_map(|(prefix, app)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(Target {
            app,
            prefix,
            rest: rest.to_owned(),
            websocket: !prefix.ends_with("disabled_websocket_echo"),
            cookie_needed: prefix.ends_with("cookie_needed_echo"),
        })
    })
}

impl Target {
    /// The exact prefix path asked to upgrade: the plain WebSocket endpoint, not SockJS.
    pub(super) fn is_plain_upgrade(&self, headers: &HeaderMap) -> bool {
        self.rest.is_empty()
            && matches!(self.app, SockApp::Stomp | SockApp::Raw)
            && headers.contains_key(header::UPGRADE)
    }
}

/// What answering a SockJS request needs.
pub(super) struct Ctx<'a> {
    pub(super) sockjs: &'a SockJs,
    pub(super) upgrades: &'a Upgrades,
    pub(super) auth: &'a Auth,
    pub(super) client: IpAddr,
    pub(super) upgrade: &'a Mutex<Option<PendingUpgrade>>,
    pub(super) body_timeout: Duration,
    pub(super) max_send: usize,
}

/// What a URL under a prefix asks for.
enum Route<'a> {
    Welcome,
    Info,
    Iframe,
    /// `<prefix>/websocket`.
    PlainWebSocket,
    /// `<prefix>/<server>/<session>/<transport>`.
    Session {
        id: &'a str,
        transport: &'a str,
    },
    NotFound,
}

fn route<'a>(rest: &'a str) -> Route<'a> {
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    match parts.as_slice() {
        [] => Route::Welcome,
        ["info"] => Route::Info,
        ["websocket"] => Route::PlainWebSocket,
        [page] if is_iframe(page) => Route::Iframe,
        [server, id, transport] if SockJs::valid_id(server) && SockJs::valid_id(id) => {
            Route::Session { id, transport }
        }
        _ => Route::NotFound,
    }
}

fn is_iframe(page: &str) -> bool {
    page.strip_prefix("iframe")
        .and_then(|p| p.strip_suffix(".html"))
        .is_some_and(|middle| {
            middle
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"-._".contains(&b))
        })
}

/// Answers a request under a SockJS prefix.
pub(super) async fn answer(
    ctx: Ctx<'_>,
    req: Request<Incoming>,
    target: Target,
) -> Response<Reply> {
    let method = req.method().clone();
    let cookie = jsessionid(req.headers()).map(str::to_owned);
    let route = route(&target.rest);
    // The protocol sets the cookie on a session's requests and on preflights.
    let sets_cookie = matches!(route, Route::Session { .. })
        || matches!(route, Route::Info) && method == Method::OPTIONS;
    let mut resp = match (route, &method) {
        (Route::Welcome, &Method::GET) => whole(text_utf8(StatusCode::OK, "Welcome to SockJS!\n")),
        (Route::Welcome, _) => whole(not_allowed("GET")),
        (Route::Info, &Method::GET) => {
            let mut resp = whole(info(&target));
            no_cache(resp.headers_mut());
            cors(req.headers(), resp.headers_mut());
            resp
        }
        (Route::Info, &Method::OPTIONS) => whole(options(req.headers(), "OPTIONS, GET")),
        (Route::Info, _) => whole(not_allowed("OPTIONS, GET")),
        (Route::Iframe, &Method::GET) => {
            whole(iframe(req.headers(), &ctx.auth.settings().allowed_origins))
        }
        (Route::Iframe, _) => whole(not_allowed("GET")),
        (Route::PlainWebSocket, &Method::GET) if target.websocket => {
            let kind = match target.app {
                SockApp::Stomp => UpgradeKind::Stomp,
                SockApp::Raw => UpgradeKind::Raw,
                app => UpgradeKind::SockJs(app, false),
            };
            whole(websocket(&ctx, req, kind).await)
        }
        (Route::PlainWebSocket, &Method::GET) => whole(disabled()),
        (Route::PlainWebSocket, _) => whole(not_allowed("GET")),
        (Route::Session { id, transport }, _) => session(&ctx, req, &target, id, transport).await,
        (Route::NotFound, _) => whole(not_found()),
    };
    if target.cookie_needed && sets_cookie {
        set_jsessionid(cookie.as_deref(), resp.headers_mut());
    }
    resp
}

/// Requests for one session: its transports and sends.
async fn session(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    target: &Target,
    id: &str,
    transport: &str,
) -> Response<Reply> {
    let method = req.method();
    let legacy = ctx.sockjs.settings().legacy;
    let allowed = match transport {
        "xhr" | "xhr_send" | "xhr_streaming" => "OPTIONS, POST",
        "eventsource" => "GET",
        "htmlfile" | "jsonp" if legacy => "GET",
        "jsonp_send" if legacy => "POST",
        "websocket" if target.websocket => "GET",
        "websocket" => return whole(disabled()),
        _ => return whole(not_found()),
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return whole(not_allowed(allowed));
    }
    if method == Method::OPTIONS {
        return whole(options(req.headers(), allowed));
    }
    if !ctx.auth.origin_allowed(
        header_str(req.headers(), header::ORIGIN),
        header_str(req.headers(), header::HOST),
    ) {
        return whole(text(StatusCode::FORBIDDEN, "origin not allowed\n"));
    }
    let key = format!("{}/{id}", target.prefix);
    if transport == "websocket" {
        return whole(websocket(ctx, req, UpgradeKind::SockJs(target.app, true)).await);
    }
    let asked = req.headers().clone();
    let mut resp = match transport {
        "xhr_send" | "jsonp_send" => whole(send(ctx, req, &key, transport == "jsonp_send").await),
        _ => receive(ctx, req, target.app, &key, transport).await,
    };
    // Refusals too (bad payload, unknown session, a full server): never cached, and readable
    // by the page that made the XHR, so that sockjs-client sees why.
    let h = resp.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        no_cache(h);
    }
    let xhr = matches!(transport, "xhr" | "xhr_send" | "xhr_streaming");
    if xhr && !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        cors(&asked, h);
    }
    resp
}

/// A receiving request: attaches to its session, or opens it.
async fn receive(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    app: SockApp,
    key: &str,
    transport: &str,
) -> Response<Reply> {
    let callback = match transport {
        "htmlfile" | "jsonp" => match callback(req.uri().query(), transport == "jsonp") {
            Ok(callback) => Some(callback),
            Err(why) => return whole(text_utf8(StatusCode::INTERNAL_SERVER_ERROR, why)),
        },
        _ => None,
    };
    let session = match attach(ctx, &req, app, key).await {
        Ok(session) => session,
        Err(refusal) => return whole(refusal),
    };
    let (wrap, mode, prelude, content_type) = match (transport, callback) {
        ("xhr", _) => (
            Wrap::Lines,
            Mode::Polling,
            None,
            "application/javascript; charset=UTF-8",
        ),
        ("xhr_streaming", _) => (
            Wrap::Lines,
            Mode::Streaming,
            Some(frames::streaming_prelude()),
            "application/javascript; charset=UTF-8",
        ),
        ("eventsource", _) => (
            Wrap::EventSource,
            Mode::Streaming,
            Some(Bytes::from_static(b"\r\n")),
            "text/event-stream",
        ),
        ("htmlfile", Some(cb)) => {
            let prelude = frames::htmlfile_prelude(&cb);
            (
                Wrap::HtmlFile(cb),
                Mode::Streaming,
                Some(prelude),
                "text/html; charset=UTF-8",
            )
        }
        (_, Some(cb)) => (
            Wrap::Jsonp(cb),
            Mode::Polling,
            None,
            "application/javascript; charset=UTF-8",
        ),
        (_, None) => return whole(not_found()),
    };
    let is_jsonp = matches!(wrap, Wrap::Jsonp(_));
    let is_eventsource = wrap == Wrap::EventSource;
    let cors_applies = matches!(transport, "xhr" | "xhr_streaming" | "eventsource");
    let body = ctx.sockjs.receive(session, wrap, mode, prelude);
    let mut resp = stream(Response::new(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_cache(headers);
    if is_jsonp {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    // Streams must reach the client as they are written, not when a proxy's buffer fills.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if cors_applies {
        let origin = header_str(req.headers(), header::ORIGIN);
        if is_eventsource && origin == Some("null") {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        } else {
            cors(req.headers(), headers);
        }
    }
    resp
}

/// The session a receiving request is for: found (from the address that opened it), or opened.
async fn attach(
    ctx: &Ctx<'_>,
    req: &Request<Incoming>,
    app: SockApp,
    key: &str,
) -> Result<Arc<Session>, Response<Body>> {
    match ctx.sockjs.find(key) {
        Some(session) if session.client() == ctx.client => Ok(session),
        Some(_) => Err(not_found()),
        None => {
            if ctx.upgrades.draining.is_cancelled() {
                return Err(draining());
            }
            let app = match ctx.upgrades.sockjs_app(req, app, ctx.client, false).await {
                Ok(app) => app,
                Err(refusal) => return Err(refusal),
            };
            match ctx
                .sockjs
                .open(key, ctx.client, per_ip::key(ctx.client), app)
            {
                // Opened meanwhile by another request: it is theirs only from their address.
                Ok(session) if session.client() == ctx.client => Ok(session),
                Ok(_) => Err(not_found()),
                Err(Refused::Full) => Err(busy("too many SockJS sessions\n")),
                Err(Refused::TooManyFromAddress) => {
                    let mut resp = text(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many SockJS sessions from your address\n",
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
                    Err(resp)
                }
            }
        }
    }
}

/// `xhr_send` / `jsonp_send`: the client's messages for its session's app.
async fn send(ctx: &Ctx<'_>, req: Request<Incoming>, key: &str, jsonp: bool) -> Response<Body> {
    let headers = req.headers().clone();
    let content_type = header_str(&headers, header::CONTENT_TYPE)
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let collect = Limited::new(req.into_body(), ctx.max_send).collect();
    let body = match tokio::time::timeout(ctx.body_timeout, collect).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
        }
        Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "invalid request body\n"),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
    };
    let payload = match sent_payload(&body, &content_type, jsonp) {
        Some(payload) if !payload.is_empty() => payload,
        _ => return text_utf8(StatusCode::INTERNAL_SERVER_ERROR, "Payload expected."),
    };
    // Malformed before unknown: the protocol's order of answers.
    let messages = match frames::parse_sent(&payload, false) {
        Ok(messages) => messages,
        Err(why) => return text_utf8(StatusCode::INTERNAL_SERVER_ERROR, why),
    };
    let Some(session) = ctx.sockjs.find(key).filter(|s| s.client() == ctx.client) else {
        return not_found();
    };
    if ctx.sockjs.send(&session, messages).is_err() {
        return busy("the session has not taken what was sent before\n");
    }
    let mut resp = if jsonp {
        text_utf8(StatusCode::OK, "ok")
    } else {
        let mut resp = text_utf8(StatusCode::NO_CONTENT, "");
        cors(&headers, resp.headers_mut());
        resp
    };
    no_cache(resp.headers_mut());
    resp
}

/// The JSON of a send: the body as it is, or `jsonp_send`'s form field `d`.
fn sent_payload(body: &[u8], content_type: &str, jsonp: bool) -> Option<Vec<u8>> {
    match content_type {
        "application/x-www-form-urlencoded" if jsonp => form_field(body, "d"),
        "text/plain" | "" => Some(body.to_vec()),
        "T" | "application/json" | "application/xml" | "text/xml" if !jsonp => Some(body.to_vec()),
        _ => None,
    }
}

/// A field of a URL-encoded form, decoded.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let rest = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(percent_decode(rest, true))
    })
}

/// `%xx` escapes (and, in forms, `+` for space) decoded.
fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The JSONP callback of `query` (`c=` or `callback=`): `Err` is the protocol's error text.
fn callback(query: Option<&str>, jsonp: bool) -> Result<String, &'static str> {
    let found = query.unwrap_or_default().split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        matches!(name, "c" | "callback").then_some(value)
    });
    let Some(raw) = found else {
        return Err("\"callback\" parameter required");
    };
    let name = String::from_utf8_lossy(&percent_decode(raw.as_bytes(), true)).into_owned();
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && (!jsonp || name.len() <= MAX_CALLBACK);
    if valid {
        Ok(name)
    } else {
        Err("invalid \"callback\" parameter")
    }
}

/// A WebSocket under a prefix, through the upgrade path every WebSocket takes.
async fn websocket(ctx: &Ctx<'_>, req: Request<Incoming>, kind: UpgradeKind) -> Response<Body> {
    let is_websocket = header_str(req.headers(), header::UPGRADE)
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_websocket {
        return text_utf8(
            StatusCode::BAD_REQUEST,
            "Can \"Upgrade\" only to \"WebSocket\".",
        );
    }
    ctx.upgrades
        .answer_as(req, ctx.upgrade, ctx.client, kind)
        .await
}

fn info(target: &Target) -> Response<Body> {
    let mut entropy = [0u8; 4];
    let _ = getrandom::fill(&mut entropy);
    let body = serde_json::json!({
        "websocket": target.websocket,
        "origins": ["*:*"],
        "cookie_needed": target.cookie_needed,
        "entropy": u32::from_le_bytes(entropy),
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// The iframe page, cached for a year, with an ETag; its one inline script is allowed by its
/// hash, and only sites allowed to use the API may frame it.
fn iframe(headers: &HeaderMap, allowed_origins: &[String]) -> Response<Body> {
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  \
         <script src=\"/vendor/sockjs.min.js\"></script>\n  <script>\n    {IFRAME_SCRIPT}\n  </script>\n\
         </head>\n<body>\n  <h2>Don't panic!</h2>\n  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n\
         </body>\n</html>"
    );
    let digest = Sha256::digest(page.as_bytes());
    let etag = format!("\"{}\"", hex(&digest[..16]));
    if header_str(headers, header::IF_NONE_MATCH) == Some(etag.as_str()) {
        let mut resp = text(StatusCode::NOT_MODIFIED, "");
        resp.headers_mut().remove(header::CONTENT_TYPE);
        cache_for(resp.headers_mut());
        return resp;
    }
    let script_hash = STANDARD.encode(Sha256::digest(
        format!("\n    {IFRAME_SCRIPT}\n  ").as_bytes(),
    ));
    let mut resp = Response::new(Body::from(page));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    let csp = format!(
        "default-src 'none'; script-src 'self' 'sha256-{script_hash}'; connect-src 'self'; \
             frame-ancestors {}",
        frame_ancestors(allowed_origins)
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    cache_for(h);
    resp
}

/// Who may frame the iframe page: this site and the origins allowed to use it.
fn frame_ancestors(allowed_origins: &[String]) -> String {
    if allowed_origins.iter().any(|o| o == "*") {
        return "*".to_owned();
    }
    let mut sources = vec!["'self'".to_owned()];
    // An origin with characters a CSP source cannot hold is left out rather than breaking it.
    sources.extend(
        allowed_origins
            .iter()
            .filter(|o| {
                o.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
            })
            .cloned(),
    );
    sources.join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 204 to a CORS preflight.
fn options(req: &HeaderMap, methods: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::NO_CONTENT, "");
    let h = resp.headers_mut();
    h.remove(header::CONTENT_TYPE);
    cors(req, h);
    cache_for(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(CACHE_FOR_SECONDS),
    );
    resp
}

/// The caller's origin may read the answer, with credentials; without an Origin, anyone.
pub(super) fn cors(req: &HeaderMap, h: &mut HeaderMap) {
    match req.get(header::ORIGIN) {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(asked) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
}

fn no_cache(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, no-transform, must-revalidate, max-age=0"),
    );
}

fn cache_for(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = SystemTime::now() + Duration::from_secs(CACHE_FOR_SECONDS);
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert(header::EXPIRES, value);
    }
}

/// The `JSESSIONID` a balancer may route by, for services that say `cookie_needed`.
fn set_jsessionid(current: Option<&str>, h: &mut HeaderMap) {
    let value = format!("JSESSIONID={}; path=/", current.unwrap_or("dummy"));
    if let Ok(value) = HeaderValue::from_str(&value) {
        h.insert(header::SET_COOKIE, value);
    }
}

fn jsessionid(h: &HeaderMap) -> Option<&str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("JSESSIONID="))
}

pub(super) fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn text_utf8(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

fn not_found() -> Response<Body> {
    text_utf8(StatusCode::NOT_FOUND, "404 Error: Page not found\n")
}

/// A transport switched off: 404, cacheable (it will not come back).
fn disabled() -> Response<Body> {
    let mut resp = not_found();
    cache_for(resp.headers_mut());
    resp
}

fn not_allowed(methods: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "");
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods));
    resp
}

fn busy(why: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, why);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_origins_frame_the_iframe() {
        assert_eq!(frame_ancestors(&[]), "'self'");
        let allowed = ["https://a.example".to_owned(), "bad; x".to_owned()];
        assert_eq!(frame_ancestors(&allowed), "'self' https://a.example");
        assert_eq!(frame_ancestors(&["*".to_owned()]), "*");
    }

    #[test]
    fn callbacks_and_forms() {
        assert_eq!(callback(Some("c=cb_1.x"), true), Ok("cb_1.x".to_owned()));
        assert!(callback(Some("c=a%3Cb"), true).is_err());
        assert!(callback(None, true).is_err());
        assert_eq!(
            form_field(b"d=%5B%22x%22%5D", "d"),
            Some(br#"["x"]"#.to_vec())
        );
        assert_eq!(percent_decode(b"%", false), b"%");
        assert_eq!(percent_decode(b"a%2", false), b"a%2");
    }
}
