//! The listeners: accept loops (HTTP and STOMP over TCP), the connection limit, HTTP routing
//! (health, stats, the web client, `/api/`), and handing upgrades to `upgrade`.
//!
//! One task per TCP connection runs hyper until the request that upgrades; the same task then
//! drives the WebSocket, so the connection's permit and its shutdown watch live exactly as long
//! as the socket.

mod api;
mod oauth;
mod per_ip;
pub mod proxy;
mod response;
pub mod scrape;
mod socketio;
mod sockjs;
mod stomp_tcp;
pub mod tls;
mod upgrade;
mod web;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument as _};

use self::per_ip::{IpSlot, PerIp};
use self::proxy::{canonical, TrustedProxies};
use self::response::{
    add_security_headers, refuse, text, text_owned, too_many, Body, HTTP_TOO_MANY,
};
use self::tls::{OverTls, Tls};
use self::upgrade::{Handshakes, PendingUpgrade, Upgrades};
use crate::auth::Auth;
use crate::clock::wheel;
use crate::endpoints::socketio::{self as socketio_endpoint, SocketIo, SocketIoSettings};
use crate::endpoints::sockjs::{SockJs, SockJsParts, SockJsSettings};
use crate::endpoints::sse::FeedSettings;
use crate::endpoints::stomp::Stomp;
use crate::endpoints::streaming::{whole, Reply};
use crate::health::Health;
use crate::hub::{ChangeRates, ChatSettings, Hub};
use crate::logs::ConnLog;
use crate::metrics;
use crate::park::{self, Parked};
use crate::ws::DriverConfig;

/// Largest request head hyper buffers (its minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Settings of the listeners and the WebSocket side.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `/echo` enabled.
    pub echo: bool,
    /// `/echo` message limit.
    pub echo_max_message: usize,
    /// permessage-deflate accepted (on `/echo`).
    pub deflate: bool,
    /// Deadline for a complete request head.
    pub handshake_timeout: Duration,
    /// WebSocket idle timeout.
    pub idle_timeout: Duration,
    /// Per-write progress timeout.
    pub write_timeout: Duration,
    /// Shutdown grace period; also how long a WebSocket peer has to answer our close.
    pub shutdown_grace: Duration,
    /// Connection cap (HTTP and STOMP TCP together).
    pub max_connections: usize,
    /// Largest raw chat message body (sizes `/ws` WebSocket messages).
    pub max_body: usize,
    /// Largest STOMP frame body (sizes `/stomp` WebSocket messages).
    pub stomp_max_body: usize,
    /// Where STOMP over TCP listens, told to clients by `/api/info`.
    pub stomp_tcp: Option<SocketAddr>,
    /// Where STOMP over TLS listens, told to clients by `/api/info`.
    pub stomp_tls: Option<SocketAddr>,
    /// Connections one client address may hold open (0: no cap).
    pub max_connections_per_ip: usize,
    /// Proxies whose word on client addresses is taken.
    pub trusted: TrustedProxies,
    /// Longest wait for a whole request body.
    pub body_timeout: Duration,
    /// Interval of an idle SSE room feed's heartbeat comment.
    pub sse_heartbeat: Duration,
    /// `/stats` answered to anyone (else 404).
    pub public_stats: bool,
    /// SockJS timing and bounds.
    pub sockjs: SockJsSettings,
    /// Socket.IO timing and bounds.
    pub socketio: SocketIoSettings,
}

/// Room in a SockJS send beyond the messages' bytes (JSON quoting, brackets).
const SEND_OVERHEAD: usize = 64 * 1024;

/// How a connection's task ends: done, or parked with what it keeps (`crate::park`).
type Served = Option<(Parked, Kept)>;

/// What a connection keeps while it lives, also parked: its places under the connection limit
/// and its address's cap, and in the tracker that shutdown waits on.
struct Kept {
    _place: Place,
    _slot: Option<IpSlot>,
    _tracked: TaskTrackerToken,
}

/// A place under `--max-connections`, given back when dropped: tokio's permit less its count
/// (always one here), 8 bytes in every parked connection's cell instead of 16.
struct Place(Arc<Semaphore>);

impl Place {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        debug_assert_eq!(permit.num_permits(), 1);
        let semaphore = permit.semaphore().clone();
        permit.forget();
        Self(semaphore)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// What every connection task shares; read-only after start.
pub struct Server {
    settings: HttpSettings,
    /// The WebSocket endpoints and what they need.
    upgrades: Upgrades,
    /// The chat hub, shared by every protocol.
    hub: Arc<Hub>,
    /// The STOMP endpoint (`/stomp` and the TCP listener).
    stomp: Arc<Stomp>,
    /// Accounts and tokens.
    auth: Arc<Auth>,
    /// Whether storage and the bus work: `/readyz` answers 503 while one does not.
    health: Arc<Health>,
    /// Cancelled on SIGINT/SIGTERM, before `shutdown`: /readyz answers 503 and new
    /// WebSockets and STOMP sessions are refused while existing ones carry on.
    draining: CancellationToken,
    /// Cancelled after the drain delay: stop accepting, close every WebSocket with 1001.
    shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// The next connection's id, in log lines.
    next_connection: AtomicU64,
    /// One permit per open TCP connection.
    connections: Arc<Semaphore>,
    /// Open connections per client address.
    per_ip: Arc<PerIp>,
    /// SockJS sessions (`/stomp/…`, `/ws/…`).
    sockjs: Arc<SockJs>,
    /// Socket.IO sessions (`/socket.io/`).
    socketio: Arc<SocketIo>,
    /// Limits of chat clients, for posts over HTTP.
    chat: Arc<ChatSettings>,
    /// Each account's rate of posts over HTTP.
    posts: ChangeRates,
    /// How SSE room feeds run.
    feed: FeedSettings,
    /// TLS on the HTTP listener (then HTTPS only) and STOMP over TLS, when configured.
    tls: Option<Arc<Tls>>,
}

/// The parts the server is built from.
pub struct Parts {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The STOMP endpoint.
    pub stomp: Arc<Stomp>,
    /// Limits of raw JSON clients.
    pub chat: Arc<ChatSettings>,
    /// Accounts and tokens.
    pub auth: Arc<Auth>,
    /// Whether storage and the bus work (`/readyz`).
    pub health: Arc<Health>,
    /// Cancelled when draining starts.
    pub draining: CancellationToken,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// TLS, when configured.
    pub tls: Option<Arc<Tls>>,
}

impl Server {
    /// The server over `parts`.
    pub fn new(settings: HttpSettings, parts: Parts) -> Arc<Self> {
        let tracker = TaskTracker::new();
        let sockjs = SockJs::new(
            settings.sockjs.clone(),
            SockJsParts {
                hub: parts.hub.clone(),
                stomp: parts.stomp.clone(),
                chat: parts.chat.clone(),
                auth: parts.auth.clone(),
                max_message: settings.max_body.max(1 << 20) + SEND_OVERHEAD,
                tracker: tracker.clone(),
                shutdown: parts.shutdown.clone(),
            },
        );
        let socketio = SocketIo::new(
            settings.socketio.clone(),
            socketio_endpoint::Apps {
                hub: parts.hub.clone(),
                auth: parts.auth.clone(),
                chat: parts.chat.clone(),
                max_message: settings.max_body.max(1 << 20) + SEND_OVERHEAD,
                write_timeout: settings.write_timeout,
            },
            tracker.clone(),
            parts.shutdown.clone(),
        );
        let upgrades = Upgrades {
            handshakes: Handshakes::new(settings.deflate),
            echo: settings.echo.then_some(settings.echo_max_message),
            max_body: settings.max_body,
            stomp_max_body: settings.stomp_max_body,
            driver: Arc::new(DriverConfig {
                idle_timeout: settings.idle_timeout,
                write_timeout: settings.write_timeout,
                close_timeout: settings.shutdown_grace,
            }),
            hub: parts.hub.clone(),
            stomp: parts.stomp.clone(),
            chat: parts.chat.clone(),
            auth: parts.auth.clone(),
            sockjs: sockjs.clone(),
            engine_max_payload: settings.socketio.max_payload,
            draining: parts.draining.clone(),
            shutdown: parts.shutdown.clone(),
        };
        Arc::new(Self {
            upgrades,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            per_ip: PerIp::new(settings.max_connections_per_ip),
            tracker,
            next_connection: AtomicU64::new(1),
            sockjs,
            socketio,
            hub: parts.hub,
            stomp: parts.stomp,
            auth: parts.auth,
            health: parts.health,
            draining: parts.draining,
            shutdown: parts.shutdown,
            chat: parts.chat,
            posts: ChangeRates::default(),
            feed: FeedSettings {
                heartbeat: settings.sse_heartbeat,
                write_timeout: settings.write_timeout,
            },
            tls: parts.tls,
            settings,
        })
    }

    /// Accepts connections until shutdown, then waits up to the grace period for them to end.
    /// `stomp_tls` serves STOMP over TLS (with `Parts::tls`).
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        stomp_listener: Option<TcpListener>,
        stomp_tls: Option<TcpListener>,
    ) {
        tokio::spawn(self.sockjs.clone().sweep());
        tokio::spawn(wheel::wake_all_at(self.shutdown.clone()));
        let stomp_accept = stomp_listener
            .map(|l| tokio::spawn(self.clone().accept_loop(l, 1, Self::serve_stomp_tcp)));
        let stomp_tls_accept =
            stomp_tls.map(|l| tokio::spawn(self.clone().accept_loop(l, 2, Self::serve_stomp_tls)));
        self.clone()
            .accept_loop(listener, 0, Self::serve_connection)
            .await;
        for task in [stomp_accept, stomp_tls_accept].into_iter().flatten() {
            let _ = task.await;
        }
        self.tracker.close();
        // Drivers answer the cancellation within the grace period; the margin covers their flush.
        let limit = self.settings.shutdown_grace + Duration::from_secs(1);
        if timeout(limit, self.tracker.wait()).await.is_err() {
            warn!(
                open = self.tracker.len(),
                "connections still open after the grace period"
            );
        }
    }

    /// Accepts until shutdown; every connection, HTTP or STOMP, takes one permit of the
    /// connection limit and runs as a tracked task. `which` is its place in the metrics
    /// (0: HTTP, 1: STOMP over TCP, 2: STOMP over TLS).
    async fn accept_loop<F, Fut>(self: Arc<Self>, listener: TcpListener, which: usize, serve: F)
    where
        F: Fn(Arc<Self>, TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
        Fut: Future<Output = Served> + Send + 'static,
    {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning on a full process table.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let counters = metrics::handles();
            counters.accepted[which].increment(1);
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                counters.refused_connections[0].increment(1);
                warn!(%peer, "connection limit reached; refusing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = serve(self.clone(), stream, peer, permit);
            // Every line logged while serving the connection carries its id; endpoints add
            // the protocol, the session and the user once known.
            let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
            self.tracker
                .spawn(park::task(ConnLog::new(id, peer), connection));
        }
    }

    /// Serves one HTTP connection and, if a request upgrades it, the WebSocket after it. The
    /// task keeps this future for the connection's whole life, so it holds only what a
    /// WebSocket needs for that life (the endpoint's boxed future, the connection limit's
    /// permit, one address slot): HTTP, TLS and the handover are boxed futures before it.
    fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = Served> + Send + 'static {
        let http = Box::pin(self.clone().serve_until_upgrade(stream, peer));
        async move {
            // Held, not used: released when the connection ends.
            let _ = &permit;
            // Each box in a statement of its own, and what built it out of scope before the
            // long wait: a value still in scope at an `.await` keeps a slot in this state.
            let upgrade = {
                let (pending, slot) = http.await?;
                Box::pin(self.upgrades.upgraded(pending, slot))
            };
            let (websocket, slot) = upgrade.await?;
            let parked = websocket.await?;
            Some((parked, self.kept(permit, slot)))
        }
    }

    /// What a parked connection keeps: its places under the limits, and in the tracker.
    fn kept(&self, permit: OwnedSemaphorePermit, slot: Option<IpSlot>) -> Kept {
        Kept {
            _place: Place::new(permit),
            _slot: slot,
            _tracked: self.tracker.token(),
        }
    }

    /// A connection up to its upgrade: the per-address cap, TLS, then HTTP until a request
    /// upgrades it (`None` if none did). The address's slot is handed on with the upgrade.
    async fn serve_until_upgrade(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(PendingUpgrade, Option<IpSlot>)> {
        // A trusted proxy's connection carries many clients: its requests name theirs, and
        // WebSockets through it are counted under those (see `route`).
        let peer_ip = canonical(peer.ip());
        let slot = if self.settings.trusted.trusts(peer_ip) {
            None
        } else {
            match self.per_ip.try_acquire(peer_ip) {
                Some(slot) => Some(slot),
                None => {
                    metrics::handles().refused_connections[1].increment(1);
                    debug!(%peer, "per-address connection cap reached; refusing");
                    // Over TLS a plain answer would be noise; the handshake is not worth it.
                    if self.tls.is_none() {
                        refuse(stream, HTTP_TOO_MANY).await;
                    }
                    return None;
                }
            }
        };
        let pending = match self.tls.clone() {
            None => self.serve_http(stream, peer, false).await,
            Some(tls) => {
                let stream = tls.accept_https(stream).await?;
                self.serve_http(stream, peer, true).await
            }
        };
        Some((pending?, slot))
    }

    /// Serves HTTP on `io` as for a connection from `peer`, without running the WebSocket an
    /// upgrade may ask for (it is dropped once its 101 is written): the fuzz harness's way in
    /// (`crate::fuzzing`). Says whether a request upgraded.
    pub(crate) async fn serve_http_only<I>(self: Arc<Self>, io: I, peer: SocketAddr) -> bool
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_http(io, peer, false).await.is_some()
    }

    /// Serves HTTP requests until the connection ends or a request upgrades it; `tls` marks
    /// each request as having come over TLS ([`OverTls`]).
    async fn serve_http<I>(
        self: Arc<Self>,
        stream: I,
        peer: SocketAddr,
        tls: bool,
    ) -> Option<PendingUpgrade>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgrade: Arc<Mutex<Option<PendingUpgrade>>> = Arc::default();
        let service = {
            let server = self.clone();
            let upgrade = upgrade.clone();
            service_fn(move |mut req: Request<Incoming>| {
                if tls {
                    req.extensions_mut().insert(OverTls);
                }
                let server = server.clone();
                let upgrade = upgrade.clone();
                let span = response::request_span();
                let answer = async move { server.route(req, peer, &upgrade).await };
                let answer = crate::logs::in_request(answer.instrument(span));
                async move { Ok::<_, Infallible>(answer.await) }
            })
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.handshake_timeout)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            () = self.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = served {
            debug!(%error, "HTTP connection ended with an error");
        }
        upgrade
            .lock()
            .map(|mut slot| slot.take())
            .unwrap_or_default()
    }

    /// Answers one request; every answer carries the security headers, and HSTS over TLS.
    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Reply> {
        let over_tls = req.extensions().get::<OverTls>().is_some();
        let mut resp = self.answer(req, peer, upgrade).await;
        add_security_headers(&mut resp);
        match &self.tls {
            Some(tls) if over_tls => tls.add_hsts(&mut resp),
            _ => {}
        }
        resp
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Reply> {
        let client = self.settings.trusted.client(peer.ip(), req.headers());
        let path = req.uri().path();
        if path.starts_with("/api/") {
            return api::handle(self.api(client), req).await;
        }
        if req.method() == Method::GET && path.starts_with("/auth/") {
            if let Some(resp) = oauth::handle(&self.auth, &self.hub, &req, client).await {
                return whole(resp);
            }
        }
        if let Some(service) = socketio::target(path, self.settings.echo) {
            return whole(self.socketio(req, peer, client, service, upgrade).await);
        }
        if let Some(target) = sockjs::target(path, self.settings.echo) {
            if !target.is_plain_upgrade(req.headers()) {
                return self.sockjs(req, peer, client, target, upgrade).await;
            }
        }
        whole(self.answer_whole(req, peer, client, upgrade).await)
    }

    /// Answers a request outside `/api/` (all of which are answered whole).
    async fn answer_whole(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        client: IpAddr,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if req.method() == Method::GET {
            if let Some(asset) = web::asset(path) {
                return asset;
            }
        }
        match (req.method(), path) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                // A part that does not work (storage, the bus) takes the node out as draining
                // does: the body names it.
                if self.draining.is_cancelled() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if !self.health.is_ready() {
                    text_owned(StatusCode::SERVICE_UNAVAILABLE, self.health.report())
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            }
            (&Method::GET, "/stats") if self.settings.public_stats => self.stats(),
            (_, "/echo" | "/stomp" | "/ws") => self.upgrade(req, peer, client, upgrade).await,
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// A WebSocket upgrade. Through a trusted proxy the connection was not counted under any
    /// address, so the WebSocket is, under the client's, for as long as it lives.
    async fn upgrade(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        client: IpAddr,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Body> {
        let Ok(slot) = self.proxied_slot(peer, client) else {
            return too_many();
        };
        let resp = self.upgrades.answer(req, upgrade, client).await;
        keep_slot(upgrade, slot);
        resp
    }

    /// The client's place under its address's cap for a WebSocket through a trusted proxy
    /// (whose connection was counted under no address); `Err` when the address is at its cap.
    fn proxied_slot(&self, peer: SocketAddr, client: IpAddr) -> Result<Option<IpSlot>, ()> {
        if !self.settings.trusted.trusts(canonical(peer.ip())) {
            return Ok(None);
        }
        match self.per_ip.try_acquire(client) {
            Some(slot) => Ok(Some(slot)),
            None => {
                debug!(%client, "per-address connection cap reached; refusing upgrade");
                Err(())
            }
        }
    }

    /// A request under a SockJS prefix. Its WebSocket, like every other, is counted under the
    /// client's address when it came through a trusted proxy.
    async fn sockjs(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        client: IpAddr,
        target: sockjs::Target,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Reply> {
        let slot = if req.headers().contains_key(header::UPGRADE) {
            match self.proxied_slot(peer, client) {
                Ok(slot) => slot,
                Err(()) => return whole(too_many()),
            }
        } else {
            None
        };
        let ctx = sockjs::Ctx {
            sockjs: &self.sockjs,
            upgrades: &self.upgrades,
            auth: &self.auth,
            client,
            upgrade,
            body_timeout: self.settings.body_timeout,
            max_send: 2 * self.settings.stomp_max_body.max(self.settings.max_body) + SEND_OVERHEAD,
        };
        let resp = sockjs::answer(ctx, req, target).await;
        keep_slot(upgrade, slot);
        resp
    }

    /// A request for Socket.IO's Engine.IO. Its WebSocket, like every other, is counted under
    /// the client's address when it came through a trusted proxy.
    async fn socketio(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        client: IpAddr,
        service: socketio::Target,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Body> {
        let slot = if req.headers().contains_key(header::UPGRADE) {
            match self.proxied_slot(peer, client) {
                Ok(slot) => slot,
                Err(()) => return too_many(),
            }
        } else {
            None
        };
        let ctx = socketio::Ctx {
            engine: &self.socketio,
            upgrades: &self.upgrades,
            auth: &self.auth,
            client,
            upgrade,
            body_timeout: self.settings.body_timeout,
        };
        let resp = socketio::answer(ctx, req, service).await;
        keep_slot(upgrade, slot);
        resp
    }

    /// What the REST API needs.
    fn api(&self, peer: IpAddr) -> api::Api<'_> {
        api::Api {
            hub: &self.hub,
            auth: &self.auth,
            stomp_tcp: self.settings.stomp_tcp,
            stomp_tls: self.settings.stomp_tls,
            peer,
            body_timeout: self.settings.body_timeout,
            chat: &self.chat,
            posts: &self.posts,
            feed: &self.feed,
            shutdown: &self.shutdown,
        }
    }

    /// Counters as JSON: open TCP connections, then the hub's counts over every protocol.
    fn stats(&self) -> Response<Body> {
        let s = &self.hub.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let body = format!(
            "{{\"connections\":{},\"sessions\":{},\"socketio_sessions\":{},\"messages_in\":{},\"deliveries\":{},\"slow_consumers\":{}}}\n",
            self.settings.max_connections - self.connections.available_permits(),
            load(&s.sessions),
            self.socketio.sessions(),
            load(&s.messages_in),
            load(&s.deliveries),
            load(&s.slow_consumers),
        );
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Hands an accepted upgrade its client's place under the per-address cap, held as long as the
/// WebSocket.
fn keep_slot(upgrade: &Mutex<Option<PendingUpgrade>>, slot: Option<IpSlot>) {
    if let Ok(mut pending) = upgrade.lock() {
        if let Some(pending) = pending.as_mut() {
            pending.ip_slot = slot;
        }
    }
}
