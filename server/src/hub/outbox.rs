//! The hub's side of one session: its bounded queues and its eviction flag, and what the hub
//! may tell a session besides deliveries.

use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parley_protocol::CloseCode;
use parley_stomp::broker::{Delivery, Run};
use parley_stomp::SharedMessage;

use super::mailbox;
use super::registry::SessionInfo;
use crate::store::StoredMessage;

/// Close code (4401, like HTTP 401) for a session whose credential no longer holds: its token
/// expired, or the guest name it used now belongs to an account. The client should sign in.
pub const CLOSE_UNAUTHORIZED: CloseCode = match CloseCode::from_wire(4401) {
    Some(code) => code,
    None => CloseCode::POLICY_VIOLATION,
};

/// Something the hub tells one session besides room deliveries; its endpoint encodes it.
#[derive(Debug)]
pub enum Notice {
    /// Bytes the endpoint encoded itself, e.g. the acknowledgement its
    /// [`Receipt`](parley_stomp::broker::Receipt) made once a message was durable.
    Encoded(Bytes),
    /// The session's user may no longer read `room`; its subscriptions there ended.
    Revoked {
        /// The room.
        room: String,
        /// Why, for the client.
        reason: String,
    },
    /// A page of history the session asked for; `Err` when storage failed.
    History {
        /// The room.
        room: String,
        /// The messages, oldest first.
        messages: Result<Vec<StoredMessage>, ()>,
    },
}

/// What a session's delivery queue holds: one delivery, or the run of messages a room's turn
/// published, one run shared by every subscriber of the room (one queue entry and one
/// reference per subscriber, not one per message).
#[derive(Debug)]
pub enum Queued {
    /// One delivery.
    One(Delivery),
    /// A turn's messages for one subscription, oldest first (none acknowledged by the client).
    Run {
        /// The subscription's id, as the client chose it.
        subscription: Arc<str>,
        /// The messages.
        messages: Run,
        /// What the messages weigh ([`mailbox::Weigh`]), counted once per turn.
        weight: usize,
    },
}

/// One delivery of a [`Queued`] value, borrowed from it.
#[derive(Clone, Copy)]
pub struct Delivered<'a> {
    /// The subscription's id, as the client chose it.
    pub subscription: &'a Arc<str>,
    /// The 1.2 `ack` value, for client ack modes.
    pub ack: Option<u64>,
    /// The shared, encode-once message.
    pub message: &'a Arc<SharedMessage>,
}

impl Queued {
    /// Its deliveries, in order.
    pub fn iter(&self) -> impl Iterator<Item = Delivered<'_>> {
        let (one, run, subscription) = match self {
            Queued::One(d) => (Some(d), &[][..], &d.subscription),
            Queued::Run {
                subscription,
                messages,
                ..
            } => (None, &messages[..], subscription),
        };
        let one = one.map(|d| Delivered {
            subscription: &d.subscription,
            ack: d.ack,
            message: &d.message,
        });
        one.into_iter()
            .chain(run.iter().map(move |message| Delivered {
                subscription,
                ack: None,
                message,
            }))
    }

    /// Its first message.
    pub fn first(&self) -> Option<&Arc<SharedMessage>> {
        match self {
            Queued::One(d) => Some(&d.message),
            Queued::Run { messages, .. } => messages.first(),
        }
    }
}

/// What a backlog of `message` keeps alive (the message is shared with other subscribers, but
/// a backlog keeps it).
pub(super) fn weight_of(message: &SharedMessage) -> usize {
    message.body().len() + 64
}

impl mailbox::Weigh for Queued {
    fn weight(&self) -> usize {
        match self {
            Queued::One(d) => weight_of(&d.message),
            Queued::Run { weight, .. } => *weight,
        }
    }

    fn count(&self) -> usize {
        match self {
            Queued::One(_) => 1,
            Queued::Run { messages, .. } => messages.len(),
        }
    }
}

impl mailbox::Weigh for Notice {
    fn weight(&self) -> usize {
        match self {
            Notice::Encoded(bytes) => bytes.len(),
            Notice::Revoked { reason, .. } => reason.len() + 64,
            Notice::History { messages, .. } => messages
                .as_ref()
                .map_or(0, |ms| ms.iter().map(|m| m.body.len() + 64).sum()),
        }
    }
}

/// The sending side of a session's queues — notices (acknowledgements and the like), room
/// deliveries, and beside them the flag set when the session must go — kept by the hub, and
/// by tasks that answer the session later.
pub type Notifier = mailbox::Sender<Notice, Queued, Eviction>;

/// The receiving side of a session's queues, kept by the session.
pub(super) type Mailbox = mailbox::Receiver<Notice, Queued, Eviction>;

/// A session as the hub keeps it.
pub(super) struct Outbox {
    /// Its queues and eviction flag.
    pub(super) mail: Notifier,
    /// Who and where it is, for operators.
    pub(super) info: SessionInfo,
}

impl Outbox {
    /// Queues `notice`; a session too slow to take it is evicted.
    pub(super) fn notify(&self, notice: Notice) {
        tell(&self.mail, notice);
    }

    /// Set when the session must go.
    pub(super) fn evicted(&self) -> &Eviction {
        self.mail.companion()
    }
}

/// Queues `notice` for a session, evicting the session if its notices are full.
pub(super) fn tell(mail: &Notifier, notice: Notice) {
    if let Err(mailbox::TrySendError::Full(_)) = mail.try_send_notice(notice) {
        mail.companion()
            .evict_slow("too many notices waiting to be written");
    }
}

/// Set once when the hub decides a session must go.
#[derive(Default)]
pub struct Eviction {
    /// The WebSocket close code and the reason, which is also a STOMP ERROR's message.
    /// Boxed: only evicted sessions have one, and every session has this (see `mailbox`).
    reason: OnceLock<Box<(CloseCode, String)>>,
    /// The session's task while it waits for the eviction (one task owns a session). A waker,
    /// not a cancellation token: nothing allocated per session, no future kept to wait on it.
    waker: AtomicWaker,
}

impl Eviction {
    /// The session must be closed.
    pub fn is_evicted(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Ready once the session must be closed. One waiter: the session's own task (the last
    /// registration wins).
    pub(crate) fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_evicted() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Evicted between the check and the registration: its wake may have missed us.
        if self.is_evicted() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until the session must be closed; the session's own task only (see
    /// [`Eviction::poll_evicted`]).
    pub(crate) async fn evicted(&self) {
        poll_fn(|cx| self.poll_evicted(cx)).await;
    }

    /// Drops the waiting task's waker: the session is over.
    pub(super) fn forget_waiter(&self) {
        drop(self.waker.take());
    }

    /// The close code and why the session must be closed.
    pub fn reason(&self) -> (CloseCode, &str) {
        self.reason
            .get()
            .map_or((CloseCode::POLICY_VIOLATION, "evicted"), |b| (b.0, &b.1))
    }

    /// Closes a consumer that cannot keep up (1008); `true` the first time.
    pub fn evict_slow(&self, reason: &str) -> bool {
        self.evict(
            CloseCode::POLICY_VIOLATION,
            format!("slow consumer: {reason}"),
        )
    }

    /// Closes the session with `code` and `reason`; `true` the first time.
    pub fn evict(&self, code: CloseCode, reason: String) -> bool {
        let first = self.reason.set(Box::new((code, reason))).is_ok();
        self.waker.wake();
        first
    }
}
