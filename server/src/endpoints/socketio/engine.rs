//! Engine.IO 4 sessions: the table of sessions by `sid`, long-polling requests (one `GET`
//! waiting at a time, `POST`s of packets), and which transport carries a session — polling
//! until a WebSocket probes (`2probe`/`3probe`) and upgrades (`5`), the WebSocket from then on.
//!
//! A session's app task (see `server.rs`) keeps it alive by pinging; when the task ends, for
//! whatever reason, the session leaves the table, so a request after that learns the session
//! is unknown, as the reference server answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::packet::{self, EnginePacket};
use crate::endpoints::pipe::{Busy, PeerEnd};

/// How long a poll made during an upgrade's probe is held before it ends with `noop`.
const PROBE_HOLD: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a request on a session is refused (the reference server's error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// `0`: no such transport.
    TransportUnknown,
    /// `1`: no such session.
    SessionIdUnknown,
    /// `2`: a handshake must be a `GET`.
    BadHandshakeMethod,
    /// `3`: a request the session's state does not allow.
    BadRequest,
    /// `4`: the Origin is not allowed.
    Forbidden,
    /// `5`: not `EIO=4`.
    UnsupportedProtocolVersion,
}

impl EngineError {
    /// The code and message the reference server answers.
    pub fn code_and_message(self) -> (u8, &'static str) {
        match self {
            Self::TransportUnknown => (0, "Transport unknown"),
            Self::SessionIdUnknown => (1, "Session ID unknown"),
            Self::BadHandshakeMethod => (2, "Bad handshake method"),
            Self::BadRequest => (3, "Bad request"),
            Self::Forbidden => (4, "Forbidden"),
            Self::UnsupportedProtocolVersion => (5, "Unsupported protocol version"),
        }
    }
}

/// Which transport carries a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    /// Long-polling; `probing` once a WebSocket answered `3probe`.
    Polling { probing: bool },
    /// A WebSocket (from the start, or since the upgrade).
    WebSocket,
}

/// One session.
pub struct EngineSession {
    sid: String,
    pub(super) peer: PeerEnd,
    client: IpAddr,
    /// Where the session counts against the per-address cap.
    counted_as: IpAddr,
    state: Mutex<State>,
    /// Wakes a waiting `GET`: an upgrade began, or the client closed the session.
    poll_wake: Notify,
}

struct State {
    carrier: Carrier,
    /// A `GET` is waiting.
    polling: bool,
    /// The client sent `close`: a waiting `GET` ends with `noop`.
    closed_by_client: bool,
}

impl EngineSession {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The client's address when the session began (its requests must come from it).
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Where the session counts against the per-address cap.
    pub(super) fn counted_as(&self) -> IpAddr {
        self.counted_as
    }

    /// Ends the session from the client's side: its app hears the client left.
    pub fn fail(&self) {
        self.peer.leave();
        self.poll_wake.notify_waiters();
    }

    /// A long-polling `GET`: waits for packets (the app pings at least every ping interval)
    /// and answers at most about `max_bytes` of them joined, or `noop` during an upgrade. A
    /// second `GET` while one waits ends the session, as the reference server does.
    pub async fn poll(&self, max_bytes: usize) -> Result<Bytes, EngineError> {
        {
            let mut state = self.state();
            if state.carrier == Carrier::WebSocket {
                return Err(EngineError::BadRequest);
            }
            if state.polling {
                drop(state);
                self.fail();
                return Err(EngineError::BadRequest);
            }
            state.polling = true;
        }
        let _waiting = PollGuard(self);
        // A poll that began during a probe waits a little for the upgrade (as the reference
        // server holds it) rather than bouncing back at once; one waiting when it began ends
        // at once with `noop`.
        let probing_from_start = matches!(self.state().carrier, Carrier::Polling { probing: true });
        let mut held_once = false;
        loop {
            let woken = self.poll_wake.notified();
            {
                let state = self.state();
                // Closed by the client, or upgraded meanwhile: what waits is the WebSocket's.
                if state.closed_by_client || state.carrier == Carrier::WebSocket {
                    return Ok(Bytes::from_static(packet::NOOP));
                }
                if let Some(taken) = self.peer.take(max_bytes) {
                    let mut packets = taken.messages;
                    if taken.close.is_some() {
                        packets.push(Bytes::from_static(packet::CLOSE));
                    }
                    return Ok(packet::join_payload(&packets));
                }
                let probing = matches!(state.carrier, Carrier::Polling { probing: true });
                if probing && (!probing_from_start || held_once) {
                    return Ok(Bytes::from_static(packet::NOOP));
                }
            }
            tokio::select! {
                () = self.peer.ready() => {}
                () = woken => {}
                () = tokio::time::sleep(PROBE_HOLD), if probing_from_start => held_once = true,
            }
        }
    }

    /// A long-polling `POST` of packets (its body, already bounded in size). `close` ends the
    /// session; a malformed body too (`Err`). `Busy`: the app has not taken what came before.
    pub fn post(&self, body: &Bytes) -> Result<Result<(), Busy>, EngineError> {
        if self.state().carrier == Carrier::WebSocket {
            return Err(EngineError::BadRequest);
        }
        let Ok(packets) = packet::split_payload(body) else {
            self.fail();
            return Err(EngineError::BadRequest);
        };
        Ok(self.deliver(packets))
    }

    /// Hands client packets to the app, but for `close`, which ends the session.
    pub(super) fn deliver(&self, mut packets: Vec<Bytes>) -> Result<(), Busy> {
        let close = packets
            .iter()
            .position(|p| matches!(packet::engine_packet(p), Ok(EnginePacket::Close)));
        if let Some(at) = close {
            packets.truncate(at);
        }
        let pushed = self.peer.push(packets);
        if close.is_some() {
            self.state().closed_by_client = true;
            self.fail();
        }
        pushed
    }

    /// A WebSocket wants to take the session over: allowed while polling and not already
    /// probing.
    pub fn may_upgrade(&self) -> bool {
        self.state().carrier == Carrier::Polling { probing: false }
    }

    /// The probing WebSocket answered `3probe`: a waiting `GET` ends with `noop`.
    pub(super) fn probing(&self) {
        let mut state = self.state();
        if state.carrier == (Carrier::Polling { probing: false }) {
            state.carrier = Carrier::Polling { probing: true };
        }
        drop(state);
        self.poll_wake.notify_waiters();
    }

    /// The WebSocket sent `5`: it carries the session from now on.
    pub(super) fn upgraded(&self) {
        self.state().carrier = Carrier::WebSocket;
        self.poll_wake.notify_waiters();
    }

    /// A probing WebSocket went away before upgrading: polling goes on.
    pub(super) fn probe_failed(&self) {
        let mut state = self.state();
        if state.carrier == (Carrier::Polling { probing: true }) {
            state.carrier = Carrier::Polling { probing: false };
        }
    }
}

/// Marks the session's `GET` as over, however its request ends (the client may go away).
struct PollGuard<'a>(&'a EngineSession);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.state().polling = false;
    }
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum Refused {
    /// The server holds as many sessions as it may.
    Full,
    /// The client's address holds as many sessions as it may.
    TooManyFromAddress,
}

/// Every session, and the caps on them.
#[derive(Default)]
pub(super) struct Table {
    by_sid: HashMap<String, Arc<EngineSession>>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    /// Adds a session for `client` (counted as `counted_as`) with a fresh sid, which begins
    /// with `route` (see [`sid_for`]).
    pub(super) fn add(
        &mut self,
        peer: PeerEnd,
        opening: Opening,
        route: Option<&str>,
        caps: (usize, usize),
    ) -> Result<Arc<EngineSession>, Refused> {
        let Opening {
            client,
            counted_as,
            websocket,
        } = opening;
        let (max, max_per_ip) = caps;
        if self.by_sid.len() >= max {
            return Err(Refused::Full);
        }
        let count = self.per_ip.entry(counted_as).or_default();
        if max_per_ip > 0 && *count >= max_per_ip {
            return Err(Refused::TooManyFromAddress);
        }
        *count += 1;
        let carrier = if websocket {
            Carrier::WebSocket
        } else {
            Carrier::Polling { probing: false }
        };
        let session = Arc::new(EngineSession {
            sid: sid_for(route),
            peer,
            client,
            counted_as,
            state: Mutex::new(State {
                carrier,
                polling: false,
                closed_by_client: false,
            }),
            poll_wake: Notify::new(),
        });
        self.by_sid.insert(session.sid.clone(), session.clone());
        Ok(session)
    }

    /// The session `sid`.
    pub(super) fn get(&self, sid: &str) -> Option<Arc<EngineSession>> {
        self.by_sid.get(sid).cloned()
    }

    /// Removes session `sid`, if it is there.
    pub(super) fn remove(&mut self, sid: &str) {
        let Some(session) = self.by_sid.remove(sid) else {
            return;
        };
        if let Some(count) = self.per_ip.get_mut(&session.counted_as()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&session.counted_as());
            }
        }
    }

    /// Sessions open.
    pub(super) fn len(&self) -> usize {
        self.by_sid.len()
    }
}

/// Who opens a session, and on which transport.
#[derive(Clone, Copy, Debug)]
pub struct Opening {
    /// The client's address.
    pub client: IpAddr,
    /// Where it counts against the per-address cap (an IPv6 client's /64).
    pub counted_as: IpAddr,
    /// On a WebSocket (else long-polling).
    pub websocket: bool,
}

/// Longest routing key kept in a sid.
const MAX_ROUTE: usize = 32;

/// A fresh sid: `<route>.<random>` when the handshake carried a routing key (its `t`, which
/// every Engine.IO client adds to polling requests), else `<random>`. Balancers hash the
/// handshake's `t` and the part of a sid before its `.` alike (deploy/nginx.conf,
/// deploy/haproxy.cfg), so every request of a session reaches the node that opened it; only
/// the random part, 120 bits, keeps sessions apart.
pub fn sid_for(route: Option<&str>) -> String {
    let route = route.filter(|r| {
        !r.is_empty()
            && r.len() <= MAX_ROUTE
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    });
    match route {
        Some(route) => format!("{route}.{}", new_id()),
        None => new_id(),
    }
}

/// A fresh random id: 20 characters of base64url (120 bits).
pub fn new_id() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut raw = [0u8; 15];
    getrandom::fill(&mut raw).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(raw)
}
