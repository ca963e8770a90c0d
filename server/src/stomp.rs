//! STOMP sessions over plain TCP or WebSocket, sharing one broker.
//!
//! Each connection is one task that owns its socket, its [`Session`] and its decoder. The
//! broker sits behind one mutex in [`StompHub`]; an operation runs and dispatches its deliveries
//! under that lock, so every subscriber of a topic sees its messages in the same order.
//! Deliveries go into each session's bounded outbox without blocking: a session whose outbox is
//! full is a slow consumer and is closed with an ERROR frame (nats-server's policy), so it can
//! never stall a publisher or the other subscribers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parley_protocol::frame::{FrameHeader, OpCode};
use parley_protocol::{CloseCode, Connection, Event, Message};
use parley_stomp::broker::{
    Broker, BrokerEvent, BrokerLimits, Delivery, Forwarded, Publish, Receipt, SessionId,
};
use parley_stomp::destination::Destination;
use parley_stomp::session::{AccessPolicy, Flow, Identity, Session, SessionConfig};
use parley_stomp::{Command, Decoder, Frame, Limits, SharedMessage};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::acl::Acl;
use crate::auth::{self, Auth, Authenticated, LoginError};
use crate::cluster::{channel_of, Cluster, RoomOrder, Watching};
use crate::journal::{Completion, Journal};
use crate::mailbox;
use crate::store::{Room, Store, StoredMessage};
use crate::ws::{read_when_ready, release_if_empty, write_all, ReadReady};

/// The destination a STOMP client SENDs a fresh access token to, to renew its session in-band.
pub const AUTH_DESTINATION: &str = "/app/auth";
/// Longest wait for a password check (it queues behind other logins) before CONNECT fails.
const PASSWORD_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Most messages one catch-up replays; older ones are paged with history.
pub const MAX_REPLAY: usize = 10_000;
/// Bytes of frame-header scratch a WebSocket session allocates at a time.
const HEAD_SCRATCH: usize = 1024;
/// Client frames applied in one step under the broker's lock.
const MAX_FRAME_BATCH: usize = 64;
/// Deliveries taken from the outbox before flushing, so a busy session writes in batches.
const MAX_BATCH: usize = 256;

/// Settings of the STOMP side.
#[derive(Clone, Debug)]
pub struct StompSettings {
    /// Frame limits.
    pub limits: Limits,
    /// Broker limits.
    pub broker: BrokerLimits,
    /// Server heart-beat offer (send, receive) in ms.
    pub heart_beat: (u64, u64),
    /// Largest body of a room message.
    pub max_room_body: usize,
    /// SENDs per second per session (0: unlimited).
    pub rate_limit: u32,
    /// Deliveries a session may have queued before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Time from TCP accept (or WebSocket upgrade) to CONNECT.
    pub connect_timeout: Duration,
    /// A write making no progress this long drops the connection.
    pub write_timeout: Duration,
    /// WebSocket only: ping after half of this without input, close after all of it.
    pub idle_timeout: Duration,
}

/// Counters shown at `/stats`.
#[derive(Debug, Default)]
pub struct StompStats {
    /// Open STOMP connections.
    pub sessions: AtomicU64,
    /// Messages accepted by the broker (SEND that took effect).
    pub frames_in: AtomicU64,
    /// Deliveries handed to outboxes.
    pub deliveries: AtomicU64,
    /// Sessions closed because their outbox was full or they left too much unacknowledged.
    pub slow_consumers: AtomicU64,
}

/// The broker and every session's outbox.
pub struct StompHub {
    inner: Mutex<HubInner>,
    config: Arc<SessionConfig>,
    settings: StompSettings,
    next_session: AtomicU64,
    /// Numbers unnamed guests.
    next_guest: AtomicU64,
    store: Arc<dyn Store>,
    journal: Journal,
    /// Room rules; also tells which rooms exist, so a join creates a room only the first time.
    acl: Arc<Acl>,
    /// Accounts and tokens.
    auth: Arc<Auth>,
    /// Counters, read by `/stats`.
    pub stats: StompStats,
    /// Cluster mode: the bus to the other nodes.
    cluster: Option<Arc<Cluster>>,
    /// This hub, for work that outlives a call (storage completions, reads from storage).
    me: Weak<StompHub>,
    /// Where that work runs: storage completions come from the journal's own thread.
    runtime: tokio::runtime::Handle,
}

struct HubInner {
    broker: Broker,
    outboxes: HashMap<SessionId, Outbox>,
    /// Deliveries of the operation in progress, handed to outboxes grouped by session when it
    /// ends (still under the lock, so order holds): a subscriber woken once finds the whole
    /// batch and writes it with one syscall. Kept to reuse its allocation.
    pending: Vec<Delivery>,
    /// Cluster mode: what the operation in progress sends to other nodes.
    forwards: Vec<(Option<SessionId>, Forwarded, Option<Receipt>)>,
    /// Cluster mode: fan-out keys that gained their first (`true`) or lost their last
    /// (`false`) subscriber here during the operation in progress.
    watch_changes: Vec<(String, bool)>,
    /// Cluster mode: per-room order of numbered messages.
    order: HashMap<String, RoomOrder>,
    /// Cluster mode: what this node receives from the bus.
    watching: Watching,
}

/// Where [`StompHub::dispatch`] puts what an operation's events ask for.
struct Effects<'a> {
    pending: &'a mut Vec<Delivery>,
    forwards: &'a mut Vec<(Option<SessionId>, Forwarded, Option<Receipt>)>,
    watch_changes: &'a mut Vec<(String, bool)>,
}

/// Messages one room may have waiting for their predecessors on a node.
const MAX_AHEAD: usize = 10_000;

/// Which protocol a session speaks, for messages the hub writes to it directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    /// STOMP frames.
    Stomp,
    /// The raw JSON protocol.
    Raw,
}

/// The sending side of a session's bounded queue of deliveries.
struct Outbox {
    speaks: Speaks,
    tx: mailbox::Sender<Delivery>,
    /// Acknowledgements (RECEIPT, JSON acks) that come back from storage.
    control: mailbox::Sender<Bytes>,
    evicted: Arc<Eviction>,
}

/// What the transport already knows about a STOMP client before its CONNECT.
pub struct Credentials {
    /// Who the WebSocket upgrade request authenticated, if anyone.
    pub pre: Option<Authenticated>,
    /// The client's address, for login throttling.
    pub peer: IpAddr,
}

/// What a session's task receives from the hub.
pub struct SessionChannels {
    /// The session's id in the broker.
    pub id: SessionId,
    /// Messages for its subscriptions.
    pub deliveries: mailbox::Receiver<Delivery>,
    /// Encoded acknowledgements to write as they are.
    pub control: mailbox::Receiver<Bytes>,
    /// A sender into `control`, for replies computed off the session's task.
    pub control_tx: mailbox::Sender<Bytes>,
    /// Cancelled when the session must be closed.
    pub evicted: Arc<Eviction>,
}

/// Set once when the hub decides a session must go.
#[derive(Default)]
pub struct Eviction {
    /// The WebSocket close code and the reason, which is also a STOMP ERROR's message.
    reason: OnceLock<(CloseCode, String)>,
    token: CancellationToken,
}

impl Eviction {
    /// Cancelled once the session must be closed.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The close code and why the session must be closed.
    pub fn reason(&self) -> (CloseCode, &str) {
        self.reason
            .get()
            .map_or((CloseCode::POLICY_VIOLATION, "evicted"), |(c, r)| (*c, r))
    }

    /// Closes a consumer that cannot keep up (1008).
    pub fn evict_slow(&self, reason: &str) -> bool {
        self.evict(
            CloseCode::POLICY_VIOLATION,
            format!("slow consumer: {reason}"),
        )
    }

    /// Closes the session with `code` and `reason`; `true` the first time.
    pub fn evict(&self, code: CloseCode, reason: String) -> bool {
        let first = self.reason.set((code, reason)).is_ok();
        self.token.cancel();
        first
    }
}

impl StompHub {
    /// A hub with an empty broker.
    pub fn new(
        settings: StompSettings,
        store: Arc<dyn Store>,
        journal: Journal,
        auth: Arc<Auth>,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<Arc<Self>> {
        let acl = Acl::load(&*store)?;
        let mut config = SessionConfig::default();
        config.access = AccessPolicy(acl.clone());
        config.server = format!("parley/{}", env!("CARGO_PKG_VERSION"));
        config.heart_beat = settings.heart_beat;
        config.max_room_body = settings.max_room_body;
        config.rate_limit = settings.rate_limit;
        let mut broker = Broker::new(settings.broker.clone());
        broker.set_forwarding(cluster.is_some());
        // Room ids continue where storage left off, so they never go backwards.
        for (room, last) in store.last_ids()? {
            broker.seed_room(&room, last);
        }
        Ok(Arc::new_cyclic(|me| Self {
            inner: Mutex::new(HubInner {
                broker,
                outboxes: HashMap::new(),
                pending: Vec::new(),
                forwards: Vec::new(),
                watch_changes: Vec::new(),
                order: HashMap::new(),
                watching: Watching::default(),
            }),
            config: Arc::new(config),
            settings,
            next_session: AtomicU64::new(1),
            next_guest: AtomicU64::new(1),
            stats: StompStats::default(),
            acl,
            auth,
            store,
            journal,
            cluster,
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// The message store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Room rules.
    pub fn acl(&self) -> &Arc<Acl> {
        &self.acl
    }

    /// Accounts and tokens.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Waits until everything queued for storage so far is durable; `false` if storage failed.
    pub async fn durable(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.journal.barrier(Box::new(move |ok| {
            let _ = tx.send(ok);
        }));
        matches!(rx.await, Ok(true))
    }

    /// Creates a room in memory for `owner`, under the broker's lock; if private, everyone but the
    /// owner loses subscriptions made while the name was free. `false` if the room exists.
    pub fn claim_room(&self, room: &str, private: bool, owner: &str) -> bool {
        let ended = self.apply(|broker, events| {
            if !self.acl.create(room, private, Some(owner)) {
                return None;
            }
            Some(if private {
                broker.revoke_room_where(room, &|user, guest| guest || user != owner, events)
            } else {
                Vec::new()
            })
        });
        match ended {
            None => false,
            Some(ended) => {
                self.tell_revoked(room, ended);
                true
            }
        }
    }

    /// Closes the sessions of guests named `name` (it was just registered).
    pub fn evict_guests_named(&self, name: &str) {
        let guard = self.lock();
        for session in guard.broker.sessions_of(name, true) {
            if let Some(outbox) = guard.outboxes.get(&session) {
                let code = CloseCode::from_wire(4401).unwrap_or(CloseCode::POLICY_VIOLATION);
                outbox.evicted.evict(
                    code,
                    format!("the name {name:?} now belongs to a registered user"),
                );
            }
        }
    }

    /// Tells a room's members that message `id` was deleted: an `event:delete` on the room's
    /// presence channel, with `deleted-id`.
    pub fn announce_deleted(&self, room: &str, id: u64, by: &str) {
        let Ok(destination) = Destination::parse(&format!("/topic/{room}.presence")) else {
            return;
        };
        let publish = Publish {
            headers: vec![
                ("event".to_owned(), "delete".to_owned()),
                ("deleted-id".to_owned(), id.to_string()),
            ],
            now_ms: now_ms(),
            ..Publish::default()
        };
        let by: Arc<str> = by.into();
        self.apply(|broker, events| {
            let _ = broker.publish_as(by, &destination, publish, events);
        });
    }

    /// Ends `user`'s subscriptions to `room` and tells their sessions: raw clients get an error
    /// and stay connected; STOMP sessions (which have no other way to learn it) get an ERROR.
    pub fn revoke_room(&self, user: &str, room: &str) {
        let ended = self.apply(|broker, events| broker.revoke_room(user, room, events));
        self.tell_revoked(room, ended);
    }

    fn tell_revoked(&self, room: &str, ended: Vec<(SessionId, Arc<str>)>) {
        let why = format!("forbidden: you were removed from room {room:?}");
        let guard = self.lock();
        let mut told = Vec::new();
        for (session, _) in ended {
            if told.contains(&session) {
                continue;
            }
            told.push(session);
            let Some(outbox) = guard.outboxes.get(&session) else {
                continue;
            };
            match outbox.speaks {
                Speaks::Stomp => {
                    outbox
                        .evicted
                        .evict(CloseCode::POLICY_VIOLATION, why.clone());
                }
                Speaks::Raw => {
                    let json = serde_json::json!({
                        "type": "error", "code": "forbidden", "room": room, "message": why,
                    });
                    let frame = parley_protocol::frame::encode(
                        OpCode::Text,
                        &serde_json::to_vec(&json).unwrap_or_default(),
                    );
                    let _ = outbox.control.try_send(frame);
                }
            }
        }
    }

    /// The stored messages of `room` with `since < id <= last` (at most [`MAX_REPLAY`]), read
    /// once everything queued so far is durable, so no message up to `last` is missing.
    pub fn stored_between(
        &self,
        room: String,
        since: u64,
        last: u64,
    ) -> oneshot::Receiver<anyhow::Result<Vec<StoredMessage>>> {
        let (result_tx, result_rx) = oneshot::channel();
        let (durable_tx, durable_rx) = oneshot::channel();
        self.journal.barrier(Box::new(move |ok| {
            let _ = durable_tx.send(ok);
        }));
        let store = self.store.clone();
        tokio::spawn(async move {
            if !matches!(durable_rx.await, Ok(true)) {
                let _ = result_tx.send(Err(anyhow::anyhow!("storage is not keeping up")));
                return;
            }
            let limit = usize::try_from(last.saturating_sub(since))
                .unwrap_or(MAX_REPLAY)
                .min(MAX_REPLAY);
            let read = tokio::task::spawn_blocking(move || store.after(&room, since, limit)).await;
            let result = read
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .map(|messages| messages.into_iter().filter(|m| m.id <= last).collect());
            let _ = result_tx.send(result);
        });
        result_rx
    }

    /// Runs STOMP over one plain TCP connection from `peer`.
    pub async fn serve_tcp(
        self: Arc<Self>,
        stream: TcpStream,
        peer: IpAddr,
        shutdown: CancellationToken,
    ) {
        let transport = TcpTransport {
            stream,
            outbox: VecDeque::new(),
        };
        let who = Credentials { pre: None, peer };
        self.run(transport, BytesMut::new(), who, shutdown).await;
    }

    /// Runs STOMP over an upgraded WebSocket.
    pub async fn serve_websocket<S>(
        self: Arc<Self>,
        io: S,
        leftover: BytesMut,
        conn: Connection,
        who: Credentials,
        shutdown: CancellationToken,
    ) where
        S: ReadReady + AsyncWrite + Send,
    {
        let transport = WsTransport {
            io,
            rbuf: leftover,
            conn,
            outbox: VecDeque::new(),
            heads: BytesMut::new(),
        };
        self.run(transport, BytesMut::new(), who, shutdown).await;
    }

    /// The per-connection loop: decode client frames, apply them, write replies and deliveries,
    /// keep heart-beats, and clean up whatever way the connection ends.
    async fn run<T: Transport>(
        self: Arc<Self>,
        mut transport: T,
        mut inbound: BytesMut,
        who: Credentials,
        shutdown: CancellationToken,
    ) {
        let SessionChannels {
            id,
            deliveries: mut rx,
            mut control,
            evicted,
            ..
        } = self.open_session(Speaks::Stomp);
        // When the credential runs out (ms since the epoch), unless renewed with /app/auth.
        let mut expires_ms: Option<u64> = None;
        let mut prefix: PrefixCache = None;
        let mut session = Session::new(id, self.config.clone());
        let mut decoder = Decoder::new(self.settings.limits.clone());
        let started = Instant::now();
        let mut last_in = Instant::now();
        let mut last_out = Instant::now();
        let mut ws_ping_sent = false;
        let mut close_code = CloseCode::NORMAL;
        // Catch-ups in progress: live deliveries wait until their stored messages are written.
        let mut replays: VecDeque<Replay> = VecDeque::new();
        // Cluster mode: channels the replies queued so far wait for.
        let mut hold: Vec<watch::Receiver<bool>> = Vec::new();
        let reason: Option<String> = 'conn: loop {
            // Everything already buffered, in order: plain frames in batches, CONNECT and
            // /app/auth (which need async work) on their own.
            let mut batch: Vec<Frame> = Vec::new();
            let mut malformed = None;
            loop {
                let frame = match decoder.decode(&mut inbound) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        malformed = Some(format!("malformed frame: {error}"));
                        break;
                    }
                };
                let special = if session.is_connected() {
                    frame.command == Command::Send
                        && frame.get("destination") == Some(AUTH_DESTINATION)
                } else {
                    matches!(frame.command, Command::Connect | Command::Stomp)
                };
                let special_frame = if special {
                    Some(frame)
                } else {
                    batch.push(frame);
                    if batch.len() < MAX_FRAME_BATCH {
                        continue;
                    }
                    None
                };
                if !batch.is_empty()
                    && self.handle_batch(
                        &mut session,
                        &mut batch,
                        &mut transport,
                        &mut replays,
                        &mut hold,
                    ) == Flow::Close
                {
                    break 'conn None;
                }
                let Some(frame) = special_frame else {
                    continue;
                };
                // CONNECT: who is this? /app/auth: a fresh token for the same user.
                let renewing = session.is_connected();
                let checked = if renewing {
                    self.renew(&session, &frame)
                } else {
                    // Boxed: CONNECT happens once, its state need not live in every idle session.
                    Box::pin(self.authenticate_connect(&frame, &who))
                        .await
                        .map(|a| {
                            session.authenticate(a.identity);
                            a.expires_ms
                        })
                };
                match checked {
                    Ok(exp) => expires_ms = exp,
                    Err(why) => {
                        let receipt = frame.get("receipt").map(str::to_owned);
                        transport.queue_frame(&[session.error_frame(&why, receipt)], true);
                        break 'conn None;
                    }
                }
                if renewing {
                    if let Some(receipt) = frame.get("receipt") {
                        let r = Frame::new(Command::Receipt).header("receipt-id", receipt);
                        let r = parley_stomp::codec::encode(&r, session.version());
                        transport.queue_frame(&[r], true);
                    }
                } else {
                    batch.push(frame);
                    let flow = self.handle_batch(
                        &mut session,
                        &mut batch,
                        &mut transport,
                        &mut replays,
                        &mut hold,
                    );
                    decoder.set_version(session.version());
                    if flow == Flow::Close {
                        break 'conn None;
                    }
                }
            }
            if !batch.is_empty()
                && self.handle_batch(
                    &mut session,
                    &mut batch,
                    &mut transport,
                    &mut replays,
                    &mut hold,
                ) == Flow::Close
            {
                break 'conn None;
            }
            if let Some(reason) = malformed {
                break 'conn Some(reason);
            }
            release_if_empty(&mut inbound);
            if !hold.is_empty() {
                until_live(std::mem::take(&mut hold)).await;
            }
            // A consumer too slow to take what it is sent blocks here; eviction cuts it loose
            // at once instead of after the write timeout.
            let flushed = tokio::select! {
                flushed = transport.flush(self.settings.write_timeout) => flushed,
                () = evicted.token.cancelled() => Err(io::Error::other("slow consumer evicted while writing")),
            };
            if let Err(error) = flushed {
                debug!(%error, "STOMP write failed");
                self.finish(id, &mut session);
                Box::pin(transport.close(CloseCode::POLICY_VIOLATION, Duration::from_millis(100)))
                    .await;
                return;
            }
            if transport.is_closed() {
                break None;
            }
            let beat = session.heart_beat();
            let expiry = expires_ms.map(instant_at);
            // Checked every turn, not only when the timer branch wins: a client that keeps the
            // socket busy must not outlive its token.
            if session.is_connected() && expiry.is_some_and(|at| Instant::now() >= at) {
                break Some("token expired".to_owned());
            }
            let mut deadline = if session.is_connected() {
                let recv = beat.expect_within.map(|d| last_in + d);
                let send = beat.send_every.map(|d| last_out + d);
                [recv, send, expiry].into_iter().flatten().min()
            } else {
                Some(started + self.settings.connect_timeout)
            };
            if let Some(idle) = transport.idle_timeout(self.settings.idle_timeout) {
                let ws_deadline = last_in + if ws_ping_sent { idle } else { idle / 2 };
                deadline = Some(deadline.map_or(ws_deadline, |d| d.min(ws_deadline)));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    close_code = CloseCode::GOING_AWAY;
                    break Some("server shutting down".to_owned());
                }
                () = evicted.token.cancelled() => {
                    break Some(evicted.reason().1.to_owned());
                }
                Some(ack) = control.recv() => {
                    transport.queue_frame(&[ack], true);
                    last_out = Instant::now();
                }
                (replay, stored) = next_replay(&mut replays) => {
                    let Ok(messages) = stored else { break Some("catch-up failed: storage error".to_owned()) };
                    for m in messages {
                        let mut headers = vec![
                            ("destination".to_owned(), format!("/topic/{}", replay.room)),
                            ("message-id".to_owned(), m.id.to_string()),
                            ("timestamp".to_owned(), m.ts.to_string()),
                            ("sender".to_owned(), m.from),
                        ];
                        if m.guest {
                            headers.push(("sender-guest".to_owned(), "true".to_owned()));
                        }
                        if m.deleted {
                            headers.push(("deleted".to_owned(), "true".to_owned()));
                        }
                        headers.push(("content-type".to_owned(), "text/plain;charset=utf-8".to_owned()));
                        let message = SharedMessage::new(headers, Bytes::from(m.body));
                        let parts = session.message_parts(&replay.subscription, None, &message);
                        transport.queue_frame(&parts, true);
                    }
                    last_out = Instant::now();
                }
                delivery = rx.recv(), if replays.is_empty() => {
                    let Some(first) = delivery else { break Some("internal error".to_owned()) };
                    self.queue_delivery(&mut transport, &session, &mut prefix, first);
                    for _ in 1..MAX_BATCH {
                        match rx.try_recv() {
                            Some(d) => self.queue_delivery(&mut transport, &session, &mut prefix, d),
                            None => break,
                        }
                    }
                    last_out = Instant::now();
                }
                read = transport.read(&mut inbound) => match read {
                    Ok(true) => {
                        last_in = Instant::now();
                        ws_ping_sent = false;
                    }
                    Ok(false) | Err(_) => {
                        // The peer left (or closed its WebSocket): answer what is owed, then go.
                        self.finish(id, &mut session);
                        Box::pin(async {
                            let _ = transport.flush(self.settings.write_timeout).await;
                            transport.close(CloseCode::NORMAL, self.settings.write_timeout).await;
                        })
                        .await;
                        return;
                    }
                },
                () = sleep_until(deadline.unwrap_or_else(far_future)) => {
                    let now = Instant::now();
                    if !session.is_connected() {
                        break Some("no CONNECT frame in time".to_owned());
                    }
                    if expiry.is_some_and(|at| now >= at) {
                        break Some("token expired".to_owned());
                    }
                    if beat.expect_within.is_some_and(|d| now >= last_in + d) {
                        break Some("heart-beat timeout: nothing received from the client".to_owned());
                    }
                    if let Some(idle) = transport.idle_timeout(self.settings.idle_timeout) {
                        if now >= last_in + idle {
                            break Some("idle timeout".to_owned());
                        }
                        if !ws_ping_sent && now >= last_in + idle / 2 {
                            transport.ping();
                            ws_ping_sent = true;
                        }
                    }
                    if beat.send_every.is_some_and(|d| now >= last_out + d) {
                        transport.queue_frame(&[Bytes::from_static(b"\n")], true);
                        last_out = now;
                    }
                }
            }
        };
        if let Some(message) = reason {
            debug!(session = id, %message, "closing STOMP session with ERROR");
            transport.queue_frame(&[session.error_frame(&message, None)], true);
        }
        self.finish(id, &mut session);
        let write_timeout = self.settings.write_timeout;
        Box::pin(async {
            let _ = transport.flush(write_timeout).await;
            transport.close(close_code, write_timeout).await;
        })
        .await;
    }

    /// Decides who a CONNECT frame is: a JWT in `passcode` or `Authorization`, a username and
    /// password, the identity of the WebSocket upgrade, or a guest. `Err` is the ERROR message.
    async fn authenticate_connect(
        &self,
        frame: &Frame,
        who: &Credentials,
    ) -> Result<Authenticated, String> {
        let failed = |why: &str| format!("authentication failed: {why}");
        let login = frame.get("login").filter(|l| !l.is_empty());
        let passcode = frame.get("passcode").filter(|p| !p.is_empty());
        let bearer = frame
            .get("Authorization")
            .or_else(|| frame.get("authorization"))
            .and_then(auth::bearer_value);
        let token = bearer.or(passcode.filter(|p| auth::looks_like_jwt(p)));
        if let Some(token) = token {
            let authenticated = self.auth.verify(token).map_err(|e| failed(&e))?;
            if login.is_some_and(|l| l != &*authenticated.identity.name) {
                return Err(failed("login does not match the token's user"));
            }
            return Ok(authenticated);
        }
        match (login, passcode) {
            (Some(login), Some(password)) => {
                let check = self.auth.check_password(login, password, who.peer);
                match timeout(PASSWORD_CHECK_TIMEOUT, check).await {
                    Ok(Ok(())) => Ok(self.auth.session_for(login)),
                    Ok(Err(LoginError::Invalid)) => Err(failed("invalid username or password")),
                    Ok(Err(e)) => Err(failed(&e.to_string())),
                    Err(_) => Err(failed("the server is busy; try again")),
                }
            }
            (name, None) => match &who.pre {
                // The upgrade request already said who this is.
                Some(pre) if name.is_none_or(|n| n == &*pre.identity.name) => Ok(pre.clone()),
                _ => self.guest(name).await.map_err(|e| failed(&e)),
            },
            (None, Some(_)) => Err(failed("passcode without login is not a token")),
        }
    }

    /// A guest named `name` (or `guest-<n>`), if guests are allowed and the name is no account's.
    pub async fn guest(&self, name: Option<&str>) -> Result<Authenticated, String> {
        if !self.auth.settings().allow_guests {
            return Err("an account is required (guests are not allowed)".into());
        }
        let name = match name {
            Some(name) => {
                let name = parley_stomp::destination::valid_user(name)
                    .ok_or("names are 1-32 of letters, digits, _ - .")?;
                if name.starts_with(auth::GUEST_PREFIX) {
                    return Err("names starting with guest- are given by the server".into());
                }
                match self.auth.is_registered(&name).await {
                    Ok(false) => name,
                    Ok(true) => {
                        return Err(format!(
                            "the name {name:?} belongs to a registered user; sign in"
                        ))
                    }
                    Err(_) => return Err("storage error".into()),
                }
            }
            None => format!(
                "{}{}",
                auth::GUEST_PREFIX,
                self.next_guest.fetch_add(1, Ordering::Relaxed)
            ),
        };
        Ok(Authenticated {
            identity: Identity {
                name: name.into(),
                guest: true,
            },
            expires_ms: None,
        })
    }

    /// A `SEND /app/auth`: a fresh token for the same user extends the session.
    fn renew(&self, session: &Session, frame: &Frame) -> Result<Option<u64>, String> {
        let body = std::str::from_utf8(&frame.body).unwrap_or_default().trim();
        let token = frame
            .get("access-token")
            .or((!body.is_empty()).then_some(body))
            .ok_or("SEND to /app/auth needs an access-token header")?;
        let renewed = self
            .auth
            .verify(token)
            .map_err(|e| format!("authentication failed: {e}"))?;
        match session.identity() {
            Some(me) if !me.guest && me.name == renewed.identity.name => Ok(renewed.expires_ms),
            _ => Err("authentication failed: the token is for another user".into()),
        }
    }

    /// Registers a new session's outbox and returns what its task listens to.
    pub fn open_session(&self, speaks: Speaks) -> SessionChannels {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, deliveries) = mailbox::channel(self.settings.outbox_capacity);
        let (control_tx, control) = mailbox::channel(self.settings.outbox_capacity);
        let evicted = Arc::new(Eviction::default());
        self.lock().outboxes.insert(
            id,
            Outbox {
                speaks,
                tx,
                control: control_tx.clone(),
                evicted: evicted.clone(),
            },
        );
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        SessionChannels {
            id,
            deliveries,
            control,
            control_tx,
            evicted,
        }
    }

    /// Runs `op` on the broker under the lock; its deliveries go to outboxes at once and the
    /// presence changes it causes are announced before the lock is released.
    pub fn apply<R>(&self, op: impl FnOnce(&mut Broker, &mut dyn FnMut(BrokerEvent)) -> R) -> R {
        let now_ms = now_ms();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut presence = Vec::new();
        let result = op(&mut inner.broker, &mut |event| {
            self.dispatch(
                &inner.outboxes,
                event,
                &mut presence,
                &mut Effects {
                    pending: &mut inner.pending,
                    forwards: &mut inner.forwards,
                    watch_changes: &mut inner.watch_changes,
                },
            )
        });
        self.announce(inner, presence, now_ms);
        if self.cluster.is_some() {
            self.carry(inner);
        }
        self.deliver(&inner.outboxes, &mut inner.pending);
        result
    }

    /// Hands the operation's deliveries to their outboxes, each session's together. The sort is
    /// stable, so each session keeps its deliveries' order.
    fn deliver(&self, outboxes: &HashMap<SessionId, Outbox>, pending: &mut Vec<Delivery>) {
        if pending.len() > 1 {
            pending.sort_by_key(|d| d.session);
        }
        let mut delivered = 0;
        for delivery in pending.drain(..) {
            let Some(outbox) = outboxes.get(&delivery.session) else {
                continue;
            };
            match outbox.tx.try_send(delivery) {
                Ok(()) => delivered += 1,
                Err(mailbox::TrySendError::Full(d)) => {
                    if outbox
                        .evicted
                        .evict_slow("too many messages waiting to be written")
                    {
                        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        info!(session = d.session, "slow consumer disconnected");
                    }
                }
                Err(mailbox::TrySendError::Closed(_)) => {}
            }
        }
        self.stats
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
    }

    /// Applies one client frame.
    /// Applies client frames in one step under the broker's lock, stopping at the first that
    /// closes the session. A publisher's frames from one read are fanned out together, so each
    /// subscriber is woken once for all of them.
    /// Replies (CONNECTED, RECEIPT, ERROR) are queued on `transport`.
    fn handle_batch<T: Transport>(
        &self,
        session: &mut Session,
        frames: &mut Vec<Frame>,
        transport: &mut T,
        replays: &mut VecDeque<Replay>,
        hold: &mut Vec<watch::Receiver<bool>>,
    ) -> Flow {
        let subscribed = if self.cluster.is_some() {
            self.prepare_subscriptions(session, frames)
        } else {
            Vec::new()
        };
        let mut replies = Vec::new();
        let version = session.version();
        let mut catch_ups = Vec::new();
        let mut sends = 0;
        let flow = self.apply(|broker, events| {
            for frame in frames.drain(..) {
                // Never the headers: CONNECT carries passwords and tokens.
                tracing::trace!(
                    session = session_id(session),
                    command = frame.command.as_str(),
                    destination = frame.get("destination"),
                    "STOMP frame"
                );
                let is_send = frame.command == Command::Send;
                let catch_up = parley_stomp::session::catch_up(&frame, version);
                let flow = session.handle(frame, broker, now_ms(), &mut replies, events);
                if flow == Flow::Close {
                    return Flow::Close;
                }
                sends += u64::from(is_send);
                // The subscription and the room's last id are taken in one step: everything
                // after it arrives live, everything up to it is replayed.
                if let Some((room, subscription, since)) = catch_up {
                    let last = broker.room_last_id(&room);
                    if since < last {
                        catch_ups.push((room, subscription, since, last));
                    }
                }
            }
            Flow::Continue
        });
        frames.clear();
        for reply in replies {
            transport.queue_frame(&[reply], true);
        }
        // Replies (RECEIPTs above all) go out once this node receives what was subscribed to.
        hold.extend(self.not_live_yet(&subscribed));
        self.stats.frames_in.fetch_add(sends, Ordering::Relaxed);
        for (room, subscription, since, last) in catch_ups {
            replays.push_back(Replay {
                room: room.clone(),
                subscription,
                stored: self.stored_between(room, since, last),
            });
        }
        flow
    }

    /// Cluster mode: the fan-out keys the SUBSCRIBE frames among `frames` will watch, after
    /// readying the rooms among them (see [`StompHub::prepare_rooms`]).
    fn prepare_subscriptions(&self, session: &Session, frames: &[Frame]) -> Vec<String> {
        // Only for a connected session's well-formed destinations, and a few per batch: each
        // new room costs a storage read.
        if !session.is_connected() {
            return Vec::new();
        }
        let me = session.identity().map(|i| i.name.to_string());
        let mut keys = Vec::new();
        let mut rooms = Vec::new();
        for frame in frames
            .iter()
            .filter(|f| f.command == Command::Subscribe)
            .take(16)
        {
            let Some(destination) = frame.get("destination") else {
                continue;
            };
            if Destination::parse(destination).is_err() {
                continue;
            }
            if let Some(topic) = destination.strip_prefix("/topic/") {
                if !topic.contains('.') {
                    rooms.push(topic.to_owned());
                }
                keys.push(destination.to_owned());
            } else if let (Some(rest), Some(me)) = (destination.strip_prefix("/user/"), &me) {
                keys.push(format!("/user/{me}/{rest}"));
            }
        }
        self.prepare_rooms(&rooms);
        keys
    }

    /// Carries out one broker event; never blocks. Presence changes are collected to be
    /// announced once the operation that caused them is done.
    fn dispatch(
        &self,
        outboxes: &HashMap<SessionId, Outbox>,
        event: BrokerEvent,
        presence: &mut Vec<BrokerEvent>,
        fx: &mut Effects<'_>,
    ) {
        match event {
            BrokerEvent::Deliver(delivery) => fx.pending.push(delivery),
            BrokerEvent::Forward {
                session,
                message,
                receipt,
            } => fx.forwards.push((session, message, receipt)),
            BrokerEvent::Watch { key } => fx.watch_changes.push((key, true)),
            BrokerEvent::Unwatch { key } => fx.watch_changes.push((key, false)),
            BrokerEvent::Evict { session, reason } => {
                if let Some(outbox) = outboxes.get(&session) {
                    if outbox.evicted.evict_slow(reason) {
                        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        info!(session, reason, "slow consumer disconnected");
                    }
                }
            }
            BrokerEvent::Store {
                session,
                room,
                id,
                message,
                receipt,
            } => {
                self.ensure_room(&room, None);
                let stored = StoredMessage {
                    room,
                    id,
                    from: message.header("sender").unwrap_or_default().to_owned(),
                    ts: message
                        .header("timestamp")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default(),
                    body: String::from_utf8_lossy(message.body()).into_owned(),
                    guest: message.header("sender-guest") == Some("true"),
                    deleted: false,
                };
                let outbox = session.and_then(|s| outboxes.get(&s));
                let done = match (outbox, receipt) {
                    (Some(outbox), Some(receipt)) => {
                        let (control, evicted) = (outbox.control.clone(), outbox.evicted.clone());
                        let done: Completion = Box::new(move |ok| {
                            if !ok {
                                evicted.evict(
                                    CloseCode::INTERNAL_ERROR,
                                    "storage error: the message could not be stored".to_owned(),
                                );
                            } else if control.try_send((receipt.0)(id)).is_err() {
                                evicted
                                    .evict_slow("too many acknowledgements waiting to be written");
                            }
                        });
                        Some(done)
                    }
                    _ => None,
                };
                if self.journal.push(stored, done).is_err() {
                    warn!("storage cannot keep up; closing the sender");
                    if let Some(outbox) = outbox {
                        outbox.evicted.evict_slow("storage overloaded");
                    }
                }
            }
            joined_or_left => presence.push(joined_or_left),
        }
    }

    /// Publishes presence changes of rooms (`/topic/<room>`, no dot) to `/topic/<room>.presence`
    /// with headers `user` and `event` (`join` or `leave`).
    /// Joining a room that does not exist creates it (public), through the journal so it is
    /// written in order with the room's messages and off the async runtime.
    /// The account that creates a room this way owns it.
    fn ensure_room(&self, room: &str, owner: Option<&str>) {
        if self.cluster.is_some() {
            // Another node may have created it (even private) without this one hearing yet:
            // no owner here until storage says who it is, then storage's rules, and the others
            // are told to read them too.
            if self.acl.create(room, false, None) {
                self.journal.create_room(Room {
                    name: room.to_owned(),
                    private: false,
                    owner: owner.map(str::to_owned),
                });
                let (hub, room) = (self.me.clone(), room.to_owned());
                self.journal.barrier(Box::new(move |_| {
                    if let Some(hub) = hub.upgrade() {
                        hub.acl_changed(&room);
                        hub.reload_room_rules(room);
                    }
                }));
            }
            return;
        }
        if self.acl.create(room, false, owner) {
            self.journal.create_room(Room {
                name: room.to_owned(),
                private: false,
                owner: owner.map(str::to_owned),
            });
        }
    }

    fn announce(&self, inner: &mut HubInner, presence: Vec<BrokerEvent>, now_ms: u64) {
        self.announce_presence(inner, presence, now_ms, true);
    }

    /// [`StompHub::announce`]; `share` records the changes in the cluster's presence hashes
    /// (not for a departure the cluster told us about).
    fn announce_presence(
        &self,
        inner: &mut HubInner,
        presence: Vec<BrokerEvent>,
        now_ms: u64,
        share: bool,
    ) {
        for event in presence {
            let (topic, user, guest, what) = match event {
                BrokerEvent::Joined { topic, user, guest } => (topic, user, guest, "join"),
                BrokerEvent::Left { topic, user, guest } => (topic, user, guest, "leave"),
                _ => continue,
            };
            let Some(room) = topic.strip_prefix("/topic/").filter(|r| !r.contains('.')) else {
                continue;
            };
            if what == "join" {
                self.ensure_room(room, (!guest).then_some(&*user));
            }
            if let (Some(cluster), true) = (&self.cluster, share) {
                cluster.presence_changed(room, &user, guest, what == "join");
            }
            let Ok(destination) = Destination::parse(&format!("/topic/{room}.presence")) else {
                continue;
            };
            let mut headers = vec![
                ("user".to_owned(), user.to_string()),
                ("event".to_owned(), what.to_owned()),
            ];
            if guest {
                headers.push(("guest".to_owned(), "true".to_owned()));
            }
            let publish = Publish {
                headers,
                now_ms,
                ..Publish::default()
            };
            // Presence announcements cause no further presence changes.
            let _ = inner
                .broker
                .publish_as(user, &destination, publish, &mut |e| {
                    self.dispatch(
                        &inner.outboxes,
                        e,
                        &mut Vec::new(),
                        &mut Effects {
                            pending: &mut inner.pending,
                            forwards: &mut inner.forwards,
                            watch_changes: &mut inner.watch_changes,
                        },
                    )
                });
        }
    }

    fn queue_delivery<T: Transport>(
        &self,
        transport: &mut T,
        session: &Session,
        prefix: &mut PrefixCache,
        d: Delivery,
    ) {
        let parts = if d.ack.is_none() || session.version() != parley_stomp::Version::V1_2 {
            // No `ack` header: the per-subscriber part is the same for every message of this
            // subscription, so it is built once, not per delivery.
            match prefix {
                Some((subscription, bytes)) if Arc::ptr_eq(subscription, &d.subscription) => {
                    [bytes.clone(), d.message.shared(session.version()).clone()]
                }
                _ => {
                    let parts = session.message_parts(&d.subscription, None, &d.message);
                    *prefix = Some((d.subscription.clone(), parts[0].clone()));
                    parts
                }
            }
        } else {
            session.message_parts(&d.subscription, d.ack, &d.message)
        };
        transport.queue_frame(&parts, d.message.body_is_utf8());
    }

    /// Removes the session from the broker (its unacked queue messages go elsewhere).
    fn finish(&self, id: SessionId, session: &mut Session) {
        self.close_session(id, |broker, events| session.close(broker, events));
    }

    /// Drops a session's outbox, then runs `close` (which takes it out of the broker).
    pub fn close_session(
        &self,
        id: SessionId,
        close: impl FnOnce(&mut Broker, &mut dyn FnMut(BrokerEvent)),
    ) {
        self.lock().outboxes.remove(&id);
        self.apply(close);
        self.stats.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    // ----------------------------------------------------------------------------------------
    // Cluster mode (see crate::cluster)
    // ----------------------------------------------------------------------------------------

    /// After an operation: watch and unwatch channels, number and store room messages, and
    /// send everything forwarded to the other nodes (delivering side-channel and user messages
    /// here at once).
    fn carry(&self, inner: &mut HubInner) {
        let Some(cluster) = &self.cluster else { return };
        for (key, on) in std::mem::take(&mut inner.watch_changes) {
            let Some(channel) = channel_of(&key) else {
                continue;
            };
            let watching = &mut inner.watching;
            if on {
                watching.keys.insert(key);
                let refs = watching.refs.entry(channel.clone()).or_default();
                *refs += 1;
                if *refs == 1 {
                    let (live, is_live) = watch::channel(false);
                    watching.pending.insert(channel.clone(), is_live);
                    cluster.watch(channel, live);
                }
            } else {
                if let Some(room) = key.strip_prefix("/topic/").filter(|r| !r.contains('.')) {
                    inner.order.remove(room);
                }
                watching.keys.remove(&key);
                if let Some(refs) = watching.refs.get_mut(&channel) {
                    *refs -= 1;
                    if *refs == 0 {
                        watching.refs.remove(&channel);
                        watching.pending.remove(&channel);
                        cluster.unwatch(channel);
                    }
                }
            }
        }
        for (session, message, receipt) in std::mem::take(&mut inner.forwards) {
            let Some(room) = message.room.clone() else {
                // Not numbered, not stored: here now, and on its way to the others.
                cluster.publish(&message);
                self.accept_locked(inner, message);
                continue;
            };
            self.ensure_room(&room, None);
            let stored = StoredMessage {
                room,
                id: 0,
                from: message.sender.clone(),
                ts: message.now_ms,
                body: String::from_utf8_lossy(&message.body).into_owned(),
                guest: message.guest,
                deleted: false,
            };
            let sender = session.and_then(|s| inner.outboxes.get(&s));
            let ack = sender.map(|o| (o.control.clone(), o.evicted.clone()));
            let hub = self.me.clone();
            let done: crate::journal::Numbered = Box::new(move |numbered| {
                let Some(id) = numbered else {
                    if let Some((_, evicted)) = ack {
                        evicted.evict(
                            CloseCode::INTERNAL_ERROR,
                            "storage error: the message could not be stored".to_owned(),
                        );
                    }
                    return;
                };
                let mut message = message;
                message.id = id;
                if let Some(hub) = hub.upgrade() {
                    if let Some(cluster) = &hub.cluster {
                        cluster.publish(&message);
                    }
                    hub.accept_forwarded(message);
                }
                if let (Some((control, evicted)), Some(receipt)) = (ack, receipt) {
                    if control.try_send((receipt.0)(id)).is_err() {
                        evicted.evict_slow("too many acknowledgements waiting to be written");
                    }
                }
            });
            if self.journal.push_numbered(stored, done).is_err() {
                warn!("storage cannot keep up; closing the sender");
                if let Some(outbox) = session.and_then(|s| inner.outboxes.get(&s)) {
                    outbox.evicted.evict_slow("storage overloaded");
                }
            }
        }
    }

    /// Delivers a message from the bus (or numbered here) to this node's subscribers, each
    /// room's in id order: one ahead of the next expected id waits while the ones before it
    /// are read from storage.
    pub fn accept_forwarded(&self, message: Forwarded) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.accept_locked(inner, message);
        self.deliver(&inner.outboxes, &mut inner.pending);
    }

    fn accept_locked(&self, inner: &mut HubInner, message: Forwarded) {
        let HubInner {
            broker,
            outboxes,
            pending,
            order,
            watching,
            ..
        } = inner;
        let mut deliver = |broker: &mut Broker, m: Forwarded| {
            broker.deliver_forwarded(m, &mut |e| match e {
                BrokerEvent::Deliver(d) => pending.push(d),
                BrokerEvent::Evict { session, reason } => {
                    if let Some(outbox) = outboxes.get(&session) {
                        outbox.evicted.evict_slow(reason);
                    }
                }
                _ => {}
            });
        };
        let Some(room) = message.room.clone() else {
            deliver(broker, message);
            return;
        };
        if !watching.keys.contains(&message.key) {
            // Nobody here reads the room itself (perhaps only its side channels): keep count.
            broker.seed_room(&room, message.id);
            return;
        }
        let last = broker.room_last_id(&room);
        if message.id <= last {
            return; // already delivered (say, read from storage while it was on its way)
        }
        if message.id > last + 1 {
            let waiting = order.entry(room.clone()).or_default();
            if waiting.ahead.len() < MAX_AHEAD {
                waiting.ahead.insert(message.id, message);
            }
            if !waiting.filling {
                waiting.filling = true;
                if let Some(me) = self.me.upgrade() {
                    self.runtime.spawn(me.fill(room));
                }
            }
            return;
        }
        deliver(broker, message);
        if let Some(waiting) = order.get_mut(&room) {
            while let Some(entry) = waiting.ahead.first_entry() {
                let last = broker.room_last_id(&room);
                if *entry.key() <= last {
                    entry.remove();
                } else if *entry.key() == last + 1 {
                    deliver(broker, entry.remove());
                } else {
                    break;
                }
            }
        }
    }

    /// Reads a room's missing messages from storage until nothing is missing: up to the first
    /// one waiting, and up to what storage was seen to hold.
    async fn fill(self: Arc<Self>, room: String) {
        // A message only slightly behind its successor on the bus needs no read.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut fruitless = 0;
        let mut errors = 0;
        loop {
            let (after, upto) = {
                let mut guard = self.lock();
                let inner = &mut *guard;
                let last = inner.broker.room_last_id(&room);
                let Some(waiting) = inner.order.get_mut(&room) else {
                    return;
                };
                let first_ahead = waiting.ahead.keys().next().map(|id| id - 1);
                let upto = first_ahead.unwrap_or(0).max(waiting.upto);
                if upto <= last || fruitless > 5 {
                    if upto > last {
                        // Storage should hold these and does not: do not stall the room.
                        warn!(%room, from = last + 1, to = upto, "messages missing from storage; skipped");
                        inner.broker.seed_room(&room, upto);
                    }
                    waiting.filling = false;
                    let ahead = std::mem::take(&mut waiting.ahead);
                    for (_, m) in ahead {
                        self.accept_locked(inner, m);
                    }
                    self.deliver(&inner.outboxes, &mut inner.pending);
                    return;
                }
                (last, upto)
            };
            let store = self.store.clone();
            let name = room.clone();
            let limit = usize::try_from(upto - after)
                .unwrap_or(MAX_REPLAY)
                .min(MAX_REPLAY);
            let read = tokio::task::spawn_blocking(move || store.after(&name, after, limit)).await;
            match read {
                Ok(Ok(messages)) => {
                    let progressed = {
                        let mut guard = self.lock();
                        let inner = &mut *guard;
                        for m in messages.into_iter().filter(|m| m.id <= upto) {
                            let forwarded = forwarded_from_store(m);
                            self.accept_locked(inner, forwarded);
                        }
                        self.deliver(&inner.outboxes, &mut inner.pending);
                        inner.broker.room_last_id(&room) > after
                    };
                    // Storage held none of what is missing: count it; gave some: go on.
                    if progressed {
                        fruitless = 0;
                    } else {
                        fruitless += 1;
                        tokio::time::sleep(Duration::from_millis(50 * fruitless)).await;
                    }
                }
                // Storage unreachable: never skip for that, try again (up to every 2 s).
                _ => {
                    errors = (errors + 1).min(40);
                    tokio::time::sleep(Duration::from_millis(50 * errors)).await;
                }
            }
        }
    }

    /// Delivers what storage holds of `room` beyond what this node delivered: after
    /// subscribing to its channel, a reconnect to Redis, or messages lost on the bus.
    pub fn resync_room(&self, room: String) {
        self.resync(vec![room]);
    }

    /// [`StompHub::resync_room`] for every room this node watches, with one storage read.
    pub fn resync_rooms(&self) {
        let rooms = self.watched_rooms();
        if !rooms.is_empty() {
            self.resync(rooms);
        }
    }

    fn resync(&self, rooms: Vec<String>) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.clone().spawn(async move {
            let store = me.store.clone();
            let read = tokio::task::spawn_blocking(move || store.last_ids_of(&rooms)).await;
            let Ok(Ok(stored)) = read else {
                return; // the next resync (a quarter of the presence TTL) tries again
            };
            let mut guard = me.lock();
            let inner = &mut *guard;
            for (room, last) in stored {
                if !inner.watching.keys.contains(&format!("/topic/{room}")) {
                    continue;
                }
                let behind = last > inner.broker.room_last_id(&room);
                let waiting = inner.order.entry(room.clone()).or_default();
                waiting.upto = waiting.upto.max(last);
                if behind && !waiting.filling {
                    waiting.filling = true;
                    me.runtime.spawn(me.clone().fill(room));
                }
            }
        });
    }

    /// Before subscribing to rooms this node does not watch yet: what this node knows of them
    /// may be old, so their last id jumps to storage's (without delivering anything). Catch-up
    /// then replays up to it and the channel brings what follows.
    pub fn prepare_rooms(&self, rooms: &[String]) {
        if self.cluster.is_none() {
            return;
        }
        for room in rooms {
            let key = format!("/topic/{room}");
            if self.lock().watching.keys.contains(&key) {
                continue;
            }
            match self.store.last_id(room) {
                // Checked again under the lock: if another session started watching the room
                // meanwhile, its last id stands (jumping it would drop messages on their way).
                Ok(last) if last > 0 => {
                    let mut inner = self.lock();
                    if !inner.watching.keys.contains(&key) {
                        inner.broker.seed_room(room, last);
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, %room, "reading a room's last id failed"),
            }
        }
    }

    /// Several nodes share the rooms (`--cluster`).
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Rooms with a subscriber on this node.
    pub fn watched_rooms(&self) -> Vec<String> {
        self.lock()
            .watching
            .keys
            .iter()
            .filter_map(|k| k.strip_prefix("/topic/").filter(|r| !r.contains('.')))
            .map(str::to_owned)
            .collect()
    }

    /// Announces that `user` left `room` because the node they were on is gone (cluster mode:
    /// their presence entry expired).
    pub fn announce_gone(&self, room: &str, user: &str, guest: bool) {
        let left = BrokerEvent::Left {
            topic: format!("/topic/{room}"),
            user: user.into(),
            guest,
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.announce_presence(inner, vec![left], now_ms(), false);
        self.carry(inner);
        self.deliver(&inner.outboxes, &mut inner.pending);
    }

    /// `user` has a subscription to `room` on this node.
    pub fn is_present_here(&self, room: &str, user: &str) -> bool {
        let topic = Destination::Topic(room.to_owned());
        self.apply(|broker, _| broker.members(&topic))
            .iter()
            .any(|u| &**u == user)
    }

    /// Who is in `room`: here, and in cluster mode on every node.
    pub async fn present(&self, room: &str) -> Vec<String> {
        let topic = Destination::Topic(room.to_owned());
        let mut users: Vec<String> = self
            .apply(|broker, _| broker.members(&topic))
            .iter()
            .map(|u| u.to_string())
            .collect();
        if let Some(cluster) = &self.cluster {
            users.extend(cluster.present(room).await);
            users.sort();
            users.dedup();
        }
        users
    }

    /// Tells the other nodes (cluster mode) that `room`'s rules changed here; they read them
    /// back from storage ([`StompHub::reload_room_rules`]).
    pub fn acl_changed(&self, room: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.publish_rules_changed(room);
        }
    }

    /// Reads `room`'s rules from storage, which holds what was decided, and applies them (cluster
    /// mode): live subscriptions they no longer allow end as if the change had been made here.
    pub fn reload_room_rules(&self, room: String) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.clone().spawn(async move {
            let store = me.store.clone();
            let name = room.clone();
            match tokio::task::spawn_blocking(move || store.room_rules(&name)).await {
                Ok(Ok(Some((private, members)))) => {
                    me.acl.replace_room(&room, private, members);
                    if private {
                        me.end_subscriptions_not_allowed(&room);
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => warn!(%error, %room, "reading a room's rules failed"),
                Err(error) => warn!(%error, %room, "reading a room's rules failed"),
            }
        });
    }

    /// Reads every room's rules from storage again (cluster mode: after a Redis outage or lag,
    /// changes announced meanwhile were missed).
    pub fn reload_acl(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.clone().spawn(async move {
            let (store, acl) = (me.store.clone(), me.acl.clone());
            match tokio::task::spawn_blocking(move || acl.reload(&*store)).await {
                Ok(Ok(private)) => {
                    for room in private {
                        me.end_subscriptions_not_allowed(&room);
                    }
                }
                Ok(Err(error)) => warn!(%error, "reloading room rules failed"),
                Err(error) => warn!(%error, "reloading room rules failed"),
            }
        });
    }

    /// Ends the subscriptions to private `room` (and its side channels) of guests and
    /// non-members.
    fn end_subscriptions_not_allowed(&self, room: &str) {
        let acl = self.acl.clone();
        let ended = self.apply(|broker, events| {
            broker.revoke_room_where(
                room,
                &|user, guest| guest || acl.role(room, user).is_none(),
                events,
            )
        });
        self.tell_revoked(room, ended);
    }

    /// What to wait for before telling a client its subscriptions to `keys` are active: their
    /// channels still being subscribed on this node.
    pub fn not_live_yet(&self, keys: &[String]) -> Vec<watch::Receiver<bool>> {
        if self.cluster.is_none() || keys.is_empty() {
            return Vec::new();
        }
        let inner = self.lock();
        keys.iter()
            .filter_map(|key| channel_of(key))
            .filter_map(|channel| inner.watching.pending.get(&channel).cloned())
            .filter(|live| !*live.borrow())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        // A panic while holding the lock would be a bug in the broker; keep serving the rest.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The last subscription's MESSAGE prefix (`MESSAGE` + `subscription`), reused while it repeats.
type PrefixCache = Option<(Arc<str>, Bytes)>;

/// A catch-up in progress for one subscription.
struct Replay {
    room: String,
    subscription: String,
    stored: oneshot::Receiver<anyhow::Result<Vec<StoredMessage>>>,
}

/// The oldest catch-up once its messages are read; never resolves when there is none.
async fn next_replay(
    replays: &mut VecDeque<Replay>,
) -> (Replay, anyhow::Result<Vec<StoredMessage>>) {
    let Some(front) = replays.front_mut() else {
        return std::future::pending().await;
    };
    // Polled by reference, so a select! that picks another branch loses nothing.
    let stored = (&mut front.stored)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("catch-up task ended")));
    let replay = replays.pop_front().expect("front exists: checked above");
    (replay, stored)
}

fn session_id(session: &Session) -> Option<&str> {
    session.user().map(|u| &**u)
}

/// Wall-clock time in ms since the Unix epoch, for message timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `Instant` of a wall-clock time in ms since the epoch (now, if it has passed).
pub fn instant_at(epoch_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(epoch_ms.saturating_sub(now_ms()))
}

/// Frees a drained write queue's storage once a burst made it large.
fn shrink_idle_queue(queue: &mut VecDeque<Bytes>) {
    if queue.is_empty() && queue.capacity() > 64 {
        *queue = VecDeque::new();
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// A stored room message as the bus would have carried it.
fn forwarded_from_store(m: StoredMessage) -> Forwarded {
    let key = format!("/topic/{}", m.room);
    Forwarded {
        shown: key.clone(),
        key,
        room: Some(m.room),
        id: m.id,
        sender: m.from,
        guest: m.guest,
        now_ms: m.ts,
        headers: vec![(
            "content-type".to_owned(),
            "text/plain;charset=utf-8".to_owned(),
        )],
        body: Bytes::from(m.body),
    }
}

/// Waits (at most 5 s) until every channel in `waits` is live.
pub async fn until_live(waits: Vec<watch::Receiver<bool>>) {
    let all = async {
        for mut live in waits {
            let _ = live.wait_for(|is| *is).await;
        }
    };
    let _ = timeout(Duration::from_secs(5), all).await;
}

/// How STOMP bytes travel: raw on TCP, inside WebSocket messages on `/stomp`.
trait Transport {
    /// Reads more STOMP bytes into `inbound`; `Ok(false)` at end of stream.
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool>;
    /// Queues one STOMP frame made of `parts`; `text` says its body is UTF-8.
    fn queue_frame(&mut self, parts: &[Bytes], text: bool);
    /// Writes everything queued.
    async fn flush(&mut self, write_timeout: Duration) -> io::Result<()>;
    /// The transport itself finished (WebSocket close handshake).
    fn is_closed(&self) -> bool;
    /// Transport-level idle timeout, if the transport can probe liveness itself.
    fn idle_timeout(&self, configured: Duration) -> Option<Duration>;
    /// Sends a transport-level liveness probe.
    fn ping(&mut self);
    /// Ends the connection; a WebSocket closes with `code`.
    async fn close(&mut self, code: CloseCode, write_timeout: Duration);
}

struct TcpTransport {
    stream: TcpStream,
    outbox: VecDeque<Bytes>,
}

impl Transport for TcpTransport {
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool> {
        Ok(read_when_ready(&mut self.stream, inbound).await? > 0)
    }

    fn queue_frame(&mut self, parts: &[Bytes], _text: bool) {
        self.outbox.extend(parts.iter().cloned());
    }

    async fn flush(&mut self, write_timeout: Duration) -> io::Result<()> {
        write_all(&mut self.stream, &mut self.outbox, write_timeout).await?;
        shrink_idle_queue(&mut self.outbox);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn idle_timeout(&self, _configured: Duration) -> Option<Duration> {
        None
    }

    fn ping(&mut self) {}

    async fn close(&mut self, _code: CloseCode, write_timeout: Duration) {
        let _ = timeout(write_timeout, self.stream.shutdown()).await;
    }
}

struct WsTransport<S> {
    io: S,
    rbuf: BytesMut,
    conn: Connection,
    outbox: VecDeque<Bytes>,
    /// Where frame headers are written; see `queue_frame`.
    heads: BytesMut,
}

impl<S: ReadReady + AsyncWrite> Transport for WsTransport<S> {
    async fn read(&mut self, inbound: &mut BytesMut) -> io::Result<bool> {
        loop {
            // Whole WebSocket messages append to the STOMP stream: a STOMP frame may span
            // messages and a message may hold several frames.
            let mut got = false;
            loop {
                match self.conn.read(&mut self.rbuf) {
                    Ok(Some(Event::Message(Message::Text(b) | Message::Binary(b)))) => {
                        inbound.extend_from_slice(&b);
                        got = true;
                    }
                    Ok(Some(Event::Close(_))) => return Ok(false),
                    Ok(Some(_)) => got = true,
                    Ok(None) => break,
                    Err(error) => {
                        debug!(%error, "failing STOMP WebSocket");
                        return Ok(false);
                    }
                }
            }
            if got || self.conn.buffered_output() > 0 {
                return Ok(true);
            }
            release_if_empty(&mut self.rbuf);
            if read_when_ready(&mut self.io, &mut self.rbuf).await? == 0 {
                return Ok(false);
            }
        }
    }

    fn queue_frame(&mut self, parts: &[Bytes], text: bool) {
        let len = parts.iter().map(Bytes::len).sum();
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        // Headers are cut from one scratch buffer: one allocation per ~100 frames, not per frame.
        if self.heads.capacity() - self.heads.len() < 14 {
            self.heads = BytesMut::with_capacity(HEAD_SCRATCH);
        }
        FrameHeader::server(opcode, len).write(&mut self.heads);
        let head = self.heads.split().freeze();
        // Raw frames straight to the socket: one header, then the shared parts, never copied.
        if self.conn.send_encoded(head).is_ok() {
            for part in parts {
                let _ = self.conn.send_encoded(part.clone());
            }
        }
    }

    async fn flush(&mut self, write_timeout: Duration) -> io::Result<()> {
        while let Some(bytes) = self.conn.poll_transmit() {
            self.outbox.push_back(bytes);
        }
        write_all(&mut self.io, &mut self.outbox, write_timeout).await?;
        // Nothing left to write: an idle connection keeps no header scratch or queue storage.
        self.heads = BytesMut::new();
        shrink_idle_queue(&mut self.outbox);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn idle_timeout(&self, configured: Duration) -> Option<Duration> {
        Some(configured)
    }

    fn ping(&mut self) {
        let _ = self.conn.ping(b"");
    }

    async fn close(&mut self, code: CloseCode, write_timeout: Duration) {
        if !self.conn.is_closed() {
            self.conn.close(code, "");
            let _ = self.flush(write_timeout).await;
            // Give the peer a moment to answer the close; then the server closes TCP first.
            let mut scratch = BytesMut::new();
            let _ = timeout(Duration::from_secs(2), async {
                while !self.conn.is_closed() {
                    if !matches!(self.read(&mut scratch).await, Ok(true)) {
                        break;
                    }
                    scratch.clear();
                }
            })
            .await;
            let _ = self.flush(write_timeout).await;
        }
        let _ = timeout(write_timeout, self.io.shutdown()).await;
    }
}
