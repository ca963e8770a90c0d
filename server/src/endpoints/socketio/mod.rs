//! Socket.IO 5 over Engine.IO 4: sessions by `sid` carried by long-polling requests or a
//! WebSocket (`engine`, `websocket`), the packets of both protocols (`packet`), the app inside
//! each session (`server`), and the chat namespace, whose events are raw JSON commands
//! (`chat`). URL routing, CORS and who the client is are `http::socketio`'s. See
//! `docs/socketio.md`.

mod chat;
pub mod engine;
pub mod packet;
mod server;
mod websocket;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::engine::{EngineSession, Opening, Refused, Table};
pub use self::server::{Apps, Service, Timing};
pub use self::websocket::EngineWebSocket;
use crate::auth::Authenticated;
use crate::endpoints::pipe::{app_span, pipe};

/// Engine.IO timing and bounds.
#[derive(Clone, Debug)]
pub struct SocketIoSettings {
    /// The chat's ping interval.
    pub ping_interval: Duration,
    /// The chat's pong deadline.
    pub ping_timeout: Duration,
    /// Largest POST body or WebSocket message.
    pub max_payload: usize,
    /// Sessions at once, in all.
    pub max_sessions: usize,
    /// Sessions at once per client address (0: no cap).
    pub max_sessions_per_ip: usize,
    /// Bytes the app may have sent that the client has not taken yet.
    pub max_outbound: usize,
}

/// The conformance services' timing: what the protocol test suites expect.
const TEST_TIMING: Timing = Timing {
    ping_interval: Duration::from_millis(300),
    ping_timeout: Duration::from_millis(200),
    connect_timeout: Duration::from_secs(1),
};

/// How long a chat session may stay without a namespace (the reference server's default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// The Engine.IO endpoint: every session, and what their apps need.
pub struct SocketIo {
    settings: SocketIoSettings,
    table: Mutex<Table>,
    apps: Arc<Apps>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl SocketIo {
    /// The endpoint.
    pub fn new(
        settings: SocketIoSettings,
        apps: Apps,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            table: Mutex::default(),
            apps: Arc::new(apps),
            tracker,
            shutdown,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SocketIoSettings {
        &self.settings
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A service's clocks.
    pub fn timing(&self, service: Service) -> Timing {
        match service {
            Service::Chat => Timing {
                ping_interval: self.settings.ping_interval,
                ping_timeout: self.settings.ping_timeout,
                connect_timeout: CONNECT_TIMEOUT,
            },
            Service::EngineEcho | Service::SocketIoTest => TEST_TIMING,
        }
    }

    /// The `open` packet of `session`.
    pub fn open_packet(&self, session: &EngineSession, service: Service, upgrades: bool) -> Bytes {
        let timing = self.timing(service);
        packet::open(
            session.sid(),
            upgrades,
            millis(timing.ping_interval),
            millis(timing.ping_timeout),
            self.settings.max_payload,
        )
    }

    /// The session `sid`, if it is open.
    pub fn find(&self, sid: &str) -> Option<Arc<EngineSession>> {
        self.table().get(sid)
    }

    /// Sessions open.
    pub fn sessions(&self) -> usize {
        self.table().len()
    }

    /// Opens a session, its sid beginning with `route` (the handshake's `t`), and starts its
    /// app; it leaves the table when the app ends.
    pub fn open(
        self: &Arc<Self>,
        service: Service,
        opening: Opening,
        route: Option<&str>,
        pre: Option<Authenticated>,
    ) -> Result<Arc<EngineSession>, Refused> {
        let budget = self.apps.hub.budget().clone();
        // Inbound: two full payloads may wait for the app.
        let (end, peer) = pipe(
            2 * self.settings.max_payload,
            self.settings.max_outbound,
            budget,
        );
        let caps = (
            self.settings.max_sessions,
            self.settings.max_sessions_per_ip,
        );
        let client = opening.client;
        let session = self.table().add(peer, opening, route, caps)?;
        let me = self.clone();
        let sid = session.sid().to_owned();
        let timing = self.timing(service);
        let (apps, shutdown) = (self.apps.clone(), self.shutdown.clone());
        let span = app_span("engineio");
        let run = async move {
            server::run(end, service, timing, pre, client, apps, shutdown).await;
            me.table().remove(&sid);
        };
        self.tracker
            .spawn(tracing::Instrument::instrument(run, span));
        Ok(session)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
