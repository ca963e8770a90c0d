//! Feeds arbitrary bytes, as one HTTP connection's request, to the server's HTTP service
//! in-process: hyper, the router, the REST API, the web client's files and the WebSocket upgrade
//! checks, over the real hub, auth and a temporary SQLite store.
//!
//! The input is the bytes the client sends (nothing more follows). `$ALICE` and `$BOB` become
//! their bearer tokens and `$REFRESH` a refresh token of `alice`, so signed-in paths are reached.
//! With a complete request head the connection then shuts down gracefully, so one request is
//! answered. Beyond "never panic", it checks that:
//!
//! - an answer comes within 10 s, and a complete request head that hyper takes as a request
//!   (its method, URI and headers valid for the `http` types) always gets one, unless an HTTP/2
//!   preface follows it (hyper then closes without an answer if it refuses the head);
//! - what the server writes parses as HTTP/1.1 responses, bodies as long as `content-length`;
//! - no answer is a 500, and a 5xx is only a 503 (busy, storage behind) or hyper's 505;
//! - a 413 only answers a declared `content-length` over the API's 64 KiB (a body hyper cannot
//!   read is a 400);
//! - every answer of the router carries the security headers; only hyper's own refusals (400,
//!   408, 414, 431, 505) come without them;
//! - `/api/` answers (but 204, 101 and `HEAD`) are JSON, errors as `{"error": "…"}`;
//! - a 101 is exactly an accepted upgrade.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use parley_server::fuzzing::{Harness, HttpExchange};
use serde_json::Value;

/// The REST API's largest request body.
const MAX_BODY: u64 = 64 * 1024;

/// Longest a request may take to be answered (password hashing included).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fuzz_target!(|data: &[u8]| {
    let (runtime, harness) = Harness::shared();
    let exchange = runtime.block_on(async {
        tokio::time::timeout(ANSWER_WITHIN, harness.http(data))
            .await
            .expect("no answer within 10 s")
    });
    check(&exchange);
});

/// The HTTP/2 connection preface: hyper closes without an answer when one follows a head it
/// refuses (it takes the connection for HTTP/2, which the server does not speak).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The request line of what was sent, if its head is complete, and whether hyper must answer it:
/// hyper builds the request from httparse's parse and refuses what the `http` types reject; only
/// a refusal followed by an HTTP/2 preface goes unanswered.
struct Sent {
    method: String,
    path: String,
    valid: bool,
    /// The largest `content-length` declared.
    declared: Option<u64>,
}

fn sent(request: &[u8]) -> Option<Sent> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(len)) => {
            let (method, path) = (req.method?, req.path?);
            let rest = &request[len..];
            let rest = &rest[rest.iter().take_while(|b| b"\r\n".contains(b)).count()..];
            let valid = !rest.starts_with(H2_PREFACE)
                && http::Method::from_bytes(method.as_bytes()).is_ok()
                && path.parse::<http::Uri>().is_ok()
                && req.headers.iter().all(|h| {
                    http::HeaderName::from_bytes(h.name.as_bytes()).is_ok()
                        && http::HeaderValue::from_bytes(h.value).is_ok()
                });
            let declared = (req.headers.iter())
                .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                .filter_map(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .max();
            Some(Sent {
                method: method.to_owned(),
                path: path.to_owned(),
                valid,
                declared,
            })
        }
        _ => None,
    }
}

fn check(exchange: &HttpExchange) {
    let sent = sent(&exchange.request);
    let shown = || String::from_utf8_lossy(&exchange.written).into_owned();
    if exchange.written.is_empty() {
        assert!(
            !sent.is_some_and(|s| s.valid),
            "a complete, valid request head got no answer"
        );
        return;
    }
    let mut out = &exchange.written[..];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("unparsable answer ({other:?}): {}", shown()),
        };
        let status = resp.code.expect("a complete head has a status");
        let header = |name: &str| {
            (resp.headers.iter())
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let ours = header("x-content-type-options") == Some("nosniff");
        assert!((100..600).contains(&status), "status {status}");
        assert_ne!(status, 500, "internal error: {}", shown());
        assert!(status < 500 || matches!(status, 503 | 505), "{}", shown());
        assert!(
            ours || matches!(status, 100 | 400 | 408 | 414 | 431 | 505),
            "an answer without the security headers: {}",
            shown()
        );
        // The API takes bodies up to 64 KiB; inputs are far shorter, so only a declared length
        // can be too large.
        if status == 413 {
            let declared = sent.as_ref().and_then(|s| s.declared);
            assert!(
                declared > Some(MAX_BODY),
                "413 for a short body: {}",
                shown()
            );
        }
        match status {
            100 => {
                out = &out[head_len..];
                continue;
            }
            101 => {
                assert!(exchange.upgraded, "101 without an upgrade");
                return;
            }
            _ => assert!(!exchange.upgraded, "upgraded after a {status}"),
        }
        let head = sent.as_ref().is_some_and(|s| s.method == "HEAD");
        let body = if head || status == 204 || status == 304 {
            &[][..]
        } else {
            let len: usize = match header("content-length") {
                Some(len) => len.parse().expect("a numeric content-length"),
                None => panic!("an answer without content-length: {}", shown()),
            };
            (out.get(head_len..head_len + len)).unwrap_or_else(|| panic!("short body: {}", shown()))
        };
        let api = sent.as_ref().is_some_and(|s| s.path.starts_with("/api/"));
        if api && ours && !body.is_empty() {
            let value: Value = serde_json::from_slice(body).expect("API answers are JSON");
            if status >= 400 {
                assert!(
                    value["error"].is_string(),
                    "error without a message: {value}"
                );
            }
        }
        return;
    }
}
