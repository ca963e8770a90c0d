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
