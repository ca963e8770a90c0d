//! The fuzz targets' way into the server (`fuzz/`; not an API, hidden from the docs): one server
//! built in-process over a temporary SQLite store, whose HTTP service answers one request's raw
//! bytes over an in-memory pipe, and raw JSON clients driven without sockets.
//!
//! The harness is built once per process and keeps its state between inputs (accounts created,
//! rooms, messages, login throttles), as a long-running server does. Inputs reach signed-in
//! paths through placeholders the harness replaces with real credentials ([`Harness::ALICE`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use parley_protocol::{Connection, Event, Limits, Message};
use parley_stomp::session::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::auth::{password, Auth, Authenticated, Keys};
use crate::config::ServeArgs;
use crate::endpoints::raw::RawClient;
use crate::health::Health;
use crate::http::{HttpSettings, Parts, Server};
use crate::hub::{ChatSettings, Hub, Origin, Protocol, Transport};
use crate::store::{Role, Room, SqliteStore, Store, StoredMessage};
use crate::ws::{Endpoint, Outbound};

/// Where every fuzzed request and client comes from (TEST-NET-1).
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000);
/// The password of the harness's accounts.
const PASSWORD: &str = "correct horse battery";
/// Request head and body deadlines: short, since a missing rest of a request never comes.
const DEADLINE: Duration = Duration::from_millis(50);
/// How long a raw client waits for what the hub still has for it once its input is handled.
const SETTLE: Duration = Duration::from_millis(2);
/// Most hub hand-overs collected per raw client (each one waits up to [`SETTLE`]).
const MAX_OUTBOUND: usize = 64;

/// A server in-process: what its listeners would serve, without the listeners.
pub struct Harness {
    http: HttpSettings,
    hub: Arc<Hub>,
    stomp: Arc<crate::endpoints::stomp::Stomp>,
    chat: Arc<ChatSettings>,
    auth: Arc<Auth>,
    /// `(placeholder, credential)`, replaced in every input.
    credentials: Vec<(&'static [u8], String)>,
    dir: PathBuf,
}

/// What the server wrote back on one HTTP connection.
#[derive(Debug)]
pub struct HttpExchange {
    /// The request bytes as sent, placeholders replaced.
    pub request: Vec<u8>,
    /// Every byte the server wrote.
    pub written: Vec<u8>,
    /// A request was upgraded to a WebSocket (not run: the harness stops at the 101).
    pub upgraded: bool,
}

/// Who a fuzzed raw JSON client is signed in as.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    /// `alice`: owner of the private room `secret` and of `lobby`.
    Alice,
    /// `bob`: a member of `secret`.
    Bob,
    /// A guest named by the server.
    Guest,
}

/// What a raw JSON client was sent.
#[derive(Debug, Default)]
pub struct RawOutcome {
    /// Every frame, as it would go on the wire: answers first, then what the hub handed over.
    pub written: Vec<u8>,
    /// The hub closed the session with this code and reason.
    pub closed: Option<(u16, String)>,
}

impl Harness {
    /// Replaced by a bearer token of `alice` in every input.
    pub const ALICE: &'static str = "$ALICE";
    /// Replaced by a bearer token of `bob`.
    pub const BOB: &'static str = "$BOB";
    /// Replaced by a refresh token of `alice` (rotated once used, like any).
    pub const REFRESH: &'static str = "$REFRESH";

    /// One harness per process and the current-thread runtime it runs on, built on first use:
    /// what every fuzz target drives, one input after another.
    pub fn shared() -> &'static (tokio::runtime::Runtime, Harness) {
        static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, Harness)> =
            std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let harness = runtime.block_on(Harness::new()).expect("fuzz harness");
            (runtime, harness)
        })
    }

    /// A server over a fresh SQLite store in a temporary directory, with accounts `alice` and
    /// `bob`, the public room `lobby` (two messages) and the private room `secret`. Must run on
    /// a tokio runtime (current-thread is enough).
    pub async fn new() -> anyhow::Result<Self> {
        static HARNESSES: AtomicUsize = AtomicUsize::new(0);
        let n = HARNESSES.fetch_add(1, Ordering::Relaxed);
        let name = format!("parley-fuzz-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        remove_stale(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let args = ServeArgs {
            data: Some(dir.clone()),
            allow_guests: Some(true),
            echo: Some(true),
            body_timeout: Some(DEADLINE),
            handshake_timeout: Some(DEADLINE),
            ..ServeArgs::default()
        };
        let settings = args.resolve()?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir)?);
        seed(&*store)?;
        let keys = Keys::load(&settings.auth.keys)?;
        let day = Duration::from_secs(24 * 3600);
        let (alice, bob) = (keys.mint("alice", day)?, keys.mint("bob", day)?);
        let parts = app::parts(
            &settings,
            store,
            None,
            Keys::load(&settings.auth.keys)?,
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await?;
        let refresh = (parts.auth.login("alice", PASSWORD, PEER.ip()).await)
            .map_err(|e| anyhow::anyhow!("logging alice in: {e}"))?
            .refresh_token;
        Ok(Self {
            http: app::http_settings(&settings),
            hub: parts.hub,
            stomp: parts.stomp,
            chat: parts.chat,
            auth: parts.auth,
            credentials: vec![
                (Self::ALICE.as_bytes(), alice),
                (Self::BOB.as_bytes(), bob),
                (Self::REFRESH.as_bytes(), refresh),
            ],
            dir,
        })
    }

    /// `input` with every placeholder replaced by its credential.
    pub fn substitute(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input;
        'outer: while let Some((&first, tail)) = rest.split_first() {
            if first == b'$' {
                for (placeholder, credential) in &self.credentials {
                    if let Some(after) = rest.strip_prefix(*placeholder) {
                        out.extend_from_slice(credential.as_bytes());
                        rest = after;
                        continue 'outer;
                    }
                }
            }
            out.push(first);
            rest = tail;
        }
        out
    }

    /// One HTTP connection that sends `request` (placeholders replaced) and nothing more. With
    /// a complete request head the connection then shuts down gracefully, so the request in
    /// flight is still answered (a half-closed socket would make hyper drop it); without one it
    /// sees the end of its input at once.
    pub async fn http(&self, request: &[u8]) -> HttpExchange {
        let request = self.substitute(request);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let complete = matches!(
            httparse::Request::new(&mut headers).parse(&request),
            Ok(httparse::Status::Complete(_))
        );
        let shutdown = CancellationToken::new();
        let parts = Parts {
            hub: self.hub.clone(),
            // Its STOMP connections, too, close when this exchange's server shuts down.
            stomp: self.stomp.with_shutdown(shutdown.clone()),
            chat: self.chat.clone(),
            auth: self.auth.clone(),
            health: Health::new(false),
            draining: CancellationToken::new(),
            shutdown: shutdown.clone(),
            tls: None,
        };
        let server = Server::new(self.http.clone(), parts);
        let pipe = Pipe::new(request.clone(), !complete);
        let (drained, written) = (pipe.drained.clone(), pipe.written.clone());
        let serve = server.serve_http_only(pipe, PEER);
        tokio::pin!(serve);
        let upgraded = tokio::select! {
            upgraded = serve.as_mut() => upgraded,
            () = drained.notified() => {
                shutdown.cancel();
                serve.await
            }
        };
        let written = std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()));
        HttpExchange {
            request,
            written,
            upgraded,
        }
    }

    /// One raw JSON client signed in as `who`: each read's messages (placeholders replaced;
    /// text when UTF-8, else binary) are handled as the WebSocket driver hands them over, then
    /// whatever the hub has for the client is collected until it falls quiet.
    pub async fn raw(&self, who: Who, reads: &[Vec<&[u8]>]) -> RawOutcome {
        let who = match who {
            Who::Alice => account("alice"),
            Who::Bob => account("bob"),
            Who::Guest => match self.auth.guest(None).await {
                Ok(guest) => guest,
                Err(why) => panic!("guests are allowed in the harness: {why}"),
            },
        };
        let origin = Origin::new(Protocol::Raw, Transport::WebSocket, PEER.ip());
        let (auth, chat) = (self.auth.clone(), self.chat.clone());
        let mut client = RawClient::open(&self.hub, auth, chat, who, origin);
        let mut conn = Connection::new(Limits::default(), None);
        let mut out = RawOutcome::default();
        for read in reads {
            for message in read {
                let bytes = Bytes::from(self.substitute(message));
                let message = match std::str::from_utf8(&bytes) {
                    Ok(_) => Message::Text(bytes),
                    Err(_) => Message::Binary(bytes),
                };
                client.on_event(&mut conn, Event::Message(message));
            }
            client.after_events(&mut conn).await;
            while let Some(bytes) = conn.poll_transmit() {
                out.written.extend_from_slice(&bytes);
            }
        }
        // Acknowledgements wait for storage; history and catch-up answers come from it. Once the
        // connection is closing, the driver stops writing what the hub hands over.
        self.hub.durable().await;
        let more = if conn.is_closing() { 0 } else { MAX_OUTBOUND };
        for _ in 0..more {
            match tokio::time::timeout(SETTLE, client.outbound()).await {
                Ok(Outbound::Frames(frames)) => {
                    frames.iter().for_each(|f| out.written.extend_from_slice(f))
                }
                Ok(Outbound::Ready(ready)) => {
                    client.write_ready(ready, |frame| out.written.extend_from_slice(frame))
                }
                Ok(Outbound::Close(code, reason)) => {
                    out.closed = Some((code.as_u16(), reason));
                    break;
                }
                Err(_) => break,
            }
        }
        client.finish();
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A signed-in account whose credential does not run out during the run.
fn account(name: &str) -> Authenticated {
    Authenticated {
        identity: Identity::new(name, false),
        expires_ms: None,
        revoked: None,
    }
}

/// The accounts, rooms and messages every run starts from.
fn seed(store: &dyn Store) -> anyhow::Result<()> {
    let hash = password::hash_now(PASSWORD).map_err(anyhow::Error::msg)?;
    for name in ["alice", "bob"] {
        store.create_user(name, &hash)?;
    }
    for (name, private) in [("lobby", false), ("secret", true)] {
        let owner = Some("alice".to_owned());
        store.create_room(&Room {
            name: name.to_owned(),
            private,
            owner,
        })?;
    }
    store.set_member("secret", "bob", Role::Member)?;
    let message = |id: u64, body: &str| StoredMessage {
        room: "lobby".to_owned(),
        id,
        from: "alice".to_owned(),
        ts: 1_700_000_000_000 + id,
        body: body.to_owned(),
        ..StoredMessage::default()
    };
    store
        .append(&[message(1, "hello"), message(2, "world")])
        .context("seeding lobby")
}

/// Removes the directories earlier harnesses left (a fuzzing process is usually killed, so its
/// `Drop` never runs): those whose process is gone.
fn remove_stale(mine: &Path) {
    let Some(parent) = mine.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let rest = (name.to_str()).and_then(|n| n.strip_prefix("parley-fuzz-"));
        let Some((pid, _)) = rest.and_then(|r| r.split_once('-')) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The client's side of a connection, in memory: the request bytes to read, then either the end
/// of the input (`eof`) or nothing more ever (the harness shuts the server down instead, which
/// `drained` tells it to); every byte written is kept.
struct Pipe {
    input: Bytes,
    eof: bool,
    drained: Arc<Notify>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl Pipe {
    fn new(input: Vec<u8>, eof: bool) -> Self {
        Self {
            input: Bytes::from(input),
            eof,
            drained: Arc::new(Notify::new()),
            written: Arc::default(),
        }
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.input.is_empty() {
            self.drained.notify_one();
            // Nothing wakes this read again: the harness's shutdown (or a deadline) ends it.
            return if self.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = buf.remaining().min(self.input.len());
        let chunk = self.input.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_request_is_answered_and_placeholders_sign_it_in() {
        runtime().block_on(async {
            let harness = Harness::new().await.expect("harness");
            let ok = harness
                .http(b"GET /api/me HTTP/1.1\r\nhost: x\r\nauthorization: Bearer $ALICE\r\n\r\n")
                .await;
            let text = String::from_utf8_lossy(&ok.written);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.contains(r#""username":"alice""#), "{text}");
            // A body that never arrives ends with the body deadline, not a hang.
            let slow = harness
                .http(b"POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\n\r\n{")
                .await;
            let text = String::from_utf8_lossy(&slow.written);
            assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
            let cut = harness.http(b"GET /api/me HTTP/1.1\r\nhost").await;
            assert!(cut.written.is_empty());
        });
    }

    /// Found by the `http_api` campaign's review: any body hyper could not read was answered
    /// "413 request body too large".
    #[test]
    fn a_broken_request_body_is_a_400_and_only_an_oversized_one_a_413() {
        runtime().block_on(async {
            let harness = Harness::new().await.expect("harness");
            let broken = harness
                .http(b"POST /api/login HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
                .await;
            let text = String::from_utf8_lossy(&broken.written);
            assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
            assert!(text.contains("invalid request body"), "{text}");
            assert!(text.contains("connection: close"), "{text}");
            let mut large = b"POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-length: 70000\r\n\r\n".to_vec();
            large.resize(large.len() + 70_000, b' ');
            let large = harness.http(&large).await;
            let text = String::from_utf8_lossy(&large.written);
            assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        });
    }

    #[test]
    fn a_raw_client_gets_its_answers_and_acknowledgements() {
        runtime().block_on(async {
            let harness = Harness::new().await.expect("harness");
            let join = br#"{"type":"join","room":"lobby","since":0}"#;
            let send = br#"{"type":"send","room":"lobby","body":"hi","ref":"r1"}"#;
            let reads = vec![vec![&join[..]], vec![&send[..], b"\xff".as_slice()]];
            let out = harness.raw(Who::Bob, &reads).await;
            let text = String::from_utf8_lossy(&out.written);
            for expected in [
                r#""type":"joined""#,
                r#""ref":"r1""#,
                r#""code":"bad_json""#,
            ] {
                assert!(text.contains(expected), "{expected} missing from {text}");
            }
        });
    }
}
