//! The two ends of a message session that outlives its HTTP requests (SockJS): the messages
//! the client sent, waiting for the app (STOMP, raw JSON, echo), and the messages the app
//! sent, waiting for the client's next receiving request. Both directions are bounded in
//! bytes; the app side never waits on the client.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// A session's state, shared by its app and its requests.
#[derive(Default)]
struct State {
    inbound: VecDeque<Bytes>,
    inbound_bytes: usize,
    outbound: Vec<Bytes>,
    outbound_bytes: usize,
    /// The app ended the session: the close frame's code and reason.
    close: Option<(u16, String)>,
    /// The client is gone (no receiving request for too long, or its WebSocket closed).
    peer_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the app: inbound messages, or the client gone.
    to_app: Notify,
    /// Wakes the receiving request: outbound messages, or the session closed.
    to_peer: Notify,
    max_inbound: usize,
    max_outbound: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves no half-made change worth refusing over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A new session's two ends; each direction holds at most its bound in bytes.
pub fn pipe(max_inbound: usize, max_outbound: usize) -> (AppEnd, PeerEnd) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        to_app: Notify::new(),
        to_peer: Notify::new(),
        max_inbound,
        max_outbound,
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
        let mut state = self.0.lock();
        if state.close.is_some() {
            return Err(Overflow);
        }
        if state.outbound_bytes + message.len() > self.0.max_outbound {
            state.close = Some((1008, "slow consumer: messages not collected".to_owned()));
            drop(state);
            self.0.to_peer.notify_one();
            self.0.to_app.notify_one();
            return Err(Overflow);
        }
        state.outbound_bytes += message.len();
        state.outbound.push(message);
        drop(state);
        self.0.to_peer.notify_one();
        Ok(())
    }

    /// Ends the session with a close frame (the first close wins).
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.0.lock();
        if state.close.is_none() {
            state.close = Some((code, reason.to_owned()));
        }
        drop(state);
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

    /// Takes what is waiting; `None` when there is nothing yet.
    pub fn take(&self) -> Option<Taken> {
        let mut state = self.0.lock();
        if state.outbound.is_empty() && state.close.is_none() {
            return None;
        }
        state.outbound_bytes = 0;
        let messages = std::mem::take(&mut state.outbound);
        Some(Taken {
            messages,
            close: state.close.clone(),
        })
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
    }
}
