//! STOMP 1.0–1.2 over plain TCP or WebSocket (`/stomp`): each connection decodes client
//! frames, applies them to the hub's broker through the sans-IO [`Session`], and writes
//! replies, deliveries and heart-beats. See `docs/stomp.md`.

mod apply;
mod chat;
mod connect;
mod read;
mod transport;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parley_protocol::CloseCode;
use parley_stomp::destination::Destination;
use parley_stomp::session::{AccessPolicy, Flow, Session, SessionConfig};
use parley_stomp::{Command, Decoder, Frame, Limits, Version};
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use self::connect::Caller;
use self::transport::{Sock, Tcp, Transport, Ws};
use crate::auth::Auth;
use crate::clock::wheel::{Due, Timer};
use crate::clock::{far_future, instant_at, Stamp};
use crate::endpoints::pipe::AppEnd;
use crate::hub::{
    live_from_stored, Delivered, Held, Hub, HubSession, Next, Notice, Origin, Protocol,
    Transport as Carrier,
};
use crate::park::{Parkable, Parked, Resumed, PARK_AFTER};
use crate::ws::{release_if_empty, ReadReady, WsSocket};

/// The destination a STOMP client SENDs a fresh access token to, to renew its session in-band.
pub const AUTH_DESTINATION: &str = "/app/auth";
/// The destination a STOMP client SENDs read marks to (`read.rs`).
pub const READ_DESTINATION: &str = "/app/read";
/// Client frames applied in one step under the broker's lock.
const MAX_FRAME_BATCH: usize = 64;
/// SUBSCRIBEs per batch whose rooms are prepared in cluster mode (each new room costs a read).
const MAX_PREPARED: usize = 16;

/// Settings of the STOMP endpoint.
#[derive(Clone, Debug)]
pub struct StompSettings {
    /// Frame limits (shared by every connection's decoder).
    pub limits: Arc<Limits>,
    /// Server heart-beat offer (send, receive) in ms.
    pub heart_beat: (u64, u64),
    /// Largest body of a room message.
    pub max_room_body: usize,
    /// SENDs per second per session (0: unlimited).
    pub rate_limit: u32,
    /// Time from TCP accept (or WebSocket upgrade) to CONNECT.
    pub connect_timeout: Duration,
    /// A connected session that sent nothing (not even a heart-beat) this long is closed,
    /// whatever heart-beat it negotiated (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A write making no progress this long drops the connection.
    pub write_timeout: Duration,
    /// Bytes one session may hold in open transactions.
    pub max_transaction_bytes: usize,
    /// Guests may use `/queue/` destinations.
    pub guest_queues: bool,
}

/// The STOMP endpoint: what every STOMP connection shares.
pub struct Stomp {
    hub: Arc<Hub>,
    auth: Arc<Auth>,
    /// Cancelled when the server shuts down: every connection says so and closes.
    shutdown: CancellationToken,
    config: Arc<SessionConfig>,
    settings: StompSettings,
}

impl Stomp {
    /// The endpoint for `hub`; CONNECTs are authenticated by `auth`; connections close once
    /// `shutdown` is cancelled.
    pub fn new(
        hub: Arc<Hub>,
        auth: Arc<Auth>,
        settings: StompSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let mut config = SessionConfig::default();
        config.access = AccessPolicy(hub.clone());
        config.server = format!("parley/{}", env!("CARGO_PKG_VERSION"));
        config.heart_beat = settings.heart_beat;
        config.max_room_body = settings.max_room_body;
        config.rate_limit = settings.rate_limit;
        config.max_transaction_bytes = settings.max_transaction_bytes;
        config.guest_queues = settings.guest_queues;
        config.budget = hub.budget().clone();
        Arc::new(Self {
            hub,
            auth,
            shutdown,
            config: Arc::new(config),
            settings,
        })
    }

    /// The same endpoint, its connections closing once `shutdown` is cancelled instead: for a
    /// server of its own over shared parts (the fuzz harness makes one per exchange).
    pub fn with_shutdown(self: &Arc<Self>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            hub: self.hub.clone(),
            auth: self.auth.clone(),
            shutdown,
            config: self.config.clone(),
            settings: self.settings.clone(),
        })
    }

    /// Runs STOMP over one TCP connection (plain or TLS); `read` holds what was already read
    /// from it (past a PROXY protocol header).
    pub fn serve_tcp<S>(
        self: &Arc<Self>,
        stream: S,
        read: BytesMut,
        caller: Caller,
    ) -> impl Future<Output = Option<Parked>> + Send + 'static
    where
        S: ReadReady + AsyncWrite + Send + 'static,
    {
        let transport = Tcp::new(stream, self.settings.write_timeout);
        let mut conn = self.conn(transport, caller, Carrier::Tcp);
        conn.inbound = read;
        conn.serve()
    }

    /// Runs STOMP over an upgraded WebSocket.
    pub fn serve_websocket<S>(
        self: &Arc<Self>,
        socket: WsSocket<S>,
        caller: Caller,
    ) -> impl Future<Output = Option<Parked>> + Send + 'static
    where
        S: ReadReady + AsyncWrite + Send + 'static,
    {
        self.conn(Ws(socket), caller, Carrier::WebSocket).serve()
    }

    /// Runs STOMP over a SockJS session.
    pub fn serve_sockjs(
        self: &Arc<Self>,
        end: AppEnd,
        caller: Caller,
    ) -> impl Future<Output = ()> + Send + 'static {
        let transport = Sock::new(end, self.settings.write_timeout);
        let serve = self.conn(transport, caller, Carrier::SockJs).serve();
        // Never parked: a SockJS session has no socket of its own to wait on.
        async move {
            let parked = serve.await;
            debug_assert!(parked.is_none(), "a SockJS STOMP session parked");
        }
    }

    /// A new connection's state, boxed: its future holds a pointer, and a parked connection
    /// (`crate::park`) is this box.
    fn conn<T: Transport>(
        self: &Arc<Self>,
        transport: T,
        caller: Caller,
        carrier: Carrier,
    ) -> Box<Conn<T>> {
        let mut hub = self
            .hub
            .open_session(Origin::new(Protocol::Stomp, carrier, caller.peer));
        // `Conn::deadline` includes the expiry, and `Conn::on_deadline` acts on it.
        hub.owner_times_expiry();
        let session = Session::new(hub.id(), self.config.clone());
        Box::new(Conn {
            stomp: self.clone(),
            transport,
            inbound: BytesMut::new(),
            decoder: Decoder::new(self.settings.limits.clone()),
            session,
            hub,
            caller: Some(Box::new(caller)),
            prefix: None,
            live_wait: None,
            timer: Timer::default(),
            last_in: Stamp::now(),
            last_out: Stamp::now(),
            last_busy: Stamp::now(),
        })
    }
}

/// How a connection ends.
enum Ending {
    /// The session ended itself (DISCONNECT, or an ERROR it already queued).
    Done,
    /// Say why in an ERROR frame, then close (a WebSocket with this code).
    Error(String, CloseCode),
    /// The peer left or closed its WebSocket: answer what is owed, then go.
    PeerLeft,
    /// A write failed or a slow consumer was cut loose mid-write: no waiting on the peer.
    WriteFailed,
    /// Not an end: quiet for [`PARK_AFTER`], the connection waits parked.
    Park,
}

/// When a heart-beat is due: the wheel may wake us up to a tick late (plus scheduling), and
/// the client's interval is a promise, so two ticks early — or a quarter early for intervals so
/// short that two ticks would be most of them (never zero, which would spin).
fn beat_early(every: Duration) -> Duration {
    every - (2 * crate::clock::wheel::TICK).min(every / 4)
}

fn shutting_down() -> Ending {
    Ending::Error("server shutting down".to_owned(), CloseCode::GOING_AWAY)
}

/// The last subscription's MESSAGE prefix (`MESSAGE` + `subscription`), reused while it repeats.
/// Boxed: 8 bytes in every connection's state instead of 48, and most idle ones have none.
type PrefixCache = Option<Box<(Arc<str>, Bytes)>>;

/// One STOMP connection.
struct Conn<T> {
    stomp: Arc<Stomp>,
    transport: T,
    inbound: BytesMut,
    decoder: Decoder,
    session: Session,
    hub: HubSession,
    /// Until CONNECT, who the upgrade request said the client is (boxed, and then dropped:
    /// every idle connection's state holds only the pointer).
    caller: Option<Box<Caller>>,
    prefix: PrefixCache,
    /// Cluster mode: fan-out keys whose bus channels must be live before replies go out
    /// (boxed: only cluster mode uses it).
    #[allow(clippy::box_collection)] // on purpose: 8 bytes in every connection, not 24
    live_wait: Option<Box<Vec<String>>>,
    /// Its place in the shared timer wheel, for [`Conn::deadline`].
    timer: Timer,
    last_in: Stamp,
    /// When it last wrote; until CONNECT, when it opened (what CONNECT's deadline counts from).
    last_out: Stamp,
    /// When it last read a frame or wrote anything but a heart-beat: what parking counts from,
    /// so that heart-beats alone do not keep a connection from parking.
    last_busy: Stamp,
}

impl<T: Transport + Send + 'static> Conn<T> {
    /// Serves the connection until it ends, then closes it; or until it parks, and then it is
    /// what this ends with. An `async move` block holds its argument once (an `async fn` would
    /// hold it and a moved copy).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn serve(mut self: Box<Self>) -> impl Future<Output = Option<Parked>> + Send + 'static {
        async move {
            let ending = self.run().await;
            if let Ending::Park = ending {
                return Some(self as Parked);
            }
            self.finish(ending).await;
            None
        }
    }
}

impl<T: Transport + Send + 'static> Parkable for Conn<T> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline().into_std();
        if self
            .timer
            .poll_until(deadline, &self.stomp.shutdown, cx)
            .is_ready()
            || self.transport.poll_input(cx).is_ready()
        {
            return Poll::Ready(());
        }
        self.hub.poll_ready(cx)
    }

    fn resume(self: Box<Self>) -> Resumed {
        Box::pin(self.serve())
    }
}

impl<T: Transport> Conn<T> {
    /// The connection loop: apply what arrived, write, then wait for the next thing to do.
    async fn run(&mut self) -> Ending {
        loop {
            // Boxed, and only when something came in: a connection's future is as large as
            // its largest wait, and an idle one (or one only writing deliveries) needs none
            // of this.
            if !self.inbound.is_empty() {
                if let Some(ending) = Box::pin(self.handle_input()).await {
                    return ending;
                }
            }
            if let Some(keys) = self.live_wait.take() {
                // Boxed, as every rarely taken wait here: idle connections carry the largest.
                Box::pin(self.hub.hub().until_live(&keys)).await;
            }
            // A consumer too slow to take what it is sent blocks here; eviction cuts it loose
            // at once instead of after the write timeout.
            let flushed = tokio::select! {
                flushed = self.transport.flush() => flushed,
                () = self.hub.evicted().evicted() => {
                    Err(io::Error::other("slow consumer evicted while writing"))
                }
            };
            if let Err(error) = flushed {
                debug!(%error, "STOMP write failed");
                return Ending::WriteFailed;
            }
            if self.transport.is_closed() {
                return Ending::Done;
            }
            // Checked every turn, not only when the timer fires: a client that keeps the socket
            // busy must not outlive its token.
            if self.session.is_connected() && self.hub.is_expired() {
                return self.error("token expired");
            }
            // Checked here too: the timer's wait below sees it only when nothing else is ready.
            if self.stomp.shutdown.is_cancelled() {
                return shutting_down();
            }
            let deadline = self.deadline();
            let wake_at = self.park_at().map_or(deadline, |at| at.min(deadline));
            let ending = tokio::select! {
                biased;
                next = self.hub.next() => self.on_next(next),
                read = self.transport.read(&mut self.inbound) => match read {
                    Ok(true) => {
                        self.last_in = Stamp::now();
                        None
                    }
                    Ok(false) | Err(_) => Some(Ending::PeerLeft),
                },
                due = self.timer.until(wake_at.into_std(), &self.stomp.shutdown) => match due {
                    // It was time to park, not yet the deadline.
                    Due::Deadline if Instant::now() < deadline => Some(Ending::Park),
                    Due::Deadline => self.on_deadline(),
                    Due::ShuttingDown => Some(shutting_down()),
                },
            };
            match ending {
                // What came before the peer's close (or end of stream) still counts: a client
                // may SEND and DISCONNECT or close in one go.
                Some(Ending::PeerLeft) => {
                    return Box::pin(self.handle_input())
                        .await
                        .unwrap_or(Ending::PeerLeft)
                }
                Some(ending) => return ending,
                None => {}
            }
        }
    }

    /// Decodes and applies every complete frame buffered: plain frames in batches, CONNECT and
    /// `/app/auth` (which need async work) on their own. `Some` when the connection must end.
    async fn handle_input(&mut self) -> Option<Ending> {
        let mut batch: Vec<Frame> = Vec::new();
        let mut malformed = None;
        loop {
            let frame = match self.decoder.decode(&mut self.inbound) {
                Ok(Some(frame)) => {
                    self.last_busy = Stamp::now();
                    frame
                }
                Ok(None) => break,
                Err(error) => {
                    malformed = Some(format!("malformed frame: {error}"));
                    break;
                }
            };
            let special = if self.is_special(&frame) {
                Some(frame)
            } else {
                batch.push(frame);
                if batch.len() < MAX_FRAME_BATCH {
                    continue;
                }
                None
            };
            if !batch.is_empty() && self.apply(&mut batch).await == Flow::Close {
                return Some(Ending::Done);
            }
            if let Some(frame) = special {
                if let Some(ending) = Box::pin(self.special(frame)).await {
                    return Some(ending);
                }
            }
        }
        if !batch.is_empty() && self.apply(&mut batch).await == Flow::Close {
            return Some(Ending::Done);
        }
        if let Some(reason) = malformed {
            return Some(self.error(&reason));
        }
        release_if_empty(&mut self.inbound);
        None
    }

    /// CONNECT (before the session is connected) and SEND to [`AUTH_DESTINATION`] or
    /// [`READ_DESTINATION`] (after):
    /// they need async work, so they are not batched.
    fn is_special(&self, frame: &Frame) -> bool {
        if self.session.is_connected() {
            frame.command == Command::Send
                && matches!(
                    frame.get("destination"),
                    Some(AUTH_DESTINATION | READ_DESTINATION)
                )
                || chat::is_change(frame)
        } else {
            matches!(frame.command, Command::Connect | Command::Stomp)
        }
    }

    /// CONNECT: who is this? `/app/auth`: a fresh token for the same user. A change to a
    /// message (it reads storage).
    async fn special(&mut self, frame: Frame) -> Option<Ending> {
        if self.session.is_connected() && chat::is_change(&frame) {
            // Everything before it took effect first, as for any frame.
            let (hub, id) = (self.hub.hub().clone(), self.hub.id());
            let changed = chat::change(&hub, &self.session, id, &frame).await;
            return changed.err().map(|why| self.error(&why));
        }
        let renewing = self.session.is_connected();
        if renewing && frame.get("destination") == Some(READ_DESTINATION) {
            return self.mark_read(frame).await;
        }
        let checked = if renewing {
            self.renew(&frame)
        } else {
            // Boxed: CONNECT happens once, its state need not live in every idle session.
            // Who the upgrade request said the client is matters to the first CONNECT alone.
            let Some(caller) = self.caller.take() else {
                return Some(self.error("CONNECT was already sent"));
            };
            let auth = &self.stomp.auth;
            let authenticated = Box::pin(connect::authenticate(auth, &frame, &caller)).await;
            authenticated.map(|authenticated| {
                self.hub.identify(&authenticated.identity);
                self.session.authenticate(authenticated.identity);
                self.hub.set_revocation(authenticated.revoked);
                authenticated.expires_ms
            })
        };
        match checked {
            Ok(expires_ms) => self.hub.set_expiry(expires_ms),
            Err(why) => {
                let receipt = frame.get("receipt").map(str::to_owned);
                let error = self.session.error_frame(&why, receipt);
                self.transport.queue_frame(&[error], true);
                return Some(Ending::Done);
            }
        }
        if renewing {
            if let Some(receipt) = frame.get("receipt") {
                let r = Frame::new(Command::Receipt).header("receipt-id", receipt);
                let r = parley_stomp::codec::encode(&r, self.session.version());
                self.transport.queue_frame(&[r], true);
            }
            return None;
        }
        let flow = self.apply(&mut vec![frame]).await;
        self.decoder.set_version(self.session.version());
        (flow == Flow::Close).then_some(Ending::Done)
    }

    /// A `SEND /app/auth`: the new expiry, or the ERROR message.
    fn renew(&self, frame: &Frame) -> Result<Option<u64>, String> {
        let body = std::str::from_utf8(&frame.body).unwrap_or_default().trim();
        let token = frame
            .get("access-token")
            .or((!body.is_empty()).then_some(body))
            .ok_or("SEND to /app/auth needs an access-token header")?;
        let me = self
            .session
            .identity()
            .ok_or("authentication failed: not connected")?;
        self.stomp
            .auth
            .renew(me, token)
            .map_err(|e| format!("authentication failed: {e}"))
    }

    /// Writes what the hub handed this session.
    fn on_next(&mut self, next: Next) -> Option<Ending> {
        match next {
            // The reason goes in the ERROR frame; the WebSocket then closes normally.
            Next::Evicted(_, reason) => return Some(self.error(&reason)),
            Next::Expired => return Some(self.error("token expired")),
            Next::Notice(Notice::Revoked { reason, .. }) => return Some(self.error(&reason)),
            Next::Notice(Notice::Encoded(bytes)) => self.transport.queue_frame(&[bytes], true),
            Next::Notice(Notice::History { .. }) | Next::Held(Held::Joined { .. }) => {}
            Next::Held(Held::Replay {
                subscription,
                messages: Ok(messages),
                ..
            }) => {
                for m in messages {
                    let message = live_from_stored(m);
                    let prefix = self.session.message_prefix(&subscription, None);
                    let version = self.session.version();
                    self.transport.queue_message(&prefix, &message, version);
                }
            }
            Next::Held(Held::Replay { .. } | Held::Lost) => {
                return Some(self.error("catch-up failed: storage error"));
            }
            Next::Delivery(first) => {
                let Self {
                    hub,
                    transport,
                    session,
                    prefix,
                    ..
                } = self;
                for queued in hub.batch(first) {
                    for delivery in queued.iter() {
                        queue_delivery(transport, session, prefix, delivery);
                    }
                }
            }
        }
        let now = Stamp::now();
        // Until CONNECT `last_out` stays when the connection opened: the deadline for CONNECT.
        if self.session.is_connected() {
            self.last_out = now;
        }
        self.last_busy = now;
        None
    }

    /// The next time something is due: CONNECT, heart-beats, token expiry, the idle limit,
    /// WebSocket idleness.
    fn deadline(&self) -> Instant {
        let beat = self.session.heart_beat();
        let mut deadline = if self.session.is_connected() {
            let recv = beat.expect_within.map(|d| self.last_in + d);
            let send = beat.send_every.map(|d| self.last_out + beat_early(d));
            let expiry = self.hub.expiry().map(instant_at);
            let idle = self.stomp.settings.idle_timeout.map(|d| self.last_in + d);
            [recv, send, expiry, idle].into_iter().flatten().min()
        } else {
            Some(self.last_out + self.stomp.settings.connect_timeout)
        };
        if let Some(idle) = self.transport.idle_deadline() {
            deadline = Some(deadline.map_or(idle, |d| d.min(idle)));
        }
        deadline.unwrap_or_else(far_future)
    }

    /// When the connection parks if nothing happens first: [`PARK_AFTER`] after it last read
    /// a frame or wrote anything but a heart-beat. Never while its transport or session needs
    /// a task to wait.
    fn park_at(&self) -> Option<Instant> {
        let parks = T::PARKS && self.hub.parks();
        parks.then(|| self.last_busy + PARK_AFTER)
    }

    /// Whatever came due.
    fn on_deadline(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let beat = self.session.heart_beat();
        if !self.session.is_connected() {
            return Some(self.error("no CONNECT frame in time"));
        }
        if self.hub.is_expired() {
            return Some(self.error("token expired"));
        }
        if beat.expect_within.is_some_and(|d| now >= self.last_in + d) {
            return Some(self.error("heart-beat timeout: nothing received from the client"));
        }
        if let Some(idle) = self.stomp.settings.idle_timeout {
            if now >= self.last_in + idle {
                // `heart-beat:0,0` (or a very long client interval) must not mean forever.
                let why = format!("idle timeout: nothing received from the client for {idle:?}");
                return Some(self.error(&why));
            }
        }
        if self.transport.idle_expired() {
            return Some(self.error("idle timeout"));
        }
        if beat
            .send_every
            .is_some_and(|d| now >= self.last_out + beat_early(d))
        {
            self.transport
                .queue_frame(&[Bytes::from_static(b"\n")], true);
            self.last_out = Stamp::at(now);
        }
        None
    }

    fn error(&self, message: &str) -> Ending {
        Ending::Error(message.to_owned(), CloseCode::NORMAL)
    }

    /// Leaves the broker (unacknowledged queue messages go elsewhere), then closes the
    /// connection as `ending` says.
    async fn finish(&mut self, ending: Ending) {
        let session = &mut self.session;
        self.hub
            .close(|broker, events| session.close(broker, events));
        let code = match ending {
            Ending::WriteFailed => {
                return Box::pin(self.transport.abort(CloseCode::POLICY_VIOLATION)).await
            }
            Ending::Error(message, code) => {
                crate::metrics::refused("stomp_error");
                // Not `message`: a JSON line's own message would be written twice.
                debug!(reason = %message, "closing STOMP session with ERROR");
                let error = self.session.error_frame(&message, None);
                self.transport.queue_frame(&[error], true);
                code
            }
            Ending::Done | Ending::PeerLeft | Ending::Park => CloseCode::NORMAL,
        };
        Box::pin(async {
            let _ = self.transport.flush().await;
            self.transport.close(code).await;
        })
        .await;
    }
}

/// Queues one delivery: the per-subscriber prefix and the shared, encoded-once message.
fn queue_delivery<T: Transport>(
    transport: &mut T,
    session: &Session,
    prefix: &mut PrefixCache,
    d: Delivered<'_>,
) {
    let version = session.version();
    if d.ack.is_some() && version == Version::V1_2 {
        let own = session.message_prefix(d.subscription, d.ack);
        return transport.queue_message(&own, d.message, version);
    }
    // No `ack` header: the per-subscriber part is the same for every message of this
    // subscription, so it is built once, not per delivery.
    let cached = prefix
        .as_deref()
        .is_some_and(|(subscription, _)| Arc::ptr_eq(subscription, d.subscription));
    if !cached {
        let own = session.message_prefix(d.subscription, None);
        let entry = (d.subscription.clone(), own);
        match prefix {
            // The box is reused when the subscription changes.
            Some(cache) => **cache = entry,
            None => *prefix = Some(Box::new(entry)),
        }
    }
    if let Some(cache) = prefix {
        transport.queue_message(&cache.1, d.message, version);
    }
}

/// Cluster mode: the fan-out keys the SUBSCRIBE frames among `frames` will watch, and the rooms
/// among them to prepare — for a connected session's well-formed destinations, a few per batch.
fn subscriptions(session: &Session, frames: &[Frame]) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut rooms) = (Vec::new(), Vec::new());
    if !session.is_connected() {
        return (keys, rooms);
    }
    let me = session.identity().map(|i| i.name.to_string());
    let subscribes = frames.iter().filter(|f| f.command == Command::Subscribe);
    for destination in subscribes
        .filter_map(|f| f.get("destination"))
        .take(MAX_PREPARED)
    {
        match Destination::parse(destination) {
            Ok(Destination::Topic(topic)) => {
                if parley_stomp::broker::is_room(&topic) {
                    rooms.push(topic);
                }
                keys.push(destination.to_owned());
            }
            Ok(Destination::OwnUserQueue(queue)) => {
                if let Some(me) = &me {
                    keys.push(format!("/user/{me}/queue/{queue}"));
                }
            }
            _ => {}
        }
    }
    (keys, rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heart_beat_is_sent_early_but_never_at_once() {
        assert_eq!(
            beat_early(Duration::from_secs(1)),
            Duration::from_millis(980)
        );
        // Short intervals lose a quarter, not two ticks: never zero, which would spin.
        assert_eq!(
            beat_early(Duration::from_millis(10)),
            Duration::from_micros(7_500)
        );
        assert!(beat_early(Duration::from_millis(1)) > Duration::ZERO);
    }
}
