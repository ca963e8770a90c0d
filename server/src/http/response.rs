//! Plain-text answers of the listeners, the security headers every answer carries, and the
//! answers to connections refused at the door.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::metrics;

/// Every answer's body: the whole of it at once.
pub(super) type Body = Full<Bytes>;

pub(super) fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = text(status, "");
    *resp.body_mut() = Body::from(body);
    resp
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What the page may load and who may frame it: only our own files (the web client has no
/// inline script or style), WebSockets to ourselves, no framing, no plugins. `worker-src blob:`:
/// the STOMP library runs its heart-beat timer in a worker made from a blob (timers of
/// background tabs are throttled); only script already running from our files can make one.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src blob:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers every answer carries (the page, its files, the API, errors):
/// the CSP, framing refused for old browsers too, no Referer sent off-site, no sniffing.
pub(super) fn add_security_headers<B>(resp: &mut Response<B>) {
    let headers = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
    ] {
        headers
            .entry(name)
            .or_insert(header::HeaderValue::from_static(value));
    }
}

/// The answer to a client over its address's connection cap, on HTTP.
pub(super) const HTTP_TOO_MANY: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; \
    charset=utf-8\r\ncontent-length: 39\r\nretry-after: 10\r\nconnection: close\r\n\r\n\
    too many connections from your address\n";
/// The same on STOMP over TCP.
pub(super) const STOMP_TOO_MANY: &[u8] =
    b"ERROR\nmessage:too many connections from your address\n\n\0";

/// 429 to a client over its address's connection cap.
pub(super) fn too_many() -> Response<Body> {
    metrics::handles().refused_connections[1].increment(1);
    let mut resp = text(
        StatusCode::TOO_MANY_REQUESTS,
        "too many connections from your address\n",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
    resp
}

/// Answers a connection refused at the door (callers box it: its buffer must not weigh on
/// every connection's task), then closes it: the answer is written, our side
/// shut, and what the client still sends read and dropped for a moment, so that closing with
/// unread input (which sends a reset) does not destroy the answer before the client reads it.
pub(super) async fn refuse(mut stream: TcpStream, answer: &[u8]) {
    use tokio::io::AsyncReadExt as _;
    const LINGER: Duration = Duration::from_secs(1);
    if timeout(LINGER, stream.write_all(answer)).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async {
        let mut budget = 64 * 1024;
        while budget > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget -= n.min(budget),
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

/// A request's own span: a kept-alive connection (a balancer's) carries many users' requests,
/// so who a request was is recorded on it (`protocol`, `session`, `user`), not on `conn`.
pub(super) fn request_span() -> tracing::Span {
    tracing::info_span!(
        "req",
        protocol = tracing::field::Empty,
        session = tracing::field::Empty,
        user = tracing::field::Empty,
    )
}
