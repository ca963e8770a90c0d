//! The `conn` part of log lines: who a connection is, kept in its task and added to each line
//! it logs, without a tracing span per connection.
//!
//! A tracing span costs an idle connection about 0.35 KiB (the registry's slot, the span's
//! extension table, its formatted fields): a sixth of the memory issue 19 allows it. Here the
//! connection keeps its few facts ([`ConnLog`], 48 B inline), its task marks them current
//! while it runs ([`Logged`]), and the event formatter ([`WithConn`]) writes them as the
//! outermost span, `conn`, exactly where tracing would have: `conn{id=… peer=…}:` in text,
//! the first entry of `spans` in JSON. An HTTP request's `req` is still a tracing span, inside
//! `conn`; so is a SockJS or Socket.IO app's `app`, whose task outlives the request that opened
//! it and which names that connection in fields of its own (`conn`, `peer`).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    /// The connection whose task this thread is running, if any (see [`Logged`]).
    static CURRENT: Cell<*const ConnLog> = const { Cell::new(std::ptr::null()) };
    /// How many HTTP requests' futures this thread is polling (see [`in_request`]).
    static IN_REQUEST: Cell<u32> = const { Cell::new(0) };
}

/// What a connection's log lines say about it: fixed at accept (`id`, `peer`), the rest once
/// known. 48 bytes: with more, the connection's tokio task (aligned to 128 bytes) would take
/// 384 bytes instead of 256.
pub struct ConnLog {
    id: u64,
    peer: SocketAddr,
    /// Boxed, and only once known: most of an idle connection's life it is, but it needs no
    /// room in the task.
    named: Cell<Option<Box<Named>>>,
}

// The size the task's arithmetic above depends on.
const _: () = assert!(std::mem::size_of::<ConnLog>() <= 48);

/// A connection's session, once it has one.
#[derive(Clone, Default)]
struct Named {
    protocol: Option<&'static str>,
    session: Option<NonZeroU64>,
    user: Option<Arc<str>>,
}

impl ConnLog {
    /// A connection accepted from `peer`; `id` is unique in the process.
    pub fn new(id: u64, peer: SocketAddr) -> Self {
        Self {
            id,
            peer,
            named: Cell::new(None),
        }
    }

    /// What is known of its session (a copy: the cell hands out no references).
    fn named(&self) -> Named {
        let named = self.named.take();
        let copy = named.as_deref().cloned().unwrap_or_default();
        self.named.set(named);
        copy
    }

    /// Changes what is known of its session.
    fn rename(&self, change: impl FnOnce(&mut Named)) {
        let mut named = self.named.take().unwrap_or_default();
        change(&mut named);
        self.named.set(Some(named));
    }

    /// `conn{id=1 peer=… protocol="stomp" session=2 user="alice"}`, as tracing writes a span.
    fn write_text(&self, out: &mut String) -> fmt::Result {
        write!(out, "conn{{id={} peer={}", self.id, self.peer)?;
        let named = self.named();
        if let Some(protocol) = named.protocol {
            write!(out, " protocol={protocol:?}")?;
        }
        if let Some(session) = named.session {
            write!(out, " session={session}")?;
        }
        if let Some(user) = named.user {
            write!(out, " user={:?}", &*user)?;
        }
        out.write_char('}')
    }

    /// `{"id":1,"peer":"…",…,"name":"conn"}`, as tracing's JSON format writes a span.
    fn to_json(&self) -> serde_json::Value {
        let mut span = serde_json::Map::new();
        span.insert("id".into(), self.id.into());
        span.insert("peer".into(), self.peer.to_string().into());
        let named = self.named();
        if let Some(protocol) = named.protocol {
            span.insert("protocol".into(), protocol.into());
        }
        if let Some(session) = named.session {
            span.insert("session".into(), session.get().into());
        }
        if let Some(user) = named.user {
            span.insert("user".into(), (*user).into());
        }
        span.insert("name".into(), "conn".into());
        span.into()
    }
}

/// Runs `f` with the connection this thread is serving, if it is serving one.
fn with_current<R>(f: impl FnOnce(&ConnLog) -> R) -> Option<R> {
    let current = CURRENT.with(Cell::get);
    // SAFETY: `CURRENT` is non-null only while a `Logged` polls or drops its future on this
    // thread (`Entered` resets it after), and that `Logged`, pinned, outlives the call.
    (!current.is_null()).then(|| f(unsafe { &*current }))
}

/// The connection being served on this thread, if any: its id and peer, for a span that
/// outlives it (a SockJS or Socket.IO app's).
pub fn current_conn() -> Option<(u64, SocketAddr)> {
    with_current(|conn| (conn.id, conn.peer))
}

/// The connection being served on this thread, moved out with what it has been named, for a
/// parked connection to take along (what stays behind keeps the id and peer).
pub fn detach_current() -> Option<ConnLog> {
    with_current(|conn| ConnLog {
        id: conn.id,
        peer: conn.peer,
        named: Cell::new(conn.named.take()),
    })
}

/// Runs `f` as connection `log`: how a connection being parked is polled, its log context
/// already detached from the task that is ending.
pub fn as_conn<R>(log: &ConnLog, f: impl FnOnce() -> R) -> R {
    let _entered = Entered::new(log);
    f()
}

/// Names a session in the log lines it is in from here on: an HTTP request's (or an app's)
/// span if one is current — a kept-alive connection carries many users' requests — otherwise
/// its connection's. Inside a request whose span the log level leaves out, nowhere.
pub fn name_session(protocol: &'static str, session: u64, user: Option<&Arc<str>>) {
    name(
        |span| {
            span.record("protocol", protocol);
            span.record("session", session);
            if let Some(user) = user {
                span.record("user", &**user);
            }
        },
        |named| {
            named.protocol = Some(protocol);
            named.session = NonZeroU64::new(session);
            if let Some(user) = user {
                named.user = Some(user.clone());
            }
        },
    );
}

/// Names the user in the log lines from here on, as [`name_session`] does.
pub fn name_user(user: &Arc<str>) {
    name(
        |span| {
            span.record("user", &**user);
        },
        |named| named.user = Some(user.clone()),
    );
}

/// Where names go, the one rule for both: the current span; inside a request whose span the
/// log level leaves out, nowhere; otherwise the connection's.
fn name(in_span: impl FnOnce(&tracing::Span), in_conn: impl FnOnce(&mut Named)) {
    let span = tracing::Span::current();
    if !span.is_none() {
        in_span(&span);
    } else if IN_REQUEST.get() == 0 {
        with_current(|conn| conn.rename(in_conn));
    }
}

/// Runs an HTTP request's future: who it names is its own (its `req` span's), never its
/// connection's, even when the log level leaves that span out.
pub async fn in_request<F: Future>(request: F) -> F::Output {
    let mut request = std::pin::pin!(request);
    std::future::poll_fn(|cx| {
        IN_REQUEST.set(IN_REQUEST.get() + 1);
        let _done = InRequest;
        request.as_mut().poll(cx)
    })
    .await
}

/// Leaves a request's poll (also when it panics).
struct InRequest;

impl Drop for InRequest {
    fn drop(&mut self) {
        IN_REQUEST.set(IN_REQUEST.get() - 1);
    }
}

/// Marks a connection current on this thread until dropped, restoring what was before.
struct Entered(*const ConnLog);

impl Entered {
    fn new(conn: &ConnLog) -> Self {
        Self(CURRENT.with(|current| current.replace(conn)))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// A connection's future with its [`ConnLog`], current while it is polled and dropped.
pub struct Logged<F> {
    log: ConnLog,
    // Dropped by hand in `Drop`, so that what its drop logs is still the connection's.
    inner: ManuallyDrop<F>,
}

impl<F> Logged<F> {
    /// `inner`, logging as `log`.
    pub fn new(log: ConnLog, inner: F) -> Self {
        Self {
            log,
            inner: ManuallyDrop::new(inner),
        }
    }
}

impl<F: Future> Future for Logged<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: never moved out of (it is dropped in place,
        // in `Drop`), and `Logged` has no `Unpin` impl of its own beyond `F`'s.
        let this = unsafe { self.get_unchecked_mut() };
        let _entered = Entered::new(&this.log);
        unsafe { Pin::new_unchecked(&mut *this.inner) }.poll(cx)
    }
}

impl<F> Drop for Logged<F> {
    fn drop(&mut self) {
        let _entered = Entered::new(&self.log);
        // SAFETY: dropped once, here, in place; `inner` is not used after.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

/// An event format that adds the current connection's `conn` span to what `E` writes:
/// tracing's text or JSON format.
pub struct WithConn<E> {
    inner: E,
    json: bool,
}

impl<E> WithConn<E> {
    /// Around tracing's text format.
    pub fn text(inner: E) -> Self {
        Self { inner, json: false }
    }

    /// Around tracing's JSON format with its span list.
    pub fn json(inner: E) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, E> FormatEvent<S, N> for WithConn<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        let spliced = with_current(|conn| -> fmt::Result {
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            if self.json {
                splice_json(&mut line, conn);
            } else {
                let level = event.metadata().level().as_str();
                let in_span = ctx.event_scope().is_some_and(|mut s| s.next().is_some());
                splice_text(&mut line, level, in_span, conn)?;
            }
            Ok(())
        });
        match spliced {
            Some(result) => {
                result?;
                writer.write_str(&line)
            }
            None => self.inner.format_event(ctx, writer, event),
        }
    }
}

/// Puts `conn{…}:` before the line's spans, right after its level (`… INFO req{…}: target:`).
fn splice_text(line: &mut String, level: &str, in_span: bool, conn: &ConnLog) -> fmt::Result {
    let Some(at) = line.find(level).and_then(|at| {
        let after = at + level.len();
        line[after..].find(' ').map(|space| after + space + 1)
    }) else {
        return Ok(());
    };
    let mut part = String::new();
    conn.write_text(&mut part)?;
    part.push(':');
    if !in_span {
        part.push(' ');
    }
    line.insert_str(at, &part);
    Ok(())
}

/// Puts `conn` first in the line's `spans` (adding the list if the line had none).
fn splice_json(line: &mut String, conn: &ConnLog) {
    let Ok(mut object) =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line.trim_end())
    else {
        return;
    };
    let spans = object
        .entry("spans")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let Some(spans) = spans.as_array_mut() {
        spans.insert(0, conn.to_json());
    }
    if let Ok(mut json) = serde_json::to_string(&object) {
        json.push('\n');
        *line = json;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnLog {
        let log = ConnLog::new(42, "203.0.113.7:51234".parse().unwrap());
        log.rename(|named| {
            named.protocol = Some("stomp");
            named.session = NonZeroU64::new(17);
            named.user = Some("alice".into());
        });
        log
    }

    #[test]
    fn text_puts_conn_before_the_spans_after_the_level() {
        let mut line = "2026-01-05T10:00:00.1Z  INFO req{user=\"bob\"}: parley: hi\n".to_owned();
        splice_text(&mut line, "INFO", true, &conn()).unwrap();
        assert_eq!(
            line,
            "2026-01-05T10:00:00.1Z  INFO conn{id=42 peer=203.0.113.7:51234 protocol=\"stomp\" \
             session=17 user=\"alice\"}:req{user=\"bob\"}: parley: hi\n"
        );
        let mut line = "2026-01-05T10:00:00.1Z DEBUG parley: hi\n".to_owned();
        splice_text(
            &mut line,
            "DEBUG",
            false,
            &ConnLog::new(1, "[::1]:80".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(
            line,
            "2026-01-05T10:00:00.1Z DEBUG conn{id=1 peer=[::1]:80}: parley: hi\n"
        );
    }

    #[test]
    fn json_puts_conn_first_in_the_span_list() {
        let mut line = r#"{"level":"INFO","message":"hi","spans":[{"name":"req"}]}"#.to_owned();
        splice_json(&mut line, &conn());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["spans"][0]["name"], "conn");
        assert_eq!(value["spans"][0]["id"], 42);
        assert_eq!(value["spans"][0]["session"], 17);
        assert_eq!(value["spans"][0]["user"], "alice");
        assert_eq!(value["spans"][1]["name"], "req");
        let keys: Vec<_> = value.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["level", "message", "spans"],
            "the line's order is kept"
        );

        let mut line = r#"{"level":"INFO","message":"hi"}"#.to_owned();
        splice_json(&mut line, &conn());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["spans"][0]["peer"], "203.0.113.7:51234");
    }

    #[test]
    fn inside_a_request_names_never_go_to_the_connection() {
        let waker = std::task::Waker::noop();
        let mut logged = Box::pin(Logged::new(conn(), async {
            // No subscriber here: the request's span is left out, as at `RUST_LOG=warn`.
            in_request(async { name_user(&Arc::from("bob")) }).await;
            let in_request_named = with_current(|log| log.named().user);
            name_user(&Arc::from("carol"));
            (in_request_named, with_current(|log| log.named().user))
        }));
        let Poll::Ready((during, after)) = logged.as_mut().poll(&mut Context::from_waker(waker))
        else {
            panic!("pending");
        };
        assert_eq!(
            during.unwrap().as_deref(),
            Some("alice"),
            "bob's request named nothing"
        );
        assert_eq!(after.unwrap().as_deref(), Some("carol"));
        assert_eq!(IN_REQUEST.get(), 0);
    }

    #[test]
    fn a_connection_is_current_only_while_its_future_runs_or_drops() {
        let names = |log: &ConnLog| (log.id, log.named().user.as_deref().map(str::to_owned));
        assert!(with_current(|_| ()).is_none());
        let mut logged = Box::pin(Logged::new(conn(), async {
            name_user(&Arc::from("carol"));
            with_current(names)
        }));
        let waker = std::task::Waker::noop();
        let seen = logged.as_mut().poll(&mut Context::from_waker(waker));
        assert_eq!(seen, Poll::Ready(Some((42, Some("carol".to_owned())))));
        assert!(with_current(|_| ()).is_none(), "not current once polled");

        struct OnDrop;
        impl Drop for OnDrop {
            fn drop(&mut self) {
                assert_eq!(with_current(|log| log.id), Some(7), "current while dropped");
            }
        }
        let guard = OnDrop;
        let pending = Logged::new(
            ConnLog::new(7, "127.0.0.1:1".parse().unwrap()),
            async move {
                let _guard = guard;
                std::future::pending::<()>().await
            },
        );
        let mut pending = Box::pin(pending);
        assert!(pending
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        drop(pending);
        assert!(with_current(|_| ()).is_none());
    }
}
