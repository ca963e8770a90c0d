//! SockJS sessions (protocol 0.3.3): the table of sessions by URL, their apps (STOMP, the raw
//! JSON protocol, the conformance echo services), receiving requests that stream or long-poll
//! what the app sent, and the client's sends. URL routing, CORS and auth are `http::sockjs`'s.
//!
//! A session lives from its first receiving request until the app closes it or no receiving
//! request has been open for `disconnect_delay`; then it is swept and its app told the client
//! left. Only one receiving request may be open at a time (a second gets `c[2010,…]`).

mod apps;
pub mod frames;
mod websocket;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

pub use self::apps::App;
use self::apps::Apps;
use self::frames::Wrap;
pub use self::websocket::SockJsWebSocket;
use crate::auth::Auth;
use crate::endpoints::pipe::{app_span, pipe, Busy, PeerEnd};
use crate::endpoints::stomp::Stomp;
use crate::endpoints::streaming::{streamed, Feed, Streamed};
use crate::hub::{ChatSettings, Hub};

/// Longest session id accepted (sockjs-client makes 8 characters).
const MAX_SESSION_ID: usize = 64;

/// SockJS timing and bounds.
#[derive(Clone, Debug)]
pub struct SockJsSettings {
    /// A receiving request with nothing to send sends `h` after this long.
    pub heartbeat: Duration,
    /// A session with no receiving request this long is closed.
    pub disconnect_delay: Duration,
    /// A streaming response ends once it carried this many bytes (the client opens the next).
    pub response_limit: usize,
    /// Sessions open at once, in all.
    pub max_sessions: usize,
    /// Sessions open at once per client address (0: no cap).
    pub max_sessions_per_ip: usize,
    /// `jsonp` and `htmlfile` served (they exist for very old browsers).
    pub legacy: bool,
    /// Longest wait for a client to take a chunk of a streaming response.
    pub write_timeout: Duration,
    /// Bytes a client may have sent that its app has not taken yet.
    pub max_inbound: usize,
    /// Bytes the app may have sent that no receiving request has taken yet.
    pub max_outbound: usize,
}

/// One session.
pub struct Session {
    peer: PeerEnd,
    client: IpAddr,
    /// Where the session counts against the per-address cap (an IPv6 client's /64).
    counted_as: IpAddr,
    slot: Mutex<Slot>,
}

/// Who receives for a session, and since when nobody has.
struct Slot {
    receiving: bool,
    opened: bool,
    idle_since: Instant,
}

impl Session {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's address when the session began (its requests must come from it).
    pub fn client(&self) -> IpAddr {
        self.client
    }
}

/// How a receiving request answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One frame, then the answer ends (`xhr`, `jsonp`).
    Polling,
    /// Frames until the response limit (`xhr_streaming`, `eventsource`, `htmlfile`).
    Streaming,
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum Refused {
    /// The server holds as many sessions as it may.
    Full,
    /// The client's address holds as many sessions as it may.
    TooManyFromAddress,
}

/// The SockJS endpoint: every session, and what their apps need.
pub struct SockJs {
    settings: SockJsSettings,
    sessions: Mutex<Table>,
    apps: Apps,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Session>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// What the SockJS endpoint is built from.
pub struct SockJsParts {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The STOMP endpoint.
    pub stomp: Arc<Stomp>,
    /// Limits of raw JSON clients.
    pub chat: Arc<ChatSettings>,
    /// Accounts and tokens.
    pub auth: Arc<Auth>,
    /// Largest raw JSON message.
    pub max_message: usize,
    /// Where app tasks run, so shutdown waits for them.
    pub tracker: TaskTracker,
    /// Cancelled at shutdown: every app closes its session.
    pub shutdown: CancellationToken,
}

impl SockJs {
    /// The endpoint; its sweeper runs until shutdown.
    pub fn new(settings: SockJsSettings, parts: SockJsParts) -> Arc<Self> {
        let apps = Apps {
            hub: parts.hub,
            stomp: parts.stomp,
            chat: parts.chat,
            auth: parts.auth,
            max_message: parts.max_message,
            write_timeout: settings.write_timeout,
        };
        Arc::new(Self {
            settings,
            sessions: Mutex::default(),
            apps,
            tracker: parts.tracker,
            shutdown: parts.shutdown,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SockJsSettings {
        &self.settings
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session `key` names (prefix and session id), if it is open.
    pub fn find(&self, key: &str) -> Option<Arc<Session>> {
        self.table().by_id.get(key).cloned()
    }

    /// A session id a client may use: 1–64 characters, no `/` or `.`.
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= MAX_SESSION_ID && !id.contains(['/', '.'])
    }

    /// Opens session `key` for `client`, counted against the cap of `counted_as` (its /64 for
    /// IPv6), running `app`. If another request opened `key` meanwhile (both found it missing
    /// before authenticating), that session is returned and `app` never runs: replacing it
    /// would leave its app running for ever and its address's count one too high.
    pub fn open(
        &self,
        key: &str,
        client: IpAddr,
        counted_as: IpAddr,
        app: App,
    ) -> Result<Arc<Session>, Refused> {
        let (end, peer) = pipe(
            self.settings.max_inbound,
            self.settings.max_outbound,
            self.apps.hub.budget().clone(),
        );
        let session = Arc::new(Session {
            peer,
            client,
            counted_as,
            slot: Mutex::new(Slot {
                receiving: false,
                opened: false,
                idle_since: Instant::now(),
            }),
        });
        {
            let mut table = self.table();
            if let Some(opened) = table.by_id.get(key) {
                return Ok(opened.clone());
            }
            if table.by_id.len() >= self.settings.max_sessions {
                return Err(Refused::Full);
            }
            let per_ip = table.per_ip.entry(counted_as).or_default();
            if self.settings.max_sessions_per_ip > 0 && *per_ip >= self.settings.max_sessions_per_ip
            {
                return Err(Refused::TooManyFromAddress);
            }
            *per_ip += 1;
            table.by_id.insert(key.to_owned(), session.clone());
        }
        let run = self.apps.run(app, end, self.shutdown.clone());
        let span = app_span("sockjs");
        self.tracker
            .spawn(tracing::Instrument::instrument(run, span));
        Ok(session)
    }

    /// Hands a client's `xhr_send`/`jsonp_send` messages ([`frames::parse_sent`]) to its
    /// session's app; `Err` when the app has not taken what the client sent before.
    pub fn send(&self, session: &Session, messages: Vec<Bytes>) -> Result<(), Busy> {
        session.peer.push(messages)
    }

    /// A receiving request on `session`: its body, fed by a task until the answer is complete.
    /// `prelude` goes first (the streaming transports' padding).
    pub fn receive(
        &self,
        session: Arc<Session>,
        wrap: Wrap,
        mode: Mode,
        prelude: Option<Bytes>,
    ) -> Streamed {
        let (feed, body) = streamed(self.settings.write_timeout);
        let receiver = Receiver {
            session,
            wrap,
            mode,
            feed,
            heartbeat: self.settings.heartbeat,
            limit: self.settings.response_limit,
            sent: 0,
        };
        self.tracker.spawn(receiver.run(prelude));
        body
    }

    /// Starts `app` for a WebSocket, whose session is the WebSocket itself, outside the table:
    /// SockJS-framed at `…/<server>/<session>/websocket`, or with `framed` false one message
    /// per WebSocket message (`<prefix>/websocket` of the conformance services; the chat
    /// prefixes' plain WebSockets are `/stomp`'s and `/ws`'s own).
    pub fn websocket(&self, app: App, framed: bool) -> SockJsWebSocket {
        let (end, peer) = pipe(
            self.settings.max_inbound,
            self.settings.max_outbound,
            self.apps.hub.budget().clone(),
        );
        self.tracker
            .spawn(self.apps.run(app, end, self.shutdown.clone()));
        SockJsWebSocket::new(
            peer,
            self.settings.heartbeat,
            framed,
            self.settings.response_limit,
        )
    }

    /// Closes sessions nobody has received for `disconnect_delay`, until shutdown.
    pub async fn sweep(self: Arc<Self>) {
        let every = (self.settings.disconnect_delay / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = sleep(every) => {}
            }
            self.sweep_once();
        }
    }

    fn sweep_once(&self) {
        let now = Instant::now();
        let delay = self.settings.disconnect_delay;
        let mut table = self.table();
        let mut gone = Vec::new();
        table.by_id.retain(|_, session| {
            let slot = session.slot();
            // A closed session goes however its client keeps asking (each ask would answer
            // the close frame and keep it another delay).
            let closed_long_ago = session
                .peer
                .closed_at()
                .is_some_and(|at| at.elapsed() >= delay);
            let stale =
                closed_long_ago || !slot.receiving && now.duration_since(slot.idle_since) >= delay;
            if stale {
                gone.push(session.clone());
            }
            !stale
        });
        for session in gone {
            if let Some(count) = table.per_ip.get_mut(&session.counted_as) {
                *count -= 1;
                if *count == 0 {
                    table.per_ip.remove(&session.counted_as);
                }
            }
            // Not its id: a SockJS session id is as good as a credential for its address.
            debug!("SockJS session closed: no receiving request");
            session.peer.leave();
        }
    }
}

/// One receiving request.
struct Receiver {
    session: Arc<Session>,
    wrap: Wrap,
    mode: Mode,
    feed: Feed,
    heartbeat: Duration,
    limit: usize,
    sent: usize,
}

impl Receiver {
    async fn run(mut self, prelude: Option<Bytes>) {
        if let Some(prelude) = prelude {
            if self.feed.send(prelude).await.is_err() {
                return;
            }
        }
        let first = {
            let mut slot = self.session.slot();
            if slot.receiving {
                None
            } else {
                slot.receiving = true;
                Some(!std::mem::replace(&mut slot.opened, true))
            }
        };
        let Some(opening) = first else {
            let frame = frames::close(2010, "Another connection still open");
            let _ = self.frame(&frame).await;
            return;
        };
        if opening {
            if self.frame(frames::OPEN).await.is_ok() && self.mode == Mode::Streaming {
                self.stream().await;
            }
        } else {
            self.stream().await;
        }
        let mut slot = self.session.slot();
        slot.receiving = false;
        slot.idle_since = Instant::now();
    }

    /// Sends what the app sends until the answer is complete or the client goes.
    async fn stream(&mut self) {
        let peer = self.session.peer.clone();
        loop {
            if let Some(taken) = peer.take(self.limit) {
                if !taken.messages.is_empty() {
                    let sent = self.frame(&frames::messages(&taken.messages)).await;
                    // A poll carries one frame: a close after these goes to the next poll.
                    if sent.is_err() || self.mode == Mode::Polling {
                        return;
                    }
                }
                if let Some((code, reason)) = taken.close {
                    let _ = self.frame(&frames::close(code, &reason)).await;
                    return;
                }
                if self.mode == Mode::Polling || self.sent >= self.limit {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = peer.ready() => {}
                () = sleep(self.heartbeat) => {
                    if self.frame(frames::HEARTBEAT).await.is_err() || self.mode == Mode::Polling {
                        return;
                    }
                }
                () = self.feed.gone() => return,
            }
        }
    }

    async fn frame(&mut self, frame: &[u8]) -> Result<(), ()> {
        let chunk = self.wrap.frame(frame);
        self.sent += chunk.len();
        self.feed.send(chunk).await.map_err(|_| ())
    }
}
