//! A connection's handle on the hub: opened by its endpoint, asked for what to send next, closed
//! when the connection ends. Every protocol's connection loop waits on [`HubSession::next`].

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use parley_protocol::CloseCode;
use parley_stomp::broker::{Broker, BrokerEvent, SessionId};
use parley_stomp::budget::Charge;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::mailbox::Mail;
use super::outbox::{Eviction, Mailbox, Notice, Notifier, Outbox, CLOSE_UNAUTHORIZED};
use super::registry::{Origin, Protocol, SessionInfo};
use super::{mailbox, Hub, Queued};
use crate::clock::instant_at;
use crate::clock::wheel::Timer;
use crate::metrics::{self, Ended, SessionMetrics};
use crate::store::StoredMessage;

/// Answers (catch-ups, cluster joins) one session may have pending at once.
pub const MAX_HELD: usize = 64;

/// Deliveries taken from the outbox at a time, so a busy session writes in batches.
pub const DELIVERY_BATCH: usize = 256;

/// A session whose credential never runs out: an expiry stored as a plain number, not an
/// `Option` (8 bytes less in every connection's state).
const NEVER: u64 = u64::MAX;

/// An answer that must reach the client in order, before any delivery or notice after it.
#[derive(Debug)]
pub enum Held {
    /// The stored messages of a catch-up: `room`'s messages after the client's `since` up to
    /// the id it had when the subscription began (everything later arrives live).
    Replay {
        /// The subscription the messages belong to.
        subscription: String,
        /// Oldest first; `Err` when storage failed (or the catch-up was refused).
        messages: Result<Vec<StoredMessage>, ()>,
        /// What the messages hold against the memory budget until written (kept for its drop).
        #[allow(dead_code)]
        charge: Option<Charge>,
    },
    /// Cluster mode: a join's answer, once this node receives the room.
    Joined {
        /// The room.
        room: String,
        /// Who is in it, on every node.
        members: Vec<String>,
        /// The room's newest id at the join, as this node knew it (a node not yet receiving
        /// the room may know an older one: a recovery from it repeats, never skips).
        last_id: u64,
    },
    /// The work that was to produce the answer ended without one.
    Lost,
}

/// What a session's connection should do next.
#[derive(Debug)]
pub enum Next {
    /// The hub closed the session: close the connection with this code and reason.
    Evicted(CloseCode, String),
    /// The session's credential ran out.
    Expired,
    /// An answer held in order (see [`Held`]).
    Held(Held),
    /// Something the hub tells this session.
    Notice(Notice),
    /// Room deliveries (one, or a room's run); more may follow at once ([`HubSession::batch`]).
    Delivery(Queued),
}

/// One session's end of the hub, owned by its connection's task.
pub struct HubSession {
    hub: Arc<Hub>,
    id: SessionId,
    /// Its notices and deliveries, and the flag set when it must go: one allocation.
    mail: Mailbox,
    /// Answers to write in order before anything after them: catch-up replays and (cluster
    /// mode) join answers. Live deliveries and notices wait while any is pending. Boxed, and
    /// only while one is: most sessions never hold an answer.
    #[allow(clippy::box_collection)] // on purpose: 8 bytes in every session, not 32
    held: Option<Box<VecDeque<oneshot::Receiver<Held>>>>,
    /// When the session's credential runs out (ms since the epoch); [`NEVER`]: never.
    expires_ms: u64,
    /// Wakes the session at `expires_ms` (a slot in the shared wheel; `revoked` is a boxed
    /// future kept by the session, so that waiting in [`HubSession::next`] keeps none). Boxed
    /// once first set: sessions that time their own expiry (STOMP) or have none keep 8 bytes.
    expiry_timer: Option<Box<Timer>>,
    /// Resolves when the personal access token that opened the session is revoked.
    revoked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    closed: bool,
    /// Its owner's own deadline covers the expiry (STOMP's does), so `expiry_timer` stays
    /// unset: one wheel slot per session, not two.
    owner_times_expiry: bool,
    /// Its protocol, named in its connection's log lines.
    protocol: Protocol,
    /// Its protocol and transport's counters.
    metrics: &'static SessionMetrics,
}

impl Hub {
    /// Registers a new session from `origin` and returns its handle; the session is in the
    /// broker once its endpoint connects it (STOMP CONNECT, or at once for the raw protocol),
    /// and says who it is with [`HubSession::identify`].
    pub fn open_session(self: &Arc<Self>, origin: Origin) -> HubSession {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let capacity = self.settings.outbox_capacity;
        let bytes = self.settings.outbox_bytes;
        let (sender, mail) = mailbox::channel(capacity, bytes, Eviction::default());
        self.lock().outboxes.insert(
            id,
            Outbox {
                mail: sender,
                info: SessionInfo {
                    origin,
                    since_ms: crate::clock::now_ms(),
                    user: None,
                    guest: false,
                },
            },
        );
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let metrics = metrics::session(origin.protocol, origin.transport);
        metrics.opened.increment(1);
        metrics.open.increment(1.0);
        let session = HubSession {
            hub: self.clone(),
            id,
            mail,
            held: None,
            expires_ms: NEVER,
            expiry_timer: None,
            revoked: None,
            closed: false,
            owner_times_expiry: false,
            protocol: origin.protocol,
            metrics,
        };
        // Named in the current span's log lines from here on: the connection's (see
        // `http::Server::accept_loop`), or for `/ws` the upgrade request's (`name_span` then
        // names the connection's).
        session.name_span(None);
        session
    }
}

impl HubSession {
    /// The session's id in the broker.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Set when the hub decides the session must go.
    pub fn evicted(&self) -> &Eviction {
        self.mail.companion()
    }

    /// Says who the session is, once authenticated: operators see it under that name, and a
    /// banned user's session is closed at once. Every endpoint calls it when it knows.
    pub fn identify(&self, identity: &parley_stomp::session::Identity) {
        // Named in the connection's (or request's) log lines from here on.
        crate::logs::name_user(&identity.name);
        tracing::debug!("session identified");
        self.hub.identify(self.id, identity);
    }

    /// Names the session (protocol, id, and `user` once known) in the log lines from here on:
    /// the current request's or, outside one, the connection's ([`crate::logs`]).
    pub fn name_span(&self, user: Option<&Arc<str>>) {
        crate::logs::name_session(self.protocol.name(), self.id, user);
    }

    /// Sets when the session's credential runs out (ms since the epoch; `None`: never).
    pub fn set_expiry(&mut self, expires_ms: Option<u64>) {
        self.expires_ms = expires_ms.unwrap_or(NEVER);
    }

    /// Ends the session when `revoked` is cancelled (its personal access token was revoked).
    pub fn set_revocation(&mut self, revoked: Option<Arc<CancellationToken>>) {
        self.revoked =
            revoked.map(|token| Box::pin(CancellationToken::clone(&token).cancelled_owned()));
    }

    /// When the session's credential runs out.
    pub fn expiry(&self) -> Option<u64> {
        (self.expires_ms != NEVER).then_some(self.expires_ms)
    }

    /// The credential has run out.
    pub fn is_expired(&self) -> bool {
        self.expiry().is_some_and(|at| crate::clock::now_ms() >= at)
    }

    /// Waits for what to send next: an eviction or expiry first, then held answers in order,
    /// then notices and deliveries once nothing is held. Cancel-safe: dropping the future
    /// (another `select!` branch won) loses nothing.
    pub fn next(&mut self) -> impl Future<Output = Next> + Send + '_ {
        poll_fn(|cx| self.poll_next(cx))
    }

    /// [`HubSession::next`] by hand: an idle connection waits on it without a future per
    /// thing it waits for.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Poll::Ready(end) = self.poll_end(cx) {
            return Poll::Ready(end);
        }
        if let Some(held) = &mut self.held {
            // Notices and deliveries wait until every held answer is out.
            if let Some(first) = held.front_mut() {
                let answer = ready!(Pin::new(first).poll(cx)).unwrap_or(Held::Lost);
                held.pop_front();
                if held.is_empty() {
                    self.held = None;
                }
                return Poll::Ready(Next::Held(answer));
            }
        }
        self.mail.poll_recv(cx).map(|mail| match mail {
            Some(Mail::Notice(notice)) => Next::Notice(notice),
            Some(Mail::Delivery(delivery)) => Next::Delivery(delivery),
            None => Next::Evicted(CloseCode::INTERNAL_ERROR, "internal error".to_owned()),
        })
    }

    /// Why the session must end, once it must: evicted, its credential expired or revoked.
    /// Each stays ready once it is (nothing is taken), so [`HubSession::poll_ready`] may look.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let evicted = self.mail.companion();
        if evicted.poll_evicted(cx).is_ready() {
            let (code, reason) = evicted.reason();
            return Poll::Ready(Next::Evicted(code, reason.to_owned()));
        }
        if self.poll_expired(cx).is_ready() {
            return Poll::Ready(Next::Expired);
        }
        if let Some(revoked) = &mut self.revoked {
            if revoked.as_mut().poll(cx).is_ready() {
                let reason = "the access token was revoked".to_owned();
                return Poll::Ready(Next::Evicted(CLOSE_UNAUTHORIZED, reason));
            }
        }
        Poll::Pending
    }

    /// `Ready` when [`HubSession::next`] would be, taking nothing: for a parked connection
    /// (`crate::park`), whose waker this registers. Not while answers are held (catch-up,
    /// cluster joins; see [`HubSession::parks`]).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held.is_some() || self.poll_end(cx).is_ready() {
            return Poll::Ready(());
        }
        self.mail.poll_ready(cx)
    }

    /// Whether the session can wait parked: not while answers it holds are being read (their
    /// futures need a task to poll them).
    pub fn parks(&self) -> bool {
        self.held.is_none()
    }

    /// The owner wakes itself at the expiry (its own deadline includes [`HubSession::expiry`])
    /// and checks [`HubSession::is_expired`] then: the session sets no timer for it.
    pub fn owner_times_expiry(&mut self) {
        self.owner_times_expiry = true;
    }

    /// Ready once the credential has run out; never without an expiry.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.expiry() else {
            return Poll::Pending;
        };
        // The wall clock decides (the timer only wakes us): a clock step after the timer was
        // set must not keep an expired credential alive.
        if crate::clock::now_ms() >= at {
            return Poll::Ready(());
        }
        if self.owner_times_expiry {
            return Poll::Pending;
        }
        // Woken at the instant the wall clock says now; past it (a clock stepped back) the
        // timer is simply set again, from now.
        if self
            .expiry_timer
            .get_or_insert_with(Box::default)
            .poll_at(instant_at(at).into_std(), cx)
            .is_ready()
        {
            cx.waker().wake_by_ref(); // within the millisecond: look again
        }
        Poll::Pending
    }

    /// Takes and drops everything queued for the session now: how many deliveries there were.
    /// For benchmarks, which consume without writing anywhere.
    pub fn discard_queued(&mut self) -> usize {
        std::iter::from_fn(|| self.mail.try_recv())
            .map(|mail| match mail {
                Mail::Delivery(queued) => mailbox::Weigh::count(&queued),
                Mail::Notice(_) => 0,
            })
            .sum()
    }

    /// `first` and the deliveries queued behind it, up to [`DELIVERY_BATCH`] in all.
    pub fn batch(&mut self, first: Queued) -> Batch<'_> {
        if metrics::enabled() {
            observe_delay(&first);
        }
        let room = DELIVERY_BATCH.saturating_sub(mailbox::Weigh::count(&first));
        let rest = self.mail.take(room);
        Batch {
            first: Some(first),
            rest,
            mail: &mut self.mail,
            taken: 0,
            counter: &self.metrics.deliveries,
        }
    }

    /// Counts `n` messages its client published that took effect.
    pub fn count_messages_in(&self, n: u64) {
        self.metrics.messages_in.increment(n);
    }

    /// Queues a catch-up: `room`'s stored messages with `since < id <= last`, read once
    /// everything queued for storage is durable; live deliveries wait until it is written.
    /// Past the memory budget, or with [`MAX_HELD`] answers already pending, the catch-up
    /// fails at once as if storage had (the endpoint tells the client to retry).
    pub fn replay(&mut self, room: String, subscription: String, since: u64, last: u64) {
        let (tx, rx) = oneshot::channel();
        let refused = self.hub.budget().is_exhausted()
            || self.held.as_ref().map_or(0, |held| held.len()) >= MAX_HELD;
        let read = (!refused).then(|| self.hub.stored_between(room.clone(), since, last));
        let budget = self.hub.budget().clone();
        tokio::spawn(async move {
            let Some(read) = read else {
                let _ = tx.send(Held::Replay {
                    subscription,
                    messages: Err(()),
                    charge: None,
                });
                return;
            };
            let messages = read.await.map_err(|error| {
                tracing::warn!(%error, %room, "catch-up read failed");
            });
            // Held until written; the budget sees it (refusing new work while it is large).
            let charge = messages
                .as_ref()
                .ok()
                .map(|ms| budget.charge(ms.iter().map(|m| m.body.len() + 128).sum::<usize>()));
            let _ = tx.send(Held::Replay {
                subscription,
                messages,
                charge,
            });
        });
        self.held.get_or_insert_default().push_back(rx);
    }

    /// Reserves the next place among the held answers; what is sent on it is written there.
    pub fn hold(&mut self) -> oneshot::Sender<Held> {
        let (tx, rx) = oneshot::channel();
        self.held.get_or_insert_default().push_back(rx);
        tx
    }

    /// Queues a notice for this session from elsewhere (a task answering it later).
    pub fn notifier(&self) -> Notifier {
        self.mail.sender()
    }

    /// Ends the session: its outbox goes, then `close` takes it out of the broker (with the
    /// events that causes, e.g. presence). Later calls do nothing.
    pub fn close(&mut self, close: impl FnOnce(&mut Broker, &mut dyn FnMut(BrokerEvent))) {
        if !std::mem::replace(&mut self.closed, true) {
            self.metrics.ended(self.ended_why());
            self.hub.close_session(self.id, close);
        }
    }
}

impl HubSession {
    fn ended_why(&self) -> Ended {
        let evicted = self.mail.companion();
        if !evicted.is_evicted() {
            Ended::Closed
        } else if evicted.reason().1.starts_with("slow consumer") {
            Ended::SlowConsumer
        } else {
            Ended::Evicted
        }
    }
}

/// Records how long ago `delivery`'s message was published (its `timestamp`, in ms).
fn observe_delay(delivery: &Queued) {
    let published = delivery.first().and_then(|m| m.header("timestamp"));
    if let Some(ms) = published.and_then(|t| t.parse::<u64>().ok()) {
        let delay = crate::clock::now_ms().saturating_sub(ms);
        metrics::handles()
            .delivery_delay
            .record(delay as f64 / 1000.0);
    }
}

/// A session's batch of deliveries ([`HubSession::batch`]), each entry one delivery or a
/// room's run ([`Queued::iter`] walks them); counts what was taken when dropped, one atomic add
/// per batch.
pub struct Batch<'a> {
    first: Option<Queued>,
    /// Taken from the queue at once (one lock); what is left goes back when dropped.
    rest: VecDeque<Queued>,
    mail: &'a mut Mailbox,
    taken: u64,
    counter: &'static metrics::Counter,
}

impl Iterator for Batch<'_> {
    type Item = Queued;

    fn next(&mut self) -> Option<Queued> {
        let next = self.first.take().or_else(|| self.rest.pop_front());
        if let Some(queued) = &next {
            self.taken += mailbox::Weigh::count(queued) as u64;
        }
        next
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.counter.increment(self.taken);
        self.mail.put_back(std::mem::take(&mut self.rest));
    }
}

impl Drop for HubSession {
    fn drop(&mut self) {
        // Others may keep the eviction flag a while; they must not keep this task's waker.
        self.mail.companion().forget_waiter();
        let id = self.id;
        self.close(|broker, events| broker.disconnect(id, events));
    }
}
