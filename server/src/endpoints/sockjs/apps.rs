//! What runs inside a SockJS session: STOMP, the raw JSON protocol (its WebSocket endpoint
//! driven over the session's messages), or one of the conformance services (echo, close).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::{CloseCode, Limits};
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Authenticated};
use crate::endpoints::hosted::{Hosted, Out};
use crate::endpoints::pipe::AppEnd;
use crate::endpoints::raw::RawClient;
use crate::endpoints::stomp::{Caller, Stomp};
use crate::hub::{ChatSettings, Hub, Origin, Protocol, Transport};
use crate::ws::Endpoint;

/// The app of a session.
pub enum App {
    /// STOMP; the opening request may already have authenticated the client.
    Stomp(Caller),
    /// The raw JSON protocol, for an authenticated user or a guest at this address.
    Raw(Authenticated, IpAddr),
    /// Conformance: every message goes back.
    Echo,
    /// Conformance: the session is closed at once with `c[3000,"Go away!"]`.
    Close,
}

/// What the apps need.
pub(super) struct Apps {
    pub(super) hub: Arc<Hub>,
    pub(super) stomp: Arc<Stomp>,
    pub(super) chat: Arc<ChatSettings>,
    pub(super) auth: Arc<Auth>,
    pub(super) max_message: usize,
    /// Longest wait for a client to collect what its app sent before.
    pub(super) write_timeout: Duration,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl Apps {
    /// The task running `app` on `end` until the session or the server ends.
    pub(super) fn run(&self, app: App, end: AppEnd, shutdown: CancellationToken) -> Task {
        match app {
            App::Stomp(caller) => {
                let stomp = self.stomp.clone();
                Box::pin(async move { stomp.serve_sockjs(end, caller).await })
            }
            App::Raw(who, address) => {
                let origin = Origin::new(Protocol::Raw, Transport::SockJs, address);
                let (auth, chat) = (self.auth.clone(), self.chat.clone());
                let client = RawClient::open(&self.hub, auth, chat, who, origin);
                let limits = Limits::new(self.max_message, self.max_message);
                Box::pin(drive(end, client, limits, self.write_timeout, shutdown))
            }
            App::Echo => Box::pin(echo(end, shutdown)),
            App::Close => Box::pin(async move { end.close(3000, "Go away!") }),
        }
    }
}

/// Sends back every message until the client leaves.
async fn echo(end: AppEnd, shutdown: CancellationToken) {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return end.close(1001, "server shutting down"),
            more = end.recv(&mut got) => if !more { return },
        }
        if end.send_all(got.drain(..)).is_err() {
            return;
        }
    }
}

/// Drives a WebSocket endpoint over a session: each client message is a text message to it;
/// what it writes comes back as messages (paced as socket writes are: a long catch-up waits
/// for the client to collect it), its close as the session's close frame.
async fn drive<E: Endpoint>(
    end: AppEnd,
    endpoint: E,
    limits: Limits,
    write_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut hosted = Hosted::new(endpoint, limits);
    let mut got = Vec::new();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => hosted.close(CloseCode::GOING_AWAY, "server shutting down"),
            more = end.recv(&mut got) => {
                if !more {
                    break;
                }
                hosted.feed(got.drain(..)).await;
            }
            sent = hosted.outbound() => hosted.apply(sent),
        }
        hosted.drain(&mut out);
        for item in out.drain(..) {
            let forwarded = match item {
                Out::Message(payload) => end.send_paced(payload, write_timeout).await.is_ok(),
                Out::Close(code, reason) => {
                    end.close(code, &reason);
                    false
                }
            };
            if !forwarded {
                return;
            }
        }
        if hosted.is_over() {
            break;
        }
    }
}
