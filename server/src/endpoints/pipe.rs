//! The two ends of a message session that outlives its HTTP requests (SockJS): the messages
//! the client sent, waiting for the app (STOMP, raw JSON, echo), and the messages the app
//! sent, waiting for the client's next receiving request. Both directions are bounded in
//! bytes, and what waits for the client is charged to the server's memory budget (these are
//! copies of the shared messages); the app side never waits on the client.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_stomp::budget::{Charge, MemoryBudget};
use tokio::sync::Notify;

/// A session's state, shared by its app and its requests.
#[derive(Default)]
struct State {
    inbound: VecDeque<Bytes>,
    inbound_bytes: usize,
    outbound: VecDeque<(Bytes, Charge)>,
    outbound_bytes: usize,
    /// The app ended the session: the close frame's code and reason, and since when.
    close: Option<(u16, String)>,
    closed_at: Option<Instant>,
    /// The client is gone (no receiving request for too long, or its WebSocket closed).
    peer_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the app: inbound messages, or the client gone.
    to_app: Notify,
    /// Wakes the receiving request: outbound messages, or the session closed.
    to_peer: Notify,
    /// Wakes an app waiting for the client to take what it sent.
    taken: Notify,
    max_inbound: usize,
    max_outbound: usize,
    budget: Arc<MemoryBudget>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves no half-made change worth refusing over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn set_close(&mut self, code: u16, reason: &str) {
        if self.close.is_none() {
            self.close = Some((code, reason.to_owned()));
            self.closed_at = Some(Instant::now());
        }
    }
}

/// A new session's two ends; each direction holds at most its bound in bytes, and what waits
/// for the client is charged to `budget`.
pub fn pipe(
    max_inbound: usize,
    max_outbound: usize,
    budget: Arc<MemoryBudget>,
) -> (AppEnd, PeerEnd) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        to_app: Notify::new(),
        to_peer: Notify::new(),
        taken: Notify::new(),
        max_inbound,
        max_outbound,
        budget,
    });
    (AppEnd(shared.clone()), PeerEnd(shared))
}

/// The app's end: what the client sent, and where the app's messages go.
pub struct AppEnd(Arc<Shared>);

/// The app's messages did not fit: the client is not collecting them.
#[derive(Debug)]
pub struct Overflow;

impl AppEnd {
    /// Waits for messages from the client and moves them into `into`; `false` once the
    /// client is gone (what it sent before is still handed over first).
    pub async fn recv(&self, into: &mut Vec<Bytes>) -> bool {
        loop {
            let notified = self.0.to_app.notified();
            {
                let mut state = self.0.lock();
                if !state.inbound.is_empty() {
                    state.inbound_bytes = 0;
                    into.extend(state.inbound.drain(..));
                    return true;
                }
                if state.peer_gone || state.close.is_some() {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Queues one message for the client. Past the outbound bound the session is closed
    /// (1008, as a slow consumer) and `Err` says so.
    pub fn send(&self, message: Bytes) -> Result<(), Overflow> {
        self.send_all([message])
    }

    /// Queues `messages` in one step: a receiving request takes them together or not at all
    /// (an echo of one send is one frame, as the reference server makes it).
    pub fn send_all(&self, messages: impl IntoIterator<Item = Bytes>) -> Result<(), Overflow> {
        let mut state = self.0.lock();
        if state.close.is_some() {
            return Err(Overflow);
        }
        for message in messages {
            if state.outbound_bytes + message.len() > self.0.max_outbound {
                state.set_close(1008, "slow consumer: messages not collected");
                drop(state);
                self.0.to_peer.notify_one();
                self.0.to_app.notify_one();
                return Err(Overflow);
            }
            state.outbound_bytes += message.len();
            // Charged whatever the level, as a delivery is: it was published already.
            let charge = self.0.budget.charge(message.len());
            state.outbound.push_back((message, charge));
        }
        drop(state);
        self.0.to_peer.notify_one();
        Ok(())
    }

    /// Waits until at most half the outbound bound is waiting for the client (or the session
    /// is over): what a socket write's backpressure is to a WebSocket app. Callers bound the
    /// wait in time.
    pub async fn drained(&self) {
        loop {
            let taken = self.0.taken.notified();
            {
                let state = self.0.lock();
                let over = state.close.is_some() || state.peer_gone;
                if over || state.outbound_bytes <= self.0.max_outbound / 2 {
                    return;
                }
            }
            taken.await;
        }
    }

    /// Sends `message` once the client has taken enough of what came before
    /// ([`AppEnd::drained`]), waiting at most `limit`.
    pub async fn send_paced(&self, message: Bytes, limit: Duration) -> Result<(), Overflow> {
        if tokio::time::timeout(limit, self.drained()).await.is_err() {
            self.close(1008, "slow consumer: messages not collected");
            return Err(Overflow);
        }
        self.send(message)
    }

    /// Sends `messages` in one step once the client has taken enough of what came before
    /// ([`AppEnd::drained`]), waiting at most `limit`: one wake-up of the receiving side for
    /// all of them.
    pub async fn send_all_paced(
        &self,
        messages: impl IntoIterator<Item = Bytes>,
        limit: Duration,
    ) -> Result<(), Overflow> {
        if tokio::time::timeout(limit, self.drained()).await.is_err() {
            self.close(1008, "slow consumer: messages not collected");
            return Err(Overflow);
        }
        self.send_all(messages)
    }

    /// Ends the session with a close frame (the first close wins).
    pub fn close(&self, code: u16, reason: &str) {
        self.0.lock().set_close(code, reason);
        self.0.to_peer.notify_one();
    }

    /// The client is gone.
    pub fn peer_gone(&self) -> bool {
        self.0.lock().peer_gone
    }
}

impl Drop for AppEnd {
    fn drop(&mut self) {
        // However the app ended, the client hears that the session is over.
        self.close(1000, "Normal closure");
    }
}

/// What a receiving request takes from a session.
#[derive(Debug, Default)]
pub struct Taken {
    /// Messages, in order.
    pub messages: Vec<Bytes>,
    /// The close frame, once the session is over and its messages are all taken.
    pub close: Option<(u16, String)>,
}

/// The client's end: where its sends go, and what its receiving requests take.
#[derive(Clone)]
pub struct PeerEnd(Arc<Shared>);

/// The client sent more than the app has taken yet.
#[derive(Debug)]
pub struct Busy;

impl PeerEnd {
    /// Hands the client's messages to the app, all or none.
    pub fn push(&self, messages: Vec<Bytes>) -> Result<(), Busy> {
        let mut state = self.0.lock();
        let bytes: usize = messages.iter().map(Bytes::len).sum();
        if state.inbound_bytes + bytes > self.0.max_inbound {
            return Err(Busy);
        }
        if state.peer_gone || state.close.is_some() {
            // The app is gone or going: what comes now is dropped, as on a closed socket.
            return Ok(());
        }
        state.inbound_bytes += bytes;
        state.inbound.extend(messages);
        drop(state);
        self.0.to_app.notify_one();
        Ok(())
    }

    /// Takes what is waiting, at most about `max_bytes` of messages (at least one): the frame
    /// they make, quoted, is what one write holds for a client that may have stopped reading.
    /// The close comes once every message is taken. `None` when there is nothing yet.
    pub fn take(&self, max_bytes: usize) -> Option<Taken> {
        let mut state = self.0.lock();
        if state.outbound.is_empty() && state.close.is_none() {
            return None;
        }
        let mut messages = Vec::new();
        let mut bytes = 0;
        while let Some((message, _)) = state.outbound.front() {
            if !messages.is_empty() && bytes + message.len() > max_bytes {
                break;
            }
            bytes += message.len();
            if let Some((message, _charge)) = state.outbound.pop_front() {
                messages.push(message);
            }
        }
        state.outbound_bytes -= bytes;
        let close = if state.outbound.is_empty() {
            state.close.clone()
        } else {
            None
        };
        drop(state);
        self.0.taken.notify_waiters();
        Some(Taken { messages, close })
    }

    /// When the session was closed, if it was.
    pub fn closed_at(&self) -> Option<Instant> {
        self.0.lock().closed_at
    }

    /// Waits until [`PeerEnd::take`] would find something.
    pub async fn ready(&self) {
        loop {
            let notified = self.0.to_peer.notified();
            {
                let state = self.0.lock();
                if !state.outbound.is_empty() || state.close.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The client is gone: the app's next `recv` says so.
    pub fn leave(&self) {
        self.0.lock().peer_gone = true;
        self.0.to_app.notify_one();
        self.0.taken.notify_waiters();
    }
}

/// The log span of an app that outlives the request that opened it (SockJS, Socket.IO): its
/// lines carry the connection that opened it (`conn`, `peer`), the hub session and user, never
/// the transport's session id, which is as good as a credential.
pub fn app_span(transport: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "app",
        transport,
        conn = tracing::field::Empty,
        peer = tracing::field::Empty,
        protocol = tracing::field::Empty,
        session = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    if let Some((conn, peer)) = crate::logs::current_conn() {
        span.record("conn", conn);
        span.record("peer", tracing::field::display(peer));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_are_bounded_and_what_waits_is_charged() {
        let budget = MemoryBudget::new(1 << 20);
        let (app, peer) = pipe(1024, 1024, budget.clone());
        for _ in 0..5 {
            app.send(Bytes::from(vec![b'x'; 100])).unwrap();
        }
        assert_eq!(budget.used(), 500);
        app.close(1000, "bye");
        let first = peer.take(250).unwrap();
        assert_eq!(first.messages.len(), 2);
        assert!(first.close.is_none(), "the close waits for the rest");
        assert_eq!(budget.used(), 300);
        let rest = peer.take(1).unwrap();
        assert_eq!(rest.messages.len(), 1, "at least one");
        let last = peer.take(1000).unwrap();
        assert_eq!(last.messages.len(), 2);
        assert_eq!(last.close, Some((1000, "bye".to_owned())));
        assert_eq!(budget.used(), 0);
        assert!(peer.closed_at().is_some());
    }

    #[test]
    fn past_its_bound_the_session_closes_as_a_slow_consumer() {
        let (app, peer) = pipe(16, 150, MemoryBudget::unlimited());
        app.send(Bytes::from(vec![b'x'; 100])).unwrap();
        assert!(app.send(Bytes::from(vec![b'x'; 100])).is_err());
        let taken = peer.take(1000).unwrap();
        assert_eq!(taken.close.map(|c| c.0), Some(1008));
        assert!(
            peer.push(vec![Bytes::from(vec![b'y'; 17])]).is_err(),
            "inbound bound"
        );
    }
}
