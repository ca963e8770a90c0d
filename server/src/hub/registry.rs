//! Who is connected, for operators: each session's protocol, transport, client address, start
//! and user (kept beside its outbox, so a session costs a few bytes more and no second map), and
//! the recent slow-consumer evictions. Filled by endpoints through [`Origin`] at
//! `Hub::open_session`; read by the admin API.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use parley_stomp::broker::SessionId;

/// Evictions of slow consumers remembered for the admin API.
pub const RECENT_EVICTIONS: usize = 100;

pub use crate::metrics::{Protocol, Transport};

/// Where a session comes from, as its endpoint knows when it opens it.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// Its protocol.
    pub protocol: Protocol,
    /// Its transport.
    pub transport: Transport,
    /// The client's address (behind trusted proxies, the one they named).
    pub address: IpAddr,
}

impl Origin {
    /// A session of `protocol` over `transport` from `address`.
    pub fn new(protocol: Protocol, transport: Transport, address: IpAddr) -> Self {
        Self {
            protocol,
            transport,
            address,
        }
    }
}

/// What the hub keeps of a session for the admin API, beside its outbox.
#[derive(Debug)]
pub(super) struct SessionInfo {
    pub(super) origin: Origin,
    /// When it opened, ms since the epoch.
    pub(super) since_ms: u64,
    /// Who it is once authenticated.
    pub(super) user: Option<Arc<str>>,
    /// Whether that is a guest (apart from `user`: it fits beside `origin`, and each session's
    /// entry in the hub's table is 8 bytes smaller).
    pub(super) guest: bool,
}

/// One session as operators see it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Its id on its node.
    pub session: SessionId,
    /// Who, once known.
    pub user: Option<Arc<str>>,
    /// A guest.
    pub guest: bool,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its transport.
    pub transport: Transport,
    /// The client's address.
    pub address: IpAddr,
    /// When it opened, ms since the epoch.
    pub since_ms: u64,
    /// Deliveries and notices waiting in its outbox.
    pub outbox: usize,
    /// Their bytes.
    pub outbox_bytes: usize,
}

/// A slow consumer the hub closed.
#[derive(Clone, Debug)]
pub struct Eviction {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The session.
    pub session: SessionId,
    /// Who it was, if known.
    pub user: Option<Arc<str>>,
    /// Its protocol.
    pub protocol: Protocol,
    /// The client's address.
    pub address: IpAddr,
    /// Why.
    pub reason: String,
}

/// The last [`RECENT_EVICTIONS`] evictions, newest last. Its own lock: written rarely (an
/// eviction), from under the hub's lock, never the other way round.
#[derive(Default)]
pub(super) struct RecentEvictions(Mutex<VecDeque<Eviction>>);

impl RecentEvictions {
    pub(super) fn record(&self, eviction: Eviction) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_EVICTIONS {
            recent.pop_front();
        }
        recent.push_back(eviction);
    }

    /// Newest first.
    pub(super) fn list(&self) -> Vec<Eviction> {
        let recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_bounded_newest_first() {
        let recent = RecentEvictions::default();
        for session in 0..(RECENT_EVICTIONS as u64 + 5) {
            recent.record(Eviction {
                at_ms: session,
                session,
                user: None,
                protocol: Protocol::Raw,
                address: IpAddr::from([127, 0, 0, 1]),
                reason: String::new(),
            });
        }
        let list = recent.list();
        assert_eq!(list.len(), RECENT_EVICTIONS);
        assert_eq!(list[0].session, RECENT_EVICTIONS as u64 + 4);
        assert_eq!(list.last().map(|e| e.session), Some(5));
    }
}
