//! Handshake validation, routing, handshake timeouts and protocol-error handling,
//! driven over raw TCP so every byte is under the test's control.

mod common;

use std::time::{Duration, Instant};

use parley_tests::raw::{
    self, http_request, opcode, roundtrip, upgrade_headers, upgrade_request, Frame, RawWebSocket,
    ResponseHead, SAMPLE_KEY,
};
use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Earliest acceptable close for a 1 s handshake timeout.
const TIMEOUT_MIN: Duration = Duration::from_millis(800);
/// Latest acceptable close for a 1 s handshake timeout.
const TIMEOUT_MAX: Duration = Duration::from_secs(4);
/// How long the timeout tests wait before declaring the server stuck.
const TIMEOUT_GIVE_UP: Duration = Duration::from_secs(6);

fn echo_server() -> ServerProcess {
    ServerProcess::start(&["--echo"])
}

async fn status_of(server: &ServerProcess, request: &str) -> ResponseHead {
    let (_stream, head, _) = roundtrip(server.addr(), request).await;
    head
}

#[tokio::test]
async fn bad_websocket_key_is_400() {
    let server = echo_server();
    for key in [
        "not base64 at all!!",
        "dGVzdA==",                     // valid base64, but 4 bytes instead of 16
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 20 bytes
        "",
    ] {
        let req = http_request("GET", "/echo", &upgrade_headers(key, "13"));
        let head = status_of(&server, &req).await;
        assert_eq!(head.status, 400, "Sec-WebSocket-Key {key:?}: {head:?}");
    }
}

#[tokio::test]
async fn websocket_version_8_is_426_naming_version_13() {
    let server = echo_server();
    let req = http_request("GET", "/echo", &upgrade_headers(SAMPLE_KEY, "8"));
    let head = status_of(&server, &req).await;
    assert_eq!(head.status, 426, "{head:?}");
    assert_eq!(
        head.header("sec-websocket-version").map(str::trim),
        Some("13"),
        "426 must advertise the supported version: {head:?}"
    );
}

#[tokio::test]
async fn post_to_echo_is_405() {
    let server = echo_server();
    let mut headers = upgrade_headers(SAMPLE_KEY, "13");
    headers.push(("Content-Length", "0"));
    let head = status_of(&server, &http_request("POST", "/echo", &headers)).await;
    assert_eq!(head.status, 405, "{head:?}");
}

#[tokio::test]
async fn origin_allow_list_is_enforced() {
    let server = ServerProcess::start(&["--echo", "--allowed-origins", "https://good.example"]);
    for origin in [
        "https://evil.example",
        "http://good.example", // scheme differs
        "https://good.example.evil.example",
        "null",
    ] {
        let head = status_of(&server, &upgrade_request("/echo", &[("Origin", origin)])).await;
        assert_eq!(
            head.status, 403,
            "Origin {origin:?} must be refused: {head:?}"
        );
    }
    let (mut ws, _) = RawWebSocket::connect(
        server.addr(),
        "/echo",
        &[("Origin", "https://good.example")],
    )
    .await;
    ws.send(&Frame::text("allowed")).await;
    assert_eq!(ws.expect_frame().await, Frame::text("allowed"));
}

#[tokio::test]
async fn healthz_is_200() {
    let server = echo_server();
    let head = status_of(&server, &http_request("GET", "/healthz", &[])).await;
    assert_eq!(head.status, 200, "{head:?}");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = echo_server();
    let head = status_of(&server, &http_request("GET", "/no-such-path", &[])).await;
    assert_eq!(head.status, 404, "plain GET: {head:?}");
    let head = status_of(&server, &upgrade_request("/no-such-path", &[])).await;
    assert_eq!(head.status, 404, "WebSocket upgrade: {head:?}");
}

#[tokio::test]
async fn echo_endpoint_needs_the_echo_flag() {
    let server = ServerProcess::start(&[]);
    let head = status_of(&server, &upgrade_request("/echo", &[])).await;
    assert_eq!(head.status, 404, "/echo without --echo: {head:?}");
}

/// Reads until the server closes the connection; returns how long that took from `start`.
/// Bytes the server sends first (e.g. a 408 response) are allowed.
async fn time_until_closed(stream: &mut TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout_at((start + TIMEOUT_GIVE_UP).into(), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!("connection still open {TIMEOUT_GIVE_UP:?} after connecting")
            });
        match read {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => continue,
        }
    }
}

fn assert_timeout_window(what: &str, elapsed: Duration) {
    assert!(
        elapsed >= TIMEOUT_MIN,
        "{what}: closed after {elapsed:?}, before the 1 s handshake timeout"
    );
    assert!(
        elapsed <= TIMEOUT_MAX,
        "{what}: closed only after {elapsed:?} with a 1 s handshake timeout"
    );
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    let server = ServerProcess::start(&["--echo", "--handshake-timeout", "1s"]);
    let start = Instant::now();
    let mut stream = raw::connect(server.addr()).await;
    let elapsed = time_until_closed(&mut stream, start).await;
    assert_timeout_window("silent client", elapsed);
}

#[tokio::test]
async fn half_request_is_dropped_after_handshake_timeout() {
    let server = ServerProcess::start(&["--echo", "--handshake-timeout", "1s"]);
    let start = Instant::now();
    let mut stream = raw::connect(server.addr()).await;
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write half a request");
    let elapsed = time_until_closed(&mut stream, start).await;
    assert_timeout_window("half request", elapsed);
}

#[tokio::test]
async fn drip_fed_request_is_dropped_after_handshake_timeout() {
    // The timeout bounds the whole handshake, not each read: a header line every
    // 200 ms must not keep the connection alive.
    let server = ServerProcess::start(&["--echo", "--handshake-timeout", "1s"]);
    let start = Instant::now();
    let mut stream = raw::connect(server.addr()).await;
    let (mut rd, mut wr) = stream.split();
    wr.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write the request line");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let give_up = tokio::time::sleep_until((start + TIMEOUT_GIVE_UP).into());
    tokio::pin!(give_up);
    let mut buf = [0u8; 1024];
    let mut n = 0u32;
    let elapsed = loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => break start.elapsed(),
                Ok(_) => continue, // e.g. a 408 before the close
            },
            _ = tick.tick() => {
                n += 1;
                if wr.write_all(format!("X-Drip-{n}: y\r\n").as_bytes()).await.is_err() {
                    break start.elapsed();
                }
            }
            _ = &mut give_up => panic!(
                "drip-fed connection still open after {TIMEOUT_GIVE_UP:?} ({n} header lines sent)"
            ),
        }
    };
    assert_timeout_window("drip-fed request", elapsed);
}

#[tokio::test]
async fn handshake_timeout_does_not_affect_open_websockets() {
    let server = ServerProcess::start(&["--echo", "--handshake-timeout", "1s"]);
    let (mut ws, _) = common::connect(&server, "/echo").await;
    common::assert_echo(&mut ws, "before").await;
    // Time itself is under test: idle past the handshake timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::assert_echo(&mut ws, "after 1.5 s idle").await;
}

#[tokio::test]
async fn unmasked_frame_gets_1002_without_disturbing_other_connections() {
    let server = echo_server();
    let (mut healthy, _) = common::connect(&server, "/echo").await;
    common::assert_echo(&mut healthy, "healthy before").await;

    let (mut bad, _) = RawWebSocket::connect(server.addr(), "/echo", &[]).await;
    bad.send_unmasked(&Frame::text("I forgot the mask")).await;
    let close = bad.expect_frame().await;
    assert_eq!(
        close.opcode,
        opcode::CLOSE,
        "expected a close frame, got {close:?}"
    );
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    bad.expect_eof(Duration::from_secs(5)).await;

    common::assert_echo(&mut healthy, "healthy after").await;
}

#[tokio::test]
async fn protocol_errors_get_close_1002() {
    let server = echo_server();
    let cases: Vec<(&str, Vec<Frame>)> = vec![
        ("reserved opcode 0x3", vec![Frame::new(0x3, b"x".to_vec())]),
        (
            "reserved control opcode 0xB",
            vec![Frame::new(0xB, Vec::new())],
        ),
        (
            "RSV1 without a negotiated extension",
            vec![Frame::text("x").with_rsv1(true)],
        ),
        (
            "fragmented ping",
            vec![Frame::ping(b"x".to_vec()).with_fin(false)],
        ),
        ("126-byte ping", vec![Frame::ping(vec![0u8; 126])]),
        (
            "continuation with nothing to continue",
            vec![Frame::new(opcode::CONTINUATION, b"x".to_vec())],
        ),
        (
            "new data frame inside a fragmented message",
            vec![Frame::text("a").with_fin(false), Frame::text("b")],
        ),
        (
            "1-byte close payload",
            vec![Frame::new(opcode::CLOSE, vec![0x03])],
        ),
        ("close code 1005 on the wire", vec![Frame::close(1005, "")]),
    ];
    for (what, frames) in cases {
        let (mut ws, _) = RawWebSocket::connect(server.addr(), "/echo", &[]).await;
        for frame in &frames {
            ws.send(frame).await;
        }
        let close = ws
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("{what}: server closed TCP without a close frame"));
        assert_eq!(
            close.opcode,
            opcode::CLOSE,
            "{what}: expected a close frame, got {close:?}"
        );
        assert_eq!(close.close_code(), Some(1002), "{what}: {close:?}");
    }
}

#[tokio::test]
async fn invalid_utf8_text_gets_close_1007() {
    let server = echo_server();
    let (mut ws, _) = RawWebSocket::connect(server.addr(), "/echo", &[]).await;
    ws.send(&Frame::new(opcode::TEXT, b"bad \xff utf-8".to_vec()))
        .await;
    let close = ws.expect_frame().await;
    assert_eq!(
        close.opcode,
        opcode::CLOSE,
        "expected a close frame, got {close:?}"
    );
    assert_eq!(close.close_code(), Some(1007), "{close:?}");
}
