//! Connections, requests and proxies: client addresses behind trusted proxies (X-Forwarded-For,
//! PROXY v1/v2, the shipped nginx and haproxy), slow request bodies, the per-address connection
//! cap and the file limit, security headers and a private `/stats`, and permessage-deflate's
//! overhead at the frame limit.
//!
//! Every loopback address is local on Linux: clients bind 127.0.0.2, 127.0.0.3, … to be
//! distinct clients, while 127.0.0.1 plays the trusted proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_tests::cluster::{Haproxy, Nginx};
use parley_tests::raw::{self, read_response_head, upgrade_request, Frame, RawWebSocket};
use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Bound for one network wait.
const WAIT: Duration = Duration::from_secs(10);

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("loopback address");
    socket.bind(local).expect("bind a loopback source address");
    let stream = timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Sends `request` from `from` and reads the status of the answer (the stream stays open).
async fn status_from(from: &str, addr: SocketAddr, request: &str) -> (TcpStream, u16, String) {
    let mut stream = connect_from(from, addr).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    let (head, rest) = read_response_head(&mut stream).await;
    (
        stream,
        head.status,
        String::from_utf8_lossy(&rest).into_owned(),
    )
}

/// A WebSocket upgrade to `/echo` with `extra` headers, from `from`: its status.
async fn echo_upgrade(from: &str, addr: SocketAddr, extra: &[(&str, &str)]) -> (TcpStream, u16) {
    let (stream, status, _) = status_from(from, addr, &upgrade_request("/echo", extra)).await;
    (stream, status)
}

/// Opens STOMP over TCP from `from`, sends `prefix` then a CONNECT, and returns the stream and
/// the first frame's text (empty when the server closed without one).
async fn stomp_from(from: &str, addr: SocketAddr, prefix: &[u8]) -> (TcpStream, String) {
    let mut stream = connect_from(from, addr).await;
    let mut out = prefix.to_vec();
    out.extend_from_slice(b"CONNECT\naccept-version:1.2\nhost:parley\nlogin:guest\n\n\0");
    // The server may refuse and close before reading it all: that is an answer too.
    let _ = stream.write_all(&out).await;
    let frame = first_frame(&mut stream).await;
    (stream, frame)
}

/// The first STOMP frame on `stream` (up to its NUL), or what came before EOF.
async fn first_frame(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !got.contains(&0) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!("no STOMP frame within {WAIT:?}; got {got:?}"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn v1(src: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 {port} 61613\r\n").into_bytes()
}

fn v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&61613u16.to_be_bytes());
    out
}

// ---- 6. Client addresses behind proxies ----------------------------------------------------

#[tokio::test]
async fn conn_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let server = ServerProcess::start(&[
        "--echo",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let addr = server.addr();
    let xff = |v| [("X-Forwarded-For", v)];
    let (_a, status) = echo_upgrade("127.0.0.1", addr, &xff("192.0.2.1")).await;
    assert_eq!(status, 101);
    // The client wrote the left entry itself: only the right-most untrusted one counts.
    let (_b, status) = echo_upgrade("127.0.0.1", addr, &xff("192.0.2.9, 192.0.2.1")).await;
    assert_eq!(status, 429, "192.0.2.1 already holds its one connection");
    let (_c, status) = echo_upgrade("127.0.0.1", addr, &xff("192.0.2.1, 192.0.2.2")).await;
    assert_eq!(
        status, 101,
        "another client behind the same proxy is not affected"
    );
    // The proxy's own connections are not capped under its address.
    let (_d, status) = echo_upgrade("127.0.0.1", addr, &[]).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn conn_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = ServerProcess::start(&[
        "--echo",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let addr = server.addr();
    let (_a, status) = echo_upgrade("127.0.0.2", addr, &[("X-Forwarded-For", "192.0.2.1")]).await;
    assert_eq!(status, 101);
    // Claiming another address changes nothing: 127.0.0.2 has its one connection.
    let (_b, status) = echo_upgrade("127.0.0.2", addr, &[("X-Forwarded-For", "192.0.2.2")]).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn conn_login_throttle_counts_forwarded_clients_apart() {
    let server = ServerProcess::start_strict(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--login-failures-per-ip",
        "2",
    ]);
    let login = |n: u32, client: &str| {
        let body = format!("{{\"username\":\"nobody{n}\",\"password\":\"wrong-password\"}}");
        format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Forwarded-For: {client}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let addr = server.addr();
    for n in 0..2 {
        let (_, status, _) = status_from("127.0.0.1", addr, &login(n, "198.51.100.1")).await;
        assert_eq!(status, 401, "attempt {n}");
    }
    let (_, status, _) = status_from("127.0.0.1", addr, &login(2, "198.51.100.1")).await;
    assert_eq!(status, 429, "198.51.100.1 used up its failures");
    let (_, status, _) = status_from("127.0.0.1", addr, &login(3, "198.51.100.2")).await;
    assert_eq!(
        status, 401,
        "another client behind the proxy is not throttled"
    );
}

#[tokio::test]
async fn conn_proxy_protocol_v1_and_v2_name_stomp_clients() {
    let server = ServerProcess::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let stomp = server.stomp_addr();
    let (_a, frame) = stomp_from("127.0.0.1", stomp, &v1("192.0.2.1", 4000)).await;
    assert!(frame.starts_with("CONNECTED"), "{frame:?}");
    let (_b, frame) = stomp_from("127.0.0.1", stomp, &v2([192, 0, 2, 1], 4001)).await;
    assert!(
        frame.starts_with("ERROR") && frame.contains("too many connections"),
        "v2 names the same client, which holds its one connection: {frame:?}"
    );
    let (_c, frame) = stomp_from("127.0.0.1", stomp, &v2([192, 0, 2, 2], 4002)).await;
    assert!(frame.starts_with("CONNECTED"), "{frame:?}");
    // A malformed header from the trusted peer: closed without a session.
    let (_d, frame) = stomp_from("127.0.0.1", stomp, b"PROXY TCP4 192.0.2.3 x 1 2\r\n").await;
    assert!(!frame.contains("CONNECTED"), "{frame:?}");
}

#[tokio::test]
async fn conn_proxy_header_from_an_untrusted_peer_is_not_believed() {
    let server = ServerProcess::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let stomp = server.stomp_addr();
    let (_a, frame) = stomp_from("127.0.0.2", stomp, &v1("192.0.2.1", 4000)).await;
    assert!(
        !frame.contains("CONNECTED"),
        "a PROXY line from an untrusted peer is no header, only bad STOMP: {frame:?}"
    );
    let (_b, frame) = stomp_from("127.0.0.3", stomp, b"").await;
    assert!(frame.starts_with("CONNECTED"), "{frame:?}");
    let (_c, frame) = stomp_from("127.0.0.3", stomp, &v1("192.0.2.7", 4000)).await;
    assert!(
        frame.contains("too many connections"),
        "counted as 127.0.0.3, whatever the line says: {frame:?}"
    );
}

/// Through a balancer from two client addresses: WebSockets (X-Forwarded-For) and STOMP over
/// TCP (PROXY protocol) are capped per real client.
async fn behind_balancer(http: SocketAddr, stomp: SocketAddr) {
    let (_a, status) = echo_upgrade("127.0.0.2", http, &[]).await;
    assert_eq!(status, 101);
    let (_b, status) = echo_upgrade("127.0.0.2", http, &[]).await;
    assert_eq!(status, 429, "127.0.0.2 is capped, not the balancer");
    let (_c, status) = echo_upgrade("127.0.0.3", http, &[]).await;
    assert_eq!(status, 101);
    // Other addresses for STOMP: the cap counts WebSockets and STOMP sessions together.
    let (_d, frame) = stomp_from("127.0.0.4", stomp, b"").await;
    assert!(frame.starts_with("CONNECTED"), "{frame:?}");
    let (_e, frame) = stomp_from("127.0.0.4", stomp, b"").await;
    assert!(frame.contains("too many connections"), "{frame:?}");
    let (_f, frame) = stomp_from("127.0.0.5", stomp, b"").await;
    assert!(frame.starts_with("CONNECTED"), "{frame:?}");
}

const BEHIND_PROXY: &[&str] = &[
    "--echo",
    "--trusted-proxy",
    "127.0.0.1",
    "--max-connections-per-ip",
    "1",
];

#[tokio::test]
async fn conn_behind_the_shipped_nginx_clients_keep_their_addresses() {
    let node = ServerProcess::start(BEHIND_PROXY);
    let nginx = Nginx::start(&[&node]);
    behind_balancer(nginx.http, nginx.stomp).await;
}

#[tokio::test]
async fn conn_behind_the_shipped_haproxy_clients_keep_their_addresses() {
    let node = ServerProcess::start(BEHIND_PROXY);
    let haproxy = Haproxy::start(&[&node]);
    behind_balancer(haproxy.http, haproxy.stomp).await;
}

// ---- 8. Slow request bodies ----------------------------------------------------------------

/// A request whose declared body never arrives, or arrives a byte every `drip`: the status of
/// the answer and how long it took.
async fn slow_body(server: &ServerProcess, drip: Option<Duration>) -> (u16, Duration) {
    let mut stream = raw::connect(server.addr()).await;
    let head = "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"username\":";
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let dripping = async {
        if let Some(every) = drip {
            loop {
                tokio::time::sleep(every).await;
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await
    };
    let answered = timeout(WAIT, async {
        tokio::select! {
            status = status_of(&mut reader) => status,
            () = dripping => unreachable!(),
        }
    })
    .await;
    let status = answered.expect("the server held the slow body beyond 10 s");
    (status, started.elapsed())
}

/// The status of the response head read from `reader`.
async fn status_of(reader: &mut tokio::net::tcp::ReadHalf<'_>) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = reader.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
    status.expect("a status line")
}

#[tokio::test]
async fn conn_a_body_that_never_comes_or_drips_gets_408() {
    let server = ServerProcess::start(&["--body-timeout", "2s"]);
    let (status, took) = slow_body(&server, None).await;
    assert_eq!(status, 408);
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let (status, _) = slow_body(&server, Some(Duration::from_millis(400))).await;
    assert_eq!(
        status, 408,
        "a byte now and then does not extend the deadline"
    );
}

// ---- 9. Connections per IP -----------------------------------------------------------------

#[tokio::test]
async fn conn_per_ip_cap_refuses_clearly_and_spares_other_addresses() {
    let server = ServerProcess::start(&["--max-connections-per-ip", "3"]);
    let addr = server.addr();
    let health = raw::http_request("GET", "/healthz", &[]);
    // Each holder asks once (keep-alive): answered means counted. A bare connect is not: the
    // server counts in the connection's task, which may run after a later connection's.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let (stream, status, _) = status_from("127.0.0.2", addr, &health).await;
        assert_eq!(status, 200);
        idle.push(stream);
    }
    let (_, status, body) = status_from("127.0.0.2", addr, &health).await;
    assert_eq!(status, 429);
    assert!(body.contains("too many connections"), "{body:?}");
    let (_, frame) = stomp_from("127.0.0.2", server.stomp_addr(), b"").await;
    assert!(
        frame.starts_with("ERROR") && frame.contains("too many connections"),
        "{frame:?}"
    );
    let (_, status, _) = status_from("127.0.0.3", addr, &health).await;
    assert_eq!(status, 200, "another address is not affected");
    // A closed connection gives its place back.
    drop(idle.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, status, _) = status_from("127.0.0.2", addr, &health).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn conn_file_limit_is_checked_at_start() {
    let server = ServerProcess::start(&["--max-connections", "4000000000"]);
    let deadline = Instant::now() + WAIT;
    while !server.stderr_log().contains("open-file limit") {
        assert!(
            Instant::now() < deadline,
            "no warning about the file limit: {}",
            server.stderr_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- 13. Security headers, private /stats --------------------------------------------------

#[tokio::test]
async fn conn_page_and_api_carry_security_headers() {
    let server = ServerProcess::start(&[]);
    for path in ["/", "/main.js", "/api/info", "/nope"] {
        let (_, head, _) =
            raw::roundtrip(server.addr(), &raw::http_request("GET", path, &[])).await;
        let csp = head
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP: {head:?}"));
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(head.header("x-frame-options"), Some("DENY"), "{path}");
        assert!(head.header("referrer-policy").is_some(), "{path}");
    }
    // The page itself has no inline script or style the policy would block.
    let page = parley_tests::http::get(server.addr(), "/", &[])
        .await
        .text();
    for (at, _) in page.match_indices("<script") {
        let tag = &page[at..at + page[at..].find('>').unwrap_or(0)];
        assert!(tag.contains("src="), "inline script: {tag}");
    }
    assert!(!page.contains("<style") && !page.contains("style=\""));
}

#[tokio::test]
async fn conn_stats_is_private_unless_a_flag_says_so() {
    let private = ServerProcess::start(&[]);
    let resp = parley_tests::http::get(private.addr(), "/stats", &[]).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let public = ServerProcess::start(&["--public-stats"]);
    let resp = parley_tests::http::get(public.addr(), "/stats", &[]).await;
    assert_eq!(resp.status, 200);
    assert!(resp.json()["connections"].is_u64());
}

// ---- 17. permessage-deflate at the frame limit ---------------------------------------------

#[tokio::test]
async fn conn_deflated_message_of_exactly_the_limit_is_accepted() {
    use flate2::{Compress, Compression, FlushCompress};
    // 1 MiB here to stay quick; the same holds for /echo's 16 MiB default.
    const LIMIT: usize = 1 << 20;
    let server = ServerProcess::start(&["--echo", "--echo-max-message", &LIMIT.to_string()]);
    let (mut ws, head) = RawWebSocket::connect(
        server.addr(),
        "/echo",
        &[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    .await;
    assert!(head.header_has_token("sec-websocket-extensions", "permessage-deflate"));
    // Bytes deflate cannot shrink: its output is a little larger than the input.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..LIMIT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let mut deflate = Compress::new(Compression::default(), false);
    let mut compressed = Vec::with_capacity(LIMIT + LIMIT / 100 + 64);
    deflate
        .compress_vec(&data, &mut compressed, FlushCompress::Sync)
        .expect("deflate");
    assert!(compressed.ends_with(&[0, 0, 0xff, 0xff]));
    compressed.truncate(compressed.len() - 4);
    assert!(compressed.len() > LIMIT, "{} bytes", compressed.len());
    ws.send(&Frame::binary(compressed).with_rsv1(true)).await;
    let reply = ws.read_frame_within(WAIT).await.expect("a reply");
    assert_eq!(
        reply.opcode,
        2,
        "expected the echo, got close {:?}",
        reply.close_code()
    );
}
