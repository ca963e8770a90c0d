//! The end-to-end tests' one SockJS client: the frame format and session ids here, the HTTP
//! requests in [`http`], sessions over every transport in [`session`], STOMP on top in
//! [`stomp`]. Written here so the tests make every request themselves — which session id,
//! which address (a balancer, or one node directly), which source address — and see every
//! answer as it comes.

pub mod http;
pub mod session;
pub mod stomp;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use session::{Session, SockJsUrl, Transport};
pub use stomp::{Event, SockJsStomp};

/// A SockJS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockFrame {
    /// `o`: the session was opened by this request.
    Open,
    /// `h`.
    Heartbeat,
    /// `a[…]`: messages.
    Messages(Vec<String>),
    /// `c[code,"reason"]`.
    Close(u16, String),
}

/// Parses one frame as the server sent it (one line of an `xhr` or `xhr_streaming` answer, one
/// event's data, one WebSocket message); `None` when it is no frame.
pub fn parse_sock_frame(frame: &str) -> Option<SockFrame> {
    match frame.as_bytes().first()? {
        b'o' if frame == "o" => Some(SockFrame::Open),
        b'h' if frame == "h" => Some(SockFrame::Heartbeat),
        b'a' => serde_json::from_str(&frame[1..])
            .ok()
            .map(SockFrame::Messages),
        b'c' => {
            let (code, reason): (u16, String) = serde_json::from_str(&frame[1..]).ok()?;
            Some(SockFrame::Close(code, reason))
        }
        _ => None,
    }
}

/// A fresh session id (unique in this test process).
pub fn session_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("s{}-{n}", std::process::id())
}
