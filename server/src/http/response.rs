//! Plain-text answers of the listeners.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

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
