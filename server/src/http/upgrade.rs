//! WebSocket upgrades: which endpoint a request asks for (`/echo`, `/stomp`, `/ws`), who it is
//! (Origin, credentials, guests), our own handshake (`parley_protocol::handshake`), and the
//! endpoint's future on the upgraded socket (its connection's task runs it).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use parley_protocol::deflate::{DeflateConfig, DeflateParams};
use parley_protocol::handshake::{self, HandshakeConfig, OriginPolicy};
use parley_protocol::{Connection, Limits};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tracing::debug;

use super::per_ip::IpSlot;
use super::response::{text, text_owned, Body};
use super::tls::TlsIo;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Auth, Authenticated};
use crate::endpoints::echo::Echo;
use crate::endpoints::raw::RawClient;
use crate::endpoints::socketio::EngineWebSocket;
use crate::endpoints::sockjs::{App, SockJs};
use crate::endpoints::stomp::{Caller, Stomp};
use crate::hub::{ChatSettings, Hub, Origin, Protocol, Transport};
use crate::park::Parked;
use crate::ws::{drive, DriverConfig, ReadReady, WsSocket};

/// STOMP subprotocols, most preferred first.
const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Room in a WebSocket message beyond the body it carries (headers, JSON fields).
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// What the upgrade path needs; shared by every connection.
pub(super) struct Upgrades {
    /// Handshake rules per endpoint.
    pub(super) handshakes: Handshakes,
    /// `/echo`'s message limit, when `/echo` is on.
    pub(super) echo: Option<usize>,
    /// Largest raw chat message body (sizes `/ws` WebSocket messages).
    pub(super) max_body: usize,
    /// Largest STOMP frame body (sizes `/stomp` WebSocket messages).
    pub(super) stomp_max_body: usize,
    /// Idle, write and close timing of every WebSocket.
    pub(super) driver: Arc<DriverConfig>,
    /// The chat hub.
    pub(super) hub: Arc<Hub>,
    /// The STOMP endpoint.
    pub(super) stomp: Arc<Stomp>,
    /// Limits of raw JSON clients.
    pub(super) chat: Arc<ChatSettings>,
    /// Accounts and tokens.
    pub(super) auth: Arc<Auth>,
    /// SockJS sessions.
    pub(super) sockjs: Arc<SockJs>,
    /// Largest Engine.IO WebSocket message.
    pub(super) engine_max_payload: usize,
    /// Cancelled while draining: upgrades are refused.
    pub(super) draining: CancellationToken,
    /// Cancelled at shutdown: every WebSocket closes.
    pub(super) shutdown: CancellationToken,
}

/// Handshake rules per endpoint.
pub(super) struct Handshakes {
    echo: HandshakeConfig,
    stomp: HandshakeConfig,
    raw: HandshakeConfig,
    /// SockJS and Engine.IO WebSockets: their frames are their own, uncompressed.
    plain: HandshakeConfig,
}

impl Handshakes {
    /// permessage-deflate: on `/echo` as any client offers it; on `/stomp` and `/ws` without
    /// context takeover, so a message is compressed once for every subscriber and no
    /// connection keeps compression state ([`crate::ws::deflate`]).
    pub(super) fn new(deflate: bool) -> Self {
        // Origins are checked before the handshake (they depend on the Host: same-origin).
        let origin = OriginPolicy::AllowAny;
        let chat = deflate.then(crate::ws::deflate::chat_config);
        Self {
            echo: HandshakeConfig::default()
                .with_origin(origin.clone())
                .with_deflate(deflate.then(DeflateConfig::default)),
            stomp: HandshakeConfig::default()
                .with_origin(origin.clone())
                .with_subprotocols(STOMP_SUBPROTOCOLS)
                .with_deflate(chat.clone()),
            raw: HandshakeConfig::default()
                .with_origin(origin.clone())
                .with_deflate(chat),
            plain: HandshakeConfig::default().with_origin(origin),
        }
    }
}

/// WebSocket endpoints served on this port.
enum WsEndpoint {
    Echo,
    /// STOMP; the upgrade request may already have authenticated the client.
    Stomp(Option<Authenticated>),
    /// The raw JSON protocol, its session already open for an authenticated user or a guest:
    /// a client that has its 101 receives its direct messages from then on.
    Raw(Box<RawClient>),
    /// A SockJS session's app, SockJS-framed or not.
    SockJs(App, bool),
    /// An Engine.IO session's WebSocket.
    Engine(EngineWebSocket),
}

/// An accepted request's endpoint; a raw client's session opens only once its handshake is.
enum Accepting {
    Ready(WsEndpoint),
    Raw(Authenticated),
}

/// A WebSocket endpoint running on its socket.
/// It ends done, or parked (STOMP only: `crate::park`).
pub(super) type Running<'a> = Pin<Box<dyn Future<Output = Option<Parked>> + Send + 'a>>;

/// An accepted handshake whose upgraded socket is still to come.
pub(super) struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    endpoint: WsEndpoint,
    deflate: Option<DeflateParams>,
    /// The client (behind a trusted proxy: the address it forwarded).
    client: IpAddr,
    /// The client's place under the per-address cap, when the connection itself was not
    /// counted (it came from a trusted proxy); held as long as the WebSocket.
    pub(super) ip_slot: Option<IpSlot>,
}

/// What an upgrade asks for.
pub(super) enum UpgradeKind {
    /// `/echo`.
    Echo,
    /// `/stomp` (and `/stomp/websocket`).
    Stomp,
    /// `/ws` (and `/ws/websocket`).
    Raw,
    /// A SockJS session on a WebSocket: SockJS-framed, or (`framed` false) plain.
    SockJs(SockApp, bool),
    /// An Engine.IO session's WebSocket (who the client is was settled before).
    Engine(EngineWebSocket),
}

/// The app of a SockJS session, before who the client is is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SockApp {
    /// STOMP (`/stomp`).
    Stomp,
    /// The raw JSON protocol (`/ws`).
    Raw,
    /// Conformance: echo.
    Echo,
    /// Conformance: closes at once.
    Close,
}

impl Upgrades {
    /// Answers a request of `client` for `/echo`, `/stomp` or `/ws`: the 101 with the endpoint
    /// to run stored in `upgrade`, or why not.
    pub(super) async fn answer(
        &self,
        req: Request<Incoming>,
        upgrade: &Mutex<Option<PendingUpgrade>>,
        client: IpAddr,
    ) -> Response<Body> {
        let kind = match req.uri().path() {
            "/echo" if self.echo.is_some() => UpgradeKind::Echo,
            "/stomp" => UpgradeKind::Stomp,
            "/ws" => UpgradeKind::Raw,
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        self.answer_as(req, upgrade, client, kind).await
    }

    /// Answers an upgrade request for `kind`.
    pub(super) async fn answer_as(
        &self,
        mut req: Request<Incoming>,
        upgrade: &Mutex<Option<PendingUpgrade>>,
        client: IpAddr,
        kind: UpgradeKind,
    ) -> Response<Body> {
        if self.draining.is_cancelled() {
            return draining();
        }
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !self.auth.origin_allowed(origin, host) {
            // Cross-site WebSocket hijacking: a page elsewhere using our user's cookie.
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        let (endpoint, config) = match kind {
            UpgradeKind::Echo => (Accepting::Ready(WsEndpoint::Echo), &self.handshakes.echo),
            UpgradeKind::Stomp => match self.who(&req, false, true).await {
                Ok(known) => (
                    Accepting::Ready(WsEndpoint::Stomp(known)),
                    &self.handshakes.stomp,
                ),
                Err(refusal) => return refusal,
            },
            UpgradeKind::Raw => match self.who(&req, true, true).await {
                Ok(Some(who)) => (Accepting::Raw(who), &self.handshakes.raw),
                Ok(None) => return unauthorized("sign in first"),
                Err(refusal) => return refusal,
            },
            UpgradeKind::SockJs(app, framed) => {
                match self.sockjs_app(&req, app, client, true).await {
                    Ok(app) => (
                        Accepting::Ready(WsEndpoint::SockJs(app, framed)),
                        &self.handshakes.plain,
                    ),
                    Err(refusal) => return refusal,
                }
            }
            UpgradeKind::Engine(ws) => (
                Accepting::Ready(WsEndpoint::Engine(ws)),
                &self.handshakes.plain,
            ),
        };
        match handshake::accept(&req, config) {
            Ok(accepted) => {
                let endpoint = match endpoint {
                    Accepting::Ready(endpoint) => endpoint,
                    Accepting::Raw(who) => WsEndpoint::Raw(self.open_raw(who, client).await),
                };
                let pending = PendingUpgrade {
                    on_upgrade: hyper::upgrade::on(&mut req),
                    endpoint,
                    deflate: accepted.deflate,
                    client,
                    ip_slot: None,
                };
                if let Ok(mut slot) = upgrade.lock() {
                    *slot = Some(pending);
                }
                accepted.response().map(|()| Body::default())
            }
            Err(error) => {
                debug!(%error, "WebSocket handshake refused");
                error.response().map(Body::from)
            }
        }
    }

    /// The app a SockJS session of `client` runs, once who it is is known: STOMP may learn
    /// that from its CONNECT, the raw protocol needs it now. `Err` is the answer.
    pub(super) async fn sockjs_app(
        &self,
        req: &Request<Incoming>,
        app: SockApp,
        client: IpAddr,
        cookie_needs_origin: bool,
    ) -> Result<App, Response<Body>> {
        Ok(match app {
            SockApp::Stomp => App::Stomp(Caller {
                pre: self
                    .who(req, false, cookie_needs_origin)
                    .await?
                    .map(Box::new),
                peer: client,
            }),
            SockApp::Raw => match self.who(req, true, cookie_needs_origin).await? {
                Some(who) => App::Raw(who, client),
                None => return Err(unauthorized("sign in first")),
            },
            SockApp::Echo => App::Echo,
            SockApp::Close => App::Close,
        })
    }

    /// Who an upgrade request is: its bearer token, `?access_token=` or session cookie; with
    /// `guests`, a guest (named by `?name=`) when it carries none. `Err` is the answer.
    ///
    /// A cookie alone is refused without an Origin where browsers always send one
    /// (`cookie_needs_origin`: WebSocket upgrades); SockJS's same-origin GETs carry none, and
    /// there the cookie's `SameSite=Strict` keeps other sites' requests from carrying it. Not
    /// other origins of the same site (a sibling subdomain): their `<script>` loads carry the
    /// cookie and no Origin, and `jsonp`/`htmlfile` answers are scripts they can read. Such a
    /// request says `Sec-Fetch-Site: same-site` (or `cross-site`), and is refused.
    pub(super) async fn who(
        &self,
        req: &Request<Incoming>,
        guests: bool,
        cookie_needs_origin: bool,
    ) -> Result<Option<Authenticated>, Response<Body>> {
        let headers = req.headers();
        let query = req.uri().query();
        let only_cookie = auth::bearer(headers).is_none()
            && query.and_then(auth::query_token).is_none()
            && auth::session_cookie(headers).is_some();
        let from_elsewhere = headers
            .get("sec-fetch-site")
            .is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"));
        if only_cookie
            && !headers.contains_key(header::ORIGIN)
            && (cookie_needs_origin || from_elsewhere)
        {
            // A cookie is a browser credential, and browsers always send an Origin.
            return Err(text(
                StatusCode::FORBIDDEN,
                "cookie sessions need an Origin\n",
            ));
        }
        let known = self
            .auth
            .authenticate(headers, query)
            .await
            .map_err(|why| unauthorized(&why))?;
        if known.is_some() || !guests {
            return Ok(known);
        }
        let Ok(name) = name_from_query(query) else {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "invalid name: 1-32 of letters, digits, _ - .\n",
            ));
        };
        match self.auth.guest(name.as_deref()).await {
            Ok(guest) => Ok(Some(guest)),
            Err(why) if self.auth.settings().allow_guests => {
                Err(text_owned(StatusCode::FORBIDDEN, why))
            }
            Err(why) => Err(unauthorized(&why)),
        }
    }

    /// Opens the raw session of `who`, connecting from `client`, in the hub, before its 101
    /// goes out: a client that has its 101 receives its direct messages (in cluster mode once
    /// this node hears the user's channel, which it waits for).
    async fn open_raw(&self, who: Authenticated, client: IpAddr) -> Box<RawClient> {
        let (auth, chat) = (self.auth.clone(), self.chat.clone());
        let origin = Origin::new(Protocol::Raw, Transport::WebSocket, client);
        let client = Box::new(RawClient::open(&self.hub, auth, chat, who, origin));
        client.until_live().await;
        client
    }

    /// Waits for the socket of an accepted upgrade, then makes its endpoint's future. Also
    /// hands back the place under the per-address cap that the connection keeps as long as that
    /// future runs: the proxied client's when the upgrade came through a trusted proxy (which
    /// has no place of its own), else `peer_slot`, the peer's.
    pub(super) async fn upgraded(
        &self,
        pending: PendingUpgrade,
        peer_slot: Option<IpSlot>,
    ) -> Option<(Running<'_>, Option<IpSlot>)> {
        let PendingUpgrade {
            on_upgrade,
            endpoint,
            deflate,
            client,
            ip_slot,
        } = pending;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                debug!(%error, "upgrade failed");
                return None;
            }
        };
        let slot = ip_slot.or(peer_slot);
        Some((self.start(upgraded, endpoint, deflate, client), slot))
    }

    /// The endpoint's future on the upgraded socket. Taking the bare TCP (or TLS) stream back
    /// from hyper: no boxing on the hot path, vectored writes, and an idle connection waits on
    /// the socket without a read buffer.
    fn start(
        &self,
        upgraded: Upgraded,
        endpoint: WsEndpoint,
        deflate: Option<DeflateParams>,
        client: IpAddr,
    ) -> Running<'_> {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (io, leftover) = unwrap_parts(parts);
                return self.endpoint(io, leftover, endpoint, deflate, client);
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TlsIo>>() {
            Ok(parts) => {
                let (io, leftover) = unwrap_parts(parts);
                self.endpoint(io, leftover, endpoint, deflate, client)
            }
            Err(upgraded) => {
                let io = TokioIo::new(upgraded);
                self.endpoint(io, BytesMut::new(), endpoint, deflate, client)
            }
        }
    }

    /// The endpoint's future, boxed on its own: a connection's task holds a pointer to it,
    /// neither the largest endpoint's state nor a TLS stream it does not have.
    fn endpoint<'a, S>(
        &'a self,
        io: S,
        leftover: BytesMut,
        endpoint: WsEndpoint,
        deflate: Option<DeflateParams>,
        client: IpAddr,
    ) -> Running<'a>
    where
        S: ReadReady + AsyncWrite + Send + 'static,
    {
        let cfg = self.driver.clone();
        let shutdown = self.shutdown.clone();
        let socket = |max: usize, deflate| {
            WsSocket::new(
                io,
                leftover,
                Connection::new(Limits::new(max, max), deflate),
                cfg,
            )
        };
        match endpoint {
            WsEndpoint::Echo => {
                let max = self.echo.unwrap_or_default();
                let socket = socket(max, deflate);
                Box::pin(drive(socket, shutdown, Echo))
            }
            WsEndpoint::Stomp(pre) => {
                // One WebSocket message carries at most about a frame's worth of STOMP bytes.
                let socket = socket(self.stomp_max_body + MESSAGE_OVERHEAD, deflate);
                let caller = Caller {
                    pre: pre.map(Box::new),
                    peer: client,
                };
                Box::pin(self.stomp.serve_websocket(socket, caller))
            }
            WsEndpoint::SockJs(app, framed) => {
                // Messages travel JSON-quoted inside SockJS frames: room for the quoting.
                let max = 2 * self.stomp_max_body.max(self.max_body) + MESSAGE_OVERHEAD;
                let socket = socket(max, None);
                let endpoint = self.sockjs.websocket(app, framed);
                Box::pin(drive(socket, shutdown, endpoint))
            }
            WsEndpoint::Engine(endpoint) => {
                let socket = socket(self.engine_max_payload, None);
                Box::pin(drive(socket, shutdown, endpoint))
            }
            WsEndpoint::Raw(client) => {
                let max = self.max_body.max(1 << 20) + MESSAGE_OVERHEAD;
                let socket = socket(max, deflate);
                let shared = deflate.is_some_and(|p| crate::ws::deflate::shares(&p));
                // Opened in the request's span; from here on its connection's lines name it.
                client.name_span();
                Box::pin(drive(socket, shutdown, client.with_shared_deflate(shared)))
            }
        }
    }
}

/// The `name` a raw client picked in `/ws?name=…`: `Ok(None)` for a guest, `Err` if it is not
/// a user name.
fn name_from_query(query: Option<&str>) -> Result<Option<String>, ()> {
    let name = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="));
    match name {
        None | Some("") => Ok(None),
        Some(name) => parley_stomp::destination::valid_user(name)
            .map(Some)
            .ok_or(()),
    }
}

/// 503 while draining: the balancer has not noticed /readyz yet; the client should connect to
/// another node.
pub(super) fn draining() -> Response<Body> {
    let mut resp = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "draining: connect to another node\n",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

/// 401 with a reason; `WWW-Authenticate` names the scheme clients should use.
pub(super) fn unauthorized(why: &str) -> Response<Body> {
    let mut resp = text_owned(StatusCode::UNAUTHORIZED, format!("{why}\n"));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// The socket hyper upgraded and what it had read past the request. The bytes are copied out,
/// so hyper's read buffer (8 KiB) is freed now rather than kept for the connection's life.
fn unwrap_parts<S>(parts: hyper::upgrade::Parts<TokioIo<S>>) -> (S, BytesMut) {
    let hyper::upgrade::Parts { io, read_buf, .. } = parts;
    let leftover = BytesMut::from(&read_buf[..]);
    drop(read_buf);
    (io.into_inner(), leftover)
}
