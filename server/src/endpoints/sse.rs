//! The Server-Sent Events room feed (`GET /api/rooms/<room>/events`): one room's messages and
//! events as SSE events whose `id:` is their room id and whose `data:` is the raw protocol's
//! JSON, presence and typing as named events, comment heartbeats while idle. A feed is a chat
//! session joined to one room like any raw client: its resume (`Last-Event-ID`) is the raw
//! join's catch-up, and eviction, token expiry, the client going and shutdown end the stream.
//! The HTTP layer authenticates and checks the room; this module owns what flows. See
//! `docs/transports.md`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Response};
use parley_stomp::budget::Charge;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::raw::wire;
use super::streaming::{streamed, Feed, Streamed};
use crate::auth::Authenticated;
use crate::hub::{
    live_from_stored, ChatSession, ChatSettings, Delivered, Held, Hub, Next, Notice, Origin,
    Protocol, Queued, Refusal, Transport,
};
use crate::store::StoredMessage;

/// What a heartbeat is: an SSE comment, which clients ignore but proxies see as traffic.
const HEARTBEAT: &[u8] = b": hb\n\n";

/// The first bytes of a feed: the stream is open (and the room joined) once a client reads
/// them, and a proxy that waits for a body before passing the head on passes it.
const OPENED: &[u8] = b": ok\n\n";

/// How feeds run.
#[derive(Clone, Debug)]
pub struct FeedSettings {
    /// Longest quiet time before a heartbeat comment (`--sse-heartbeat`).
    pub heartbeat: Duration,
    /// Longest wait for the client to take a chunk (`--write-timeout`): past it the client is
    /// a slow reader and the stream ends.
    pub write_timeout: Duration,
}

/// What a feed's task owns.
struct RoomFeed {
    chat: ChatSession,
    /// The room, as its subscriptions name it.
    room: String,
    /// The reader's name: their own typing is not echoed to them (as on `/ws`).
    user: Arc<str>,
    /// A catch-up still to write, a chunk at a time, and what it holds against the memory
    /// budget until written.
    replay: std::vec::IntoIter<StoredMessage>,
    replay_charge: Option<Charge>,
}

/// Bytes of catch-up events one chunk carries: a stalled reader holds a few chunks, not the
/// whole catch-up encoded.
const REPLAY_CHUNK: usize = 64 * 1024;

/// Opens `who`'s feed of `room`: joins it, catching up after `since` (`None`: live from now),
/// and streams from a task of its own that ends with the client, the session or `shutdown`.
/// The caller has checked that `who` may read `room`; a refused join is returned as is.
#[allow(clippy::too_many_arguments)] // one caller, the feed's request
pub async fn open(
    hub: &Arc<Hub>,
    chat: Arc<ChatSettings>,
    settings: &FeedSettings,
    shutdown: CancellationToken,
    who: Authenticated,
    room: &str,
    since: Option<u64>,
    address: IpAddr,
) -> Result<Response<Streamed>, Refusal> {
    let room = ChatSession::room_name(room)?;
    let user = who.identity.name.clone();
    let origin = Origin::new(Protocol::Sse, Transport::Http, address);
    let mut session = ChatSession::open(hub, who.identity, chat, origin);
    session.session().set_expiry(who.expires_ms);
    session.session().set_revocation(who.revoked);
    // The raw join, catch-up included: live deliveries wait until the replay is written.
    session.join(&room, since).await?;
    let (feed, body) = streamed(settings.write_timeout);
    let state = RoomFeed {
        chat: session,
        room,
        user,
        replay: Vec::new().into_iter(),
        replay_charge: None,
    };
    tokio::spawn(run(state, feed, settings.heartbeat, shutdown));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    let text = |v| HeaderValue::from_static(v);
    headers.insert(header::CONTENT_TYPE, text("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, text("no-cache"));
    // nginx would otherwise buffer the stream and deliver it in lumps.
    headers.insert("x-accel-buffering", text("no"));
    Ok(resp)
}

/// Feeds the client until it goes, the hub ends the session (eviction, token expiry, lost
/// access), a write stalls past the write timeout, or the server shuts down.
async fn run(mut state: RoomFeed, feed: Feed, heartbeat: Duration, shutdown: CancellationToken) {
    let mut beat = interval_at(Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut chunk = Bytes::from_static(OPENED);
    loop {
        if feed.is_gone() {
            break;
        }
        if !chunk.is_empty() {
            let sent = tokio::select! {
                sent = feed.send(chunk) => sent,
                () = shutdown.cancelled() => break,
            };
            if sent.is_err() {
                break;
            }
            // Anything written shows the stream alive: the next heartbeat is a full period away.
            beat.reset();
        }
        if let Some(replayed) = state.replay_chunk() {
            chunk = replayed;
            continue;
        }
        chunk = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = feed.gone() => break,
            next = state.chat.session().next() => match state.events(next) {
                Some(events) => events,
                None => break,
            },
            _ = beat.tick() => Bytes::from_static(HEARTBEAT),
        };
    }
    // Out of the room and the broker now, not when the connection's task notices.
    state.chat.close();
}

impl RoomFeed {
    /// The SSE events for what the hub handed the session (possibly none); `None` ends the
    /// stream: the session is over, or the client could only go on with a gap.
    fn events(&mut self, next: Next) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match next {
            Next::Evicted(..) | Next::Expired => return None,
            Next::Delivery(first) => {
                let batch: Vec<Queued> = self.chat.session().batch(first).collect();
                for delivery in batch.iter().flat_map(Queued::iter) {
                    self.push_delivery(&mut out, delivery);
                }
            }
            Next::Held(Held::Replay {
                messages, charge, ..
            }) => {
                // A failed catch-up ends the stream: the client reconnects with the same
                // Last-Event-ID and tries again, rather than carrying on past a hole.
                self.replay = messages.ok()?.into_iter();
                self.replay_charge = charge;
            }
            // Lost access to the room (removed from a private one): the feed has nothing left.
            Next::Notice(Notice::Revoked { .. }) => return None,
            Next::Held(_) | Next::Notice(_) => {}
        }
        Some(out.freeze())
    }

    /// The next chunk of a catch-up, if one is being written; live deliveries wait behind it
    /// in the session, in order.
    fn replay_chunk(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        while out.len() < REPLAY_CHUNK {
            let Some(message) = self.replay.next() else {
                self.replay_charge = None;
                break;
            };
            let id = message.id.to_string();
            let frame = wire::message_frame(&live_from_stored(message), &self.user);
            push_event(&mut out, None, Some(&id), &wire::json_of(&frame));
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// One delivery as an event: the room's messages and events with their id, presence and
    /// typing named; what else reaches a chat session (its DMs, read marks) is not the feed's.
    fn push_delivery(&self, out: &mut BytesMut, delivery: Delivered<'_>) {
        let message = delivery.message;
        let Some((channel, room)) = delivery.subscription.split_once(':') else {
            return;
        };
        if room != self.room {
            return;
        }
        let (event, id) = match channel {
            "room" => (None, message.header("message-id")),
            "presence" => (Some("presence"), None),
            "typing" if message.header("sender") == Some(&*self.user) => return,
            "typing" => (Some("typing"), None),
            _ => return,
        };
        // The frame raw clients get, cached on the message: encoded once for both.
        let frame = message.other_wire(|m| wire::message_frame(m, &self.user));
        push_event(out, event, id, &wire::json_of(frame));
    }
}

/// Appends one SSE event. JSON as serde writes it holds no line break, so `data` is one line.
fn push_event(out: &mut BytesMut, event: Option<&str>, id: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::push_event;
    use bytes::BytesMut;

    #[test]
    fn events_are_framed_as_sse() {
        let mut out = BytesMut::new();
        push_event(&mut out, None, Some("7"), br#"{"type":"message"}"#);
        push_event(&mut out, Some("typing"), None, br#"{"type":"typing"}"#);
        assert_eq!(
            &out[..],
            b"id: 7\ndata: {\"type\":\"message\"}\n\nevent: typing\ndata: {\"type\":\"typing\"}\n\n"
        );
    }
}
