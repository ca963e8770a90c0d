//! The HTTP side: accept loop, routing, and the WebSocket upgrade.
//!
//! One task per TCP connection runs hyper until the request that upgrades; the same task then
//! drives the WebSocket, so the connection's permit and its shutdown watch live exactly as long
//! as the socket.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use parley_protocol::deflate::{DeflateConfig, DeflateParams};
use parley_protocol::handshake::{self, HandshakeConfig, OriginPolicy};
use parley_protocol::{Connection, Limits};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::api;
use crate::auth::{Auth, Authenticated};
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::journal::Journal;
use crate::raw::{RawClient, RawSettings};
use crate::stomp::{Credentials, StompHub, StompSettings};
use crate::store::Store;
use crate::web;
use crate::ws::{self, DriverConfig};

/// Messages waiting for the storage writer before senders are told it is overloaded.
const JOURNAL_CAPACITY: usize = 65_536;
/// STOMP subprotocols, most preferred first.
const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Largest request head hyper buffers (its minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

type Body = Full<Bytes>;

/// What every connection task shares; read-only after start.
pub struct Server {
    settings: Settings,
    echo_handshake: HandshakeConfig,
    stomp_handshake: HandshakeConfig,
    raw_handshake: HandshakeConfig,
    raw: Arc<RawSettings>,
    /// The broker and its sessions, shared by /stomp, /ws and the STOMP TCP listener.
    stomp: Arc<StompHub>,
    /// Accounts and tokens.
    auth: Arc<Auth>,
    /// Cancelled on SIGINT/SIGTERM, before `shutdown`: /readyz answers 503 and new
    /// WebSockets and STOMP sessions are refused while existing ones carry on.
    draining: CancellationToken,
    /// Cancelled after the drain delay: stop accepting, close every WebSocket with 1001.
    shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// One permit per open TCP connection.
    connections: Arc<Semaphore>,
}

/// WebSocket endpoints served on this port.
#[derive(Clone, Debug)]
enum WsEndpoint {
    Echo,
    /// STOMP; the upgrade request may already have authenticated the client.
    Stomp(Option<Authenticated>),
    /// The raw JSON protocol, for an authenticated user or a guest.
    Raw(Authenticated),
}

/// An accepted handshake whose upgraded socket is still to come.
struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    endpoint: WsEndpoint,
    deflate: Option<DeflateParams>,
}

impl Server {
    /// Builds the shared state from resolved settings.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        auth: Arc<Auth>,
        cluster: Option<Arc<Cluster>>,
        draining: CancellationToken,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        // Origins are checked before the handshake (they depend on the Host: same-origin).
        let origin = OriginPolicy::AllowAny;
        let deflate = settings.deflate.then(DeflateConfig::default);
        let journal = Journal::start(store.clone(), JOURNAL_CAPACITY);
        let stomp = StompHub::new(
            StompSettings {
                limits: parley_stomp::Limits::default().with_max_body(settings.stomp_max_body),
                broker: Default::default(),
                heart_beat: settings.stomp_heart_beat,
                max_room_body: settings.max_body,
                rate_limit: settings.rate_limit,
                outbox_capacity: settings.stomp_outbox,
                connect_timeout: settings.handshake_timeout,
                write_timeout: settings.write_timeout,
                idle_timeout: settings.idle_timeout,
            },
            store,
            journal,
            auth.clone(),
            cluster.clone(),
        )?;
        if let Some(cluster) = &cluster {
            cluster.start(&stomp);
        }
        Ok(Arc::new(Self {
            // STOMP frames are encoded once for every subscriber, so /stomp declines deflate:
            // compressing per connection would undo that.
            stomp_handshake: HandshakeConfig::default()
                .with_origin(origin.clone())
                .with_subprotocols(STOMP_SUBPROTOCOLS),
            raw_handshake: HandshakeConfig::default().with_origin(origin.clone()),
            raw: Arc::new(RawSettings {
                max_body: settings.max_body,
                rate_limit: settings.rate_limit,
            }),
            echo_handshake: HandshakeConfig::default()
                .with_origin(origin)
                .with_deflate(deflate),
            stomp,
            auth,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            tracker: TaskTracker::new(),
            draining,
            shutdown,
            settings,
        }))
    }

    /// Accepts connections until shutdown, then waits up to the grace period for them to end.
    pub async fn run(self: Arc<Self>, listener: TcpListener, stomp_listener: Option<TcpListener>) {
        let stomp_accept = stomp_listener.map(|l| {
            tokio::spawn(self.clone().accept_loop(
                l,
                |server, mut stream, peer, permit| async move {
                    let _permit = permit;
                    if server.draining.is_cancelled() {
                        let refusal =
                            b"ERROR\nmessage:server draining: connect to another node\n\n\0";
                        let _ = timeout(Duration::from_secs(1), stream.write_all(refusal)).await;
                        return;
                    }
                    server
                        .stomp
                        .clone()
                        .serve_tcp(stream, peer.ip(), server.shutdown.clone())
                        .await;
                },
            ))
        });
        self.clone()
            .accept_loop(listener, Self::serve_connection)
            .await;
        if let Some(task) = stomp_accept {
            let _ = task.await;
        }
        self.tracker.close();
        // Drivers answer the cancellation within the grace period; the margin covers their flush.
        let limit = self.settings.shutdown_grace + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.tracker.len(),
                "connections still open after the grace period"
            );
        }
    }

    /// Accepts until shutdown; every connection, HTTP or STOMP, takes one permit of the
    /// connection limit and runs as a tracked task.
    async fn accept_loop<F, Fut>(self: Arc<Self>, listener: TcpListener, serve: F)
    where
        F: Fn(Arc<Self>, TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
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
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                warn!(%peer, "connection limit reached; refusing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = serve(self.clone(), stream, peer, permit);
            self.tracker.spawn(async move {
                connection.await;
                debug!(%peer, "connection closed");
            });
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        // Two steps in one task: HTTP until an upgrade, then the WebSocket. Each step's state
        // is boxed, so the task itself stays a few bytes and a long-lived WebSocket carries
        // neither the HTTP state nor the largest of the other endpoints' state machines.
        let pending = Box::pin(self.clone().serve_http(stream, peer)).await;
        if let Some(pending) = pending {
            self.run_websocket(pending, peer).await;
        }
    }

    /// Serves HTTP requests until the connection ends or a request upgrades it.
    async fn serve_http(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<PendingUpgrade> {
        let upgrade: Arc<Mutex<Option<PendingUpgrade>>> = Arc::default();
        let service = {
            let server = self.clone();
            let upgrade = upgrade.clone();
            service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                let upgrade = upgrade.clone();
                async move {
                    if req.uri().path().starts_with("/api/") {
                        return Ok::<_, Infallible>(
                            api::handle(
                                server.stomp.clone(),
                                req,
                                peer.ip(),
                                server.settings.stomp_tcp,
                            )
                            .await,
                        );
                    }
                    Ok(server.route(req, &upgrade).await)
                }
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

    async fn route(
        &self,
        mut req: Request<Incoming>,
        upgrade: &Mutex<Option<PendingUpgrade>>,
    ) -> Response<Body> {
        if req.method() == Method::GET {
            if let Some(asset) = web::asset(req.uri().path()) {
                return asset;
            }
        }
        let (endpoint, config) = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                return if self.draining.is_cancelled() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    text(StatusCode::OK, "ready\n")
                };
            }
            (_, "/echo" | "/stomp" | "/ws") if self.draining.is_cancelled() => {
                // The balancer has not noticed /readyz yet: send the client to another node.
                let mut resp = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining: connect to another node\n",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return resp;
            }
            (&Method::GET, "/stats") => return self.stats(),
            (_, "/echo" | "/stomp" | "/ws") if !self.origin_allowed(req.headers()) => {
                // Cross-site WebSocket hijacking: a page elsewhere using our user's cookie.
                return text(StatusCode::FORBIDDEN, "origin not allowed\n");
            }
            (_, "/echo") if self.settings.echo => (WsEndpoint::Echo, &self.echo_handshake),
            (_, path @ ("/stomp" | "/ws")) => {
                let headers = req.headers();
                let query = req.uri().query();
                let only_cookie = crate::auth::bearer(headers).is_none()
                    && query.and_then(crate::auth::query_token).is_none()
                    && crate::auth::session_cookie(headers).is_some();
                if only_cookie && !headers.contains_key(header::ORIGIN) {
                    // A cookie is a browser credential, and browsers always send an Origin.
                    return text(StatusCode::FORBIDDEN, "cookie sessions need an Origin\n");
                }
                let known = match self.auth.authenticate(headers, query).await {
                    Ok(known) => known,
                    Err(why) => return unauthorized(&why),
                };
                if path == "/stomp" {
                    (WsEndpoint::Stomp(known), &self.stomp_handshake)
                } else {
                    let who = match known {
                        Some(who) => who,
                        None => match name_from_query(query) {
                            Err(InvalidName) => {
                                return text(
                                    StatusCode::BAD_REQUEST,
                                    "invalid name: 1-32 of letters, digits, _ - .\n",
                                )
                            }
                            Ok(name) => match self.stomp.guest(name.as_deref()).await {
                                Ok(guest) => guest,
                                Err(why) if self.auth.settings().allow_guests => {
                                    return text_owned(StatusCode::FORBIDDEN, why)
                                }
                                Err(why) => return unauthorized(&why),
                            },
                        },
                    };
                    (WsEndpoint::Raw(who), &self.raw_handshake)
                }
            }
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        match handshake::accept(&req, config) {
            Ok(accepted) => {
                let pending = PendingUpgrade {
                    on_upgrade: hyper::upgrade::on(&mut req),
                    endpoint,
                    deflate: accepted.deflate,
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

    /// Is the request's `Origin` (if any) ours or an allowed one?
    fn origin_allowed(&self, headers: &http::HeaderMap) -> bool {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        self.auth.origin_allowed(origin, host)
    }

    /// Counters as JSON.
    fn stats(&self) -> Response<Body> {
        let s = &self.stomp.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let body = format!(
            "{{\"connections\":{},\"sessions\":{},\"stomp_frames_in\":{},\"stomp_deliveries\":{},\"slow_consumers\":{}}}\n",
            self.settings.max_connections - self.connections.available_permits(),
            load(&s.sessions),
            load(&s.frames_in),
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

    async fn run_websocket(&self, pending: PendingUpgrade, peer: SocketAddr) {
        let upgraded = match pending.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                debug!(%error, "upgrade failed");
                return;
            }
        };
        let cfg = DriverConfig {
            idle_timeout: self.settings.idle_timeout,
            write_timeout: self.settings.write_timeout,
            close_timeout: self.settings.shutdown_grace,
        };
        let shutdown = self.shutdown.clone();
        // Take the bare TCP stream back from hyper: no boxing on the hot path, vectored writes.
        let (io, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (
                Ok(parts.io.into_inner()),
                BytesMut::from(&parts.read_buf[..]),
            ),
            Err(upgraded) => (Err(TokioIo::new(upgraded)), BytesMut::new()),
        };
        match pending.endpoint {
            WsEndpoint::Echo => {
                let max = self.settings.echo_max_message;
                let conn = Connection::new(Limits::new(max, max), pending.deflate);
                match io {
                    Ok(tcp) => {
                        Box::pin(ws::drive(tcp, leftover, conn, cfg, shutdown, &mut ws::Echo)).await
                    }
                    Err(boxed) => {
                        Box::pin(ws::drive(
                            boxed,
                            leftover,
                            conn,
                            cfg,
                            shutdown,
                            &mut ws::Echo,
                        ))
                        .await
                    }
                }
            }
            WsEndpoint::Stomp(pre) => {
                // One WebSocket message carries at most about a frame's worth of STOMP bytes.
                let max = self.settings.stomp_max_body + 64 * 1024;
                let conn = Connection::new(Limits::new(max, max), None);
                let hub = self.stomp.clone();
                let who = Credentials {
                    pre,
                    peer: peer.ip(),
                };
                match io {
                    Ok(tcp) => {
                        Box::pin(hub.serve_websocket(tcp, leftover, conn, who, shutdown)).await
                    }
                    Err(boxed) => {
                        Box::pin(hub.serve_websocket(boxed, leftover, conn, who, shutdown)).await
                    }
                }
            }
            WsEndpoint::Raw(who) => {
                let max = self.settings.max_body.max(1 << 20) + 64 * 1024;
                let conn = Connection::new(Limits::new(max, max), None);
                let mut client = RawClient::open(self.stomp.clone(), self.raw.clone(), who);
                match io {
                    Ok(tcp) => {
                        Box::pin(ws::drive(tcp, leftover, conn, cfg, shutdown, &mut client)).await
                    }
                    Err(boxed) => {
                        Box::pin(ws::drive(boxed, leftover, conn, cfg, shutdown, &mut client)).await
                    }
                }
            }
        }
    }
}

/// The `name` a raw client picked in `/ws?name=…`: `Ok(None)` for a guest, or a 400 answer.
fn name_from_query(query: Option<&str>) -> Result<Option<String>, InvalidName> {
    let name = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="));
    match name {
        None | Some("") => Ok(None),
        Some(name) => parley_stomp::destination::valid_user(name)
            .map(Some)
            .ok_or(InvalidName),
    }
}

/// `/ws?name=` holds something that is not a user name.
struct InvalidName;

/// 401 with a reason; `WWW-Authenticate` names the scheme clients should use.
fn unauthorized(why: &str) -> Response<Body> {
    let mut resp = text_owned(StatusCode::UNAUTHORIZED, format!("{why}\n"));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = text(status, "");
    *resp.body_mut() = Body::from(body);
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
