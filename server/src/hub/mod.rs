//! The chat hub: every session of every protocol, the rooms they share and the fan-out between
//! them. It knows no wire format: endpoints encode what it hands them.
//!
//! The broker (sans-IO, in `parley-stomp`) sits behind a read-write lock here. An operation
//! that changes it (a subscription, a session, a queue, a DM) holds it alone; a plain room
//! message needs it only shared plus its room's turn (`publisher`), so rooms publish at the same
//! time. Either way the deliveries reach each subscriber's bounded outbox before the lock or
//! turn is released, so every subscriber sees a topic's messages in one order and no publisher
//! ever waits for a subscriber. A session whose outbox is full is a slow consumer and is evicted
//! (nats-server's policy).
//!
//! Files: `session` (a connection's handle: open, next thing to send, close), `chat`
//! (protocol-neutral chat commands: join, leave, send, typing, history), `publisher` (sends
//! published with the broker shared), `history` (catch-up
//! and history reads), `rooms` (room creation and rules, revocation), `presence`, `reads` (read
//! marks and unread counts), `message`
//! (stored ↔ live message conversion and the journal), `cluster` (numbering, per-room order and
//! gap fill in cluster mode), `outbox` and `mailbox` (the queues to each session), `people`
//! (who is online, server-wide), `admin` (operators' actions: kicks, bans, closed rooms,
//! deletions, on every node), `registry` (who is connected, recent evictions), `activity` (the
//! busiest rooms now), `closed` (closed rooms), `generation` (changes to the bans and closed
//! rooms, so reloads from storage lose none).

mod activity;
mod admin;
mod chat;
mod checks;
mod closed;
mod cluster;
mod direct;
mod edits;
mod gauges;
mod generation;
mod history;
pub mod mailbox;
mod message;
mod order;
mod outbox;
mod people;
mod presence;
mod publisher;
mod reads;
mod refusal;
mod registry;
mod rooms;
mod sent;
mod session;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use parley_stomp::broker::SessionId;
use parley_stomp::broker::{Broker, BrokerEvent, BrokerLimits, Delivery, Forwarded, Receipt, Turn};
use parley_stomp::budget::MemoryBudget;
use tracing::info;

pub use self::admin::CLOSE_REMOVED;
pub use self::chat::{
    is_typing_subscription, ChatSession, ChatSettings, JoinAnswer, SendExtras, Target,
    READ_SUBSCRIPTION,
};
pub use self::direct::{peer_in, DM_QUEUE, RECIPIENT};
pub use self::edits::{Change, MAX_EMOJI_BYTES};
pub use self::history::{catch_up_range, DEFAULT_PAGE, MAX_PAGE};
pub use self::message::{
    check_room_send, live_from_stored, CLIENT_ID, KIND, MAX_CLIENT_ID, REPLY_TO, TARGET,
};
use self::order::{RoomOrder, Watching};
use self::outbox::{weight_of, Outbox};
pub use self::outbox::{Delivered, Notice, Queued, CLOSE_UNAUTHORIZED};
pub use self::publisher::{Outcome, Publisher, Step};
pub use self::reads::{READ_LAST, READ_ROOM, READ_WITH};
pub use self::refusal::Refusal;
pub use self::registry::{Connection, Eviction, Origin, Protocol, Transport};
pub use self::rooms::{ROOMS_TOPIC, ROOM_HEADER};
pub use self::session::{Held, HubSession, Next};
pub use self::tables::{ChangeRates, EditLimits, SentKey, MAX_REMEMBERED, REMEMBERED_MS};
use crate::acl::Acl;
use crate::auth::Bans;
use crate::bus::Bus;
use crate::clock::now_ms;
use crate::journal::Journal;
use crate::metrics;
use crate::store::Store;

/// Most messages one catch-up replays; older ones are paged with history.
pub const MAX_REPLAY: usize = 10_000;

/// How often queued messages past their time-to-live are dropped.
const QUEUE_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Drops expired queue messages now and then, until the hub is gone.
async fn expire_queues(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(QUEUE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.apply(|broker, _| broker.expire_queues(crate::clock::now_ms()));
    }
}

/// The hub's limits.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Broker limits (subscriptions, queues, unacknowledged messages).
    pub broker: BrokerLimits,
    /// Deliveries a session may have queued before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Bytes of deliveries a session may have queued before it counts as a slow consumer.
    pub outbox_bytes: usize,
    /// What everything buffered for clients is charged to.
    pub budget: Arc<MemoryBudget>,
    /// How often and how long after messages may be edited or deleted.
    pub edits: EditLimits,
    /// Banned users (shared with auth): their sessions are refused and closed.
    pub bans: Arc<Bans>,
    /// Accounts that are operators by configuration (`--operator`), besides storage's.
    pub operators: Vec<String>,
}

/// Counters shown at `/stats`, for every protocol.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Open chat sessions (STOMP and raw JSON).
    pub sessions: AtomicU64,
    /// Messages clients published that took effect (room messages, DMs, typing).
    pub messages_in: AtomicU64,
    /// Deliveries handed to outboxes.
    pub deliveries: AtomicU64,
    /// Sessions closed because their outbox was full or they left too much unacknowledged.
    pub slow_consumers: AtomicU64,
}

/// The broker, every session's outbox, and what connects them to storage and other nodes.
pub struct Hub {
    inner: RwLock<HubInner>,
    settings: HubSettings,
    next_session: AtomicU64,
    /// Each user's rate of edits, deletions and reactions.
    changes: tables::ChangeRates,
    /// Accounts direct messages went to, so most sends need no lookup.
    known: tables::KnownAccounts,
    /// Client ids of recent sends, which make retries idempotent.
    sent: tables::SentIds,
    store: Arc<dyn Store>,
    journal: Journal,
    /// Room rules; also tells which rooms exist, so a join creates a room only the first time.
    acl: Arc<Acl>,
    /// Counters, read by `/stats`.
    pub stats: HubStats,
    /// Cluster mode: the bus to the other nodes.
    bus: Option<Arc<Bus>>,
    /// This hub, for work that outlives a call (storage completions, reads from storage).
    me: Weak<Hub>,
    /// Where that work runs: storage completions come from the journal's own thread.
    runtime: tokio::runtime::Handle,
    /// Messages per room lately: the busiest rooms.
    activity: activity::Activity,
    /// Rooms operators closed.
    closed: closed::ClosedRooms,
    /// Changes to the bans and closed rooms, so a reload never erases one made while it read.
    admin_generation: generation::Generation,
    /// The last slow consumers evicted.
    evictions: registry::RecentEvictions,
}

/// What the broker's lock guards.
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

/// Where [`Hub::dispatch`] puts what an operation's events ask for.
struct Effects<'a> {
    pending: &'a mut Vec<Delivery>,
    forwards: &'a mut Vec<(Option<SessionId>, Forwarded, Option<Receipt>)>,
    watch_changes: &'a mut Vec<(String, bool)>,
}

impl Hub {
    /// A hub over `store` with an empty broker whose room ids continue from `last_ids` (what
    /// storage holds). With a `bus`, rooms are shared with other nodes (cluster mode).
    pub fn new(
        settings: HubSettings,
        store: Arc<dyn Store>,
        journal: Journal,
        acl: Arc<Acl>,
        bus: Option<Arc<Bus>>,
        last_ids: HashMap<String, u64>,
    ) -> Arc<Self> {
        let mut broker = Broker::new(settings.broker.clone());
        broker.set_forwarding(bus.is_some());
        broker.set_budget(settings.budget.clone());
        // Room ids continue where storage left off, so they never go backwards.
        for (room, last) in last_ids {
            broker.seed_room(&room, last);
        }
        let hub = Arc::new_cyclic(|me| Self {
            inner: RwLock::new(HubInner {
                broker,
                outboxes: HashMap::new(),
                pending: Vec::new(),
                forwards: Vec::new(),
                watch_changes: Vec::new(),
                order: HashMap::new(),
                watching: Watching::default(),
            }),
            settings,
            next_session: AtomicU64::new(1),
            changes: Default::default(),
            sent: Default::default(),
            known: Default::default(),
            stats: HubStats::default(),
            acl,
            store,
            journal,
            bus,
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
            activity: Default::default(),
            closed: Default::default(),
            admin_generation: Default::default(),
            evictions: Default::default(),
        });
        if let Some(bus) = &hub.bus {
            let events: Weak<dyn crate::bus::BusEvents> = Arc::downgrade(&hub) as _;
            bus.start(events);
        }
        hub.runtime.spawn(expire_queues(Arc::downgrade(&hub)));
        hub
    }

    /// The memory budget everything buffered for clients is charged to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.settings.budget
    }

    /// Message limits: body size, how long and how often messages may be changed.
    pub fn edit_limits(&self) -> &EditLimits {
        &self.settings.edits
    }

    /// The message store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Room rules.
    pub fn acl(&self) -> &Arc<Acl> {
        &self.acl
    }

    /// Several nodes share the rooms (`--cluster`).
    pub fn is_clustered(&self) -> bool {
        self.bus.is_some()
    }

    /// Waits until everything queued for storage so far is durable; `false` if storage failed.
    pub async fn durable(&self) -> bool {
        matches!(self.durable_signal().await, Ok(true))
    }

    /// Runs `op` on the broker under the lock; its deliveries go to outboxes at once and the
    /// presence changes it causes are announced before the lock is released. While storage
    /// is failing, the broker refuses room messages.
    pub fn apply<R>(&self, op: impl FnOnce(&mut Broker, &mut dyn FnMut(BrokerEvent)) -> R) -> R {
        let now_ms = now_ms();
        let started = metrics::start();
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Read under the lock, so no room message is numbered after the journal kept a failed
        // batch and before the broker refuses them.
        inner.broker.set_storage_failing(self.journal.is_failing());
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
        self.announce_presence(inner, presence, now_ms, true);
        if self.bus.is_some() {
            self.flush_to_bus(inner);
        }
        self.share_online(inner);
        if !inner.pending.is_empty() {
            self.deliver(&inner.outboxes, &mut inner.pending);
            metrics::observe_since(&metrics::handles().fanout, started);
        }
        result
    }

    /// Hands the operation's deliveries to their outboxes, each session's together: one outbox
    /// lookup, one lock and one wake-up per session and batch. The sort is stable, so each
    /// session keeps its deliveries' order.
    fn deliver(&self, outboxes: &HashMap<SessionId, Outbox>, pending: &mut Vec<Delivery>) {
        if pending.len() > 1 {
            pending.sort_by_key(|d| d.session);
        }
        let mut delivered = 0;
        let mut rest = pending.drain(..).peekable();
        while let Some(first) = rest.next() {
            let session = first.session;
            let more = std::iter::from_fn(|| rest.next_if(|d| d.session == session));
            let mut run = std::iter::once(first).chain(more).map(Queued::One);
            delivered += self.hand_over(outboxes, session, run.by_ref());
            // What did not fit goes with the evicted session.
            run.for_each(drop);
        }
        self.stats
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
    }

    /// Hands the messages a room's turn published to its subscribers, walking them once: every
    /// subscription's outbox gets one entry sharing the whole run (no list of deliveries to
    /// sort, no reference per message and subscriber). `true` if anything was published.
    fn deliver_turn(&self, outboxes: &HashMap<SessionId, Outbox>, turn: &mut Turn<'_>) -> bool {
        let mut published = false;
        let mut delivered = 0;
        let mut weight = 0;
        turn.deliver(&mut |session, subscription, messages| {
            if !published {
                published = true;
                weight = messages.iter().map(|m| weight_of(m)).sum();
            }
            let run = Queued::Run {
                subscription: subscription.clone(),
                messages: messages.clone(),
                weight,
            };
            delivered += self.hand_over(outboxes, session, std::iter::once(run));
        });
        self.stats
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
        published
    }

    /// Queues one session's run of deliveries; a session too slow to take them all is evicted.
    /// How many were queued.
    fn hand_over(
        &self,
        outboxes: &HashMap<SessionId, Outbox>,
        session: SessionId,
        run: impl Iterator<Item = Queued>,
    ) -> u64 {
        let Some(outbox) = outboxes.get(&session) else {
            return 0;
        };
        let mut messages = 0;
        let counted = run.inspect(|queued| messages += mailbox::Weigh::count(queued) as u64);
        match outbox.mail.try_send_deliveries(counted) {
            Ok(_) => messages,
            Err(mailbox::TrySendError::Full(_)) => {
                self.evict_slow(outbox, session, "too many messages waiting to be written");
                0
            }
            Err(mailbox::TrySendError::Closed(_)) => 0,
        }
    }

    /// Closes a session that cannot keep up, counting it once and remembering it.
    fn evict_slow(&self, outbox: &Outbox, session: SessionId, reason: &str) {
        if outbox.evicted().evict_slow(reason) {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            info!(session, reason, "slow consumer disconnected");
            let info = &outbox.info;
            self.evictions.record(registry::Eviction {
                at_ms: now_ms(),
                session,
                user: info.user.clone(),
                protocol: info.origin.protocol,
                address: info.origin.address,
                reason: reason.to_owned(),
            });
        }
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
                    self.evict_slow(outbox, session, reason);
                }
            }
            BrokerEvent::Store {
                session,
                room,
                id,
                message,
                receipt,
            } => {
                let sender = session.and_then(|s| outboxes.get(&s));
                self.journal_message(sender, room, id, &message, receipt);
            }
            joined_or_left => presence.push(joined_or_left),
        }
    }

    /// Takes a session's outbox away, then runs `close` (which takes it out of the broker).
    fn close_session(
        &self,
        id: SessionId,
        close: impl FnOnce(&mut Broker, &mut dyn FnMut(BrokerEvent)),
    ) {
        self.lock().outboxes.remove(&id);
        self.apply(close);
        self.stats.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// The broker alone.
    fn lock(&self) -> RwLockWriteGuard<'_, HubInner> {
        // A panic while holding the lock would be a bug in the broker; keep serving the rest.
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The broker shared: for publishing in rooms' turns ([`Hub::publish_each`]).
    fn read(&self) -> RwLockReadGuard<'_, HubInner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
