//! SockJS against the real binary, for what the differential test against sockjs-node
//! (tests/interop/js/sockjs.test.mjs) cannot show: Parley's apps over every transport (STOMP,
//! raw JSON) sharing rooms with WebSocket clients, session life and caps, bounds on what a
//! session holds, client addresses, heartbeat timing and shutdown.

mod json_client;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_tests::sockjs::http::{request, Resp};
use parley_tests::sockjs::{
    parse_sock_frame, session_id, Session, SockFrame, SockJsUrl, Transport,
};
use parley_tests::stomp::WAIT;
use parley_tests::ServerProcess;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A fresh session under `prefix` on `server`, opened over `transport` (`query` on its
/// receiving requests): its `o` read.
async fn open(server: &ServerProcess, prefix: &str, transport: Transport, query: &str) -> Session {
    let url = SockJsUrl::new(server.addr(), prefix, &session_id()).with_query(query);
    Session::open(url, transport).await
}

/// `method path` with `body` to the server from `from` (default: any loopback address): the
/// answer, its head read.
async fn ask(
    server: &ServerProcess,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Resp {
    (request(server.addr(), from, method, path, &[], body).await).unwrap_or_else(|e| panic!("{e}"))
}

/// The status of one `xhr_send` of `body` on `s`'s session.
async fn xhr_send(s: &Session, body: &[u8]) -> u16 {
    (s.url.xhr_send(body).await)
        .unwrap_or_else(|e| panic!("{e}"))
        .status
}

/// The answer's whole body, as text; panics unless it ends within `limit`.
async fn whole(resp: Resp, limit: Duration) -> String {
    (resp.whole(limit).await)
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
}

/// One STOMP frame as text.
fn stomp(command: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("{command}\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}:{value}\n"));
    }
    format!("{out}\n{body}\0")
}

/// Command and headers of a STOMP frame.
fn parse_stomp(frame: &str) -> (String, Vec<(String, String)>, String) {
    let frame = frame.trim_start_matches(['\n', '\r']);
    let (head, body) = frame.split_once("\n\n").unwrap_or((frame, ""));
    let mut lines = head.lines();
    let command = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    (command, headers, body.trim_end_matches('\0').to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    let found = headers.iter().find(|(n, _)| n == name);
    found.map_or("", |(_, v)| v.as_str())
}

/// The next STOMP frame over SockJS (heart-beat EOLs skipped).
async fn next_stomp(s: &mut Session) -> (String, Vec<(String, String)>, String) {
    loop {
        let message = s.recv().await;
        if !message.trim().is_empty() {
            return parse_stomp(&message);
        }
    }
}

type Ws = json_client::Ws;

/// STOMP 1.2 over a plain WebSocket at `/stomp`, subscribed to `room` (receipt awaited).
async fn ws_stomp(server: &ServerProcess, login: &str, room: &str) -> Ws {
    let mut req = server.ws_url("/stomp").into_client_request().unwrap();
    let protocol = "v12.stomp".parse().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol);
    let connect = tokio_tungstenite::connect_async(req);
    let mut ws = timeout(WAIT, connect).await.unwrap().unwrap().0;
    let connect = stomp(
        "CONNECT",
        &[("accept-version", "1.2"), ("host", "/"), ("login", login)],
        "",
    );
    ws.send(Message::text(connect)).await.unwrap();
    assert_eq!(ws_frame(&mut ws).await.0, "CONNECTED");
    let subscribe = [("id", "0"), ("destination", room), ("receipt", "r")];
    let sub = stomp("SUBSCRIBE", &subscribe, "");
    ws.send(Message::text(sub)).await.unwrap();
    assert_eq!(ws_frame(&mut ws).await.0, "RECEIPT");
    ws
}

async fn ws_frame(ws: &mut Ws) -> (String, Vec<(String, String)>, String) {
    loop {
        match timeout(WAIT, ws.next()).await.expect("no STOMP frame") {
            Some(Ok(Message::Text(t))) if !t.trim().is_empty() => return parse_stomp(&t),
            Some(Ok(_)) => {}
            other => panic!("STOMP WebSocket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stomp_over_every_transport_shares_a_room_with_websocket_stomp() {
    let server = ServerProcess::start(&[]);
    let transports = [
        Transport::Xhr,
        Transport::XhrStreaming,
        Transport::EventSource,
        Transport::WebSocket,
    ];
    for (i, transport) in transports.into_iter().enumerate() {
        let room = format!("/topic/sj{i}");
        let mut ws = ws_stomp(&server, &format!("bob{i}"), &room).await;
        let mut s = open(&server, "/stomp", transport, "").await;
        let login = format!("alice{i}");
        let connect = [("accept-version", "1.2"), ("host", "/"), ("login", &login)];
        s.send(&[&stomp("CONNECT", &connect, "")]).await;
        assert_eq!(next_stomp(&mut s).await.0, "CONNECTED", "{transport:?}");
        let sub = [
            ("id", "s"),
            ("destination", room.as_str()),
            ("receipt", "r1"),
        ];
        s.send(&[&stomp("SUBSCRIBE", &sub, "")]).await;
        assert_eq!(next_stomp(&mut s).await.0, "RECEIPT", "{transport:?}");

        s.send(&[&stomp("SEND", &[("destination", &room)], "from sockjs")])
            .await;
        let (command, at_bob, body) = ws_frame(&mut ws).await;
        assert_eq!(
            (command.as_str(), body.as_str()),
            ("MESSAGE", "from sockjs")
        );
        let (command, own, _) = next_stomp(&mut s).await;
        assert_eq!(command, "MESSAGE", "{transport:?}");
        assert_eq!(header(&own, "message-id"), header(&at_bob, "message-id"));
        assert_eq!(header(&at_bob, "sender"), login);

        let send = stomp("SEND", &[("destination", &room)], "from ws");
        ws.send(Message::text(send)).await.unwrap();
        let (_, at_bob, _) = ws_frame(&mut ws).await;
        let (command, at_alice, body) = next_stomp(&mut s).await;
        assert_eq!((command.as_str(), body.as_str()), ("MESSAGE", "from ws"));
        assert_eq!(
            header(&at_alice, "message-id"),
            header(&at_bob, "message-id")
        );
    }
}

#[tokio::test]
async fn a_catch_up_larger_than_the_outbox_reaches_a_sockjs_client_whole() {
    // 64 messages of 4,000 bytes against a 64 KiB outbox: written all at once, the catch-up
    // would overflow the session's bound; paced as socket writes are, it all arrives.
    let server = ServerProcess::start(&["--outbox-bytes", "65536"]);
    let room = "/topic/big";
    let mut ws = ws_stomp(&server, "bob", room).await;
    let body = "z".repeat(4000);
    for i in 1..=64 {
        let receipt = format!("m{i}");
        let headers = [("destination", room), ("receipt", receipt.as_str())];
        ws.send(Message::text(stomp("SEND", &headers, &body)))
            .await
            .unwrap();
    }
    let mut receipts = 0;
    while receipts < 64 {
        if ws_frame(&mut ws).await.0 == "RECEIPT" {
            receipts += 1;
        }
    }
    let mut s = open(&server, "/stomp", Transport::XhrStreaming, "").await;
    let connect = [("accept-version", "1.2"), ("host", "/"), ("login", "carol")];
    s.send(&[&stomp("CONNECT", &connect, "")]).await;
    assert_eq!(next_stomp(&mut s).await.0, "CONNECTED");
    let sub = [("id", "s"), ("destination", room), ("since", "0")];
    s.send(&[&stomp("SUBSCRIBE", &sub, "")]).await;
    for id in 1..=64u64 {
        let (command, headers, got) = next_stomp(&mut s).await;
        assert_eq!(command, "MESSAGE", "message {id}");
        assert_eq!(header(&headers, "message-id"), id.to_string());
        assert_eq!(got.len(), body.len());
    }
}

#[tokio::test]
async fn raw_json_over_xhr_streaming_receives_from_a_ws_client() {
    let server = ServerProcess::start(&[]);
    let query = "?name=alice";
    let mut alice = open(&server, "/ws", Transport::XhrStreaming, query).await;
    let join = json!({"type": "join", "room": "lobby"}).to_string();
    alice.send(&[&join]).await;
    let joined: Value = serde_json::from_str(&alice.recv().await).unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");

    let mut bob = json_client::raw(&server, "bob").await;
    json_client::send(&mut bob, json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(json_client::recv(&mut bob).await["type"], "joined");
    let hi = json!({"type": "send", "room": "lobby", "body": "hi alice", "ref": "1"});
    json_client::send(&mut bob, hi).await;
    loop {
        let event: Value = serde_json::from_str(&alice.recv().await).unwrap();
        if event["type"] == "message" {
            assert_eq!(
                (&event["from"], &event["body"]),
                (&json!("bob"), &json!("hi alice"))
            );
            break;
        }
    }
}

#[tokio::test]
async fn a_session_nobody_receives_for_the_disconnect_delay_is_closed() {
    let server = ServerProcess::start(&["--echo", "--sockjs-disconnect-delay", "300ms"]);
    let s = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    assert_eq!(xhr_send(&s, br#"["kept"]"#).await, 204);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        xhr_send(&s, br#"["gone"]"#).await,
        404,
        "the session is gone"
    );
    let again = ask(&server, None, "POST", &s.url.path("xhr"), b"").await;
    assert_eq!(whole(again, WAIT).await, "o\n", "a new session opens");
}

#[tokio::test]
async fn a_closed_session_polled_without_pause_still_goes_after_the_delay() {
    let server = ServerProcess::start(&["--echo", "--sockjs-disconnect-delay", "300ms"]);
    let s = open(&server, "/sockjs-test/close", Transport::Xhr, "").await;
    let poll = s.url.path("xhr");
    let started = std::time::Instant::now();
    // Every poll answers the close frame, and would keep the session another delay.
    loop {
        let answer = whole(ask(&server, None, "POST", &poll, b"").await, WAIT).await;
        if answer == "o\n" {
            break;
        }
        assert_eq!(answer, "c[3000,\"Go away!\"]\n");
        assert!(started.elapsed() < Duration::from_secs(5), "never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens session `id` of the echo service by polling; the answer's status.
async fn open_status(server: &ServerProcess, from: Option<IpAddr>, id: &str) -> u16 {
    let path = format!("/sockjs-test/echo/000/{id}/xhr");
    ask(server, from, "POST", &path, b"").await.status
}

#[tokio::test]
async fn sessions_are_capped_in_all_and_per_address() {
    let server = ServerProcess::start(&["--echo", "--sockjs-max-sessions", "2"]);
    assert_eq!(open_status(&server, None, "a1").await, 200);
    assert_eq!(open_status(&server, None, "a2").await, 200);
    assert_eq!(open_status(&server, None, "a3").await, 503, "server full");
    assert_eq!(
        open_status(&server, None, "a1").await,
        200,
        "existing sessions still work"
    );

    let server = ServerProcess::start(&["--echo", "--max-connections-per-ip", "2"]);
    assert_eq!(open_status(&server, None, "b1").await, 200);
    assert_eq!(open_status(&server, None, "b2").await, 200);
    assert_eq!(
        open_status(&server, None, "b3").await,
        429,
        "this address is full"
    );
    let other = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(
        open_status(&server, other, "b4").await,
        200,
        "another address is not"
    );
}

#[tokio::test]
async fn sends_over_the_body_limit_are_refused_with_413() {
    let args = ["--echo", "--max-body", "1024", "--stomp-max-body", "1024"];
    let server = ServerProcess::start(&args);
    let s = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    let big = serde_json::to_string(&["x".repeat(200_000)]).unwrap();
    assert_eq!(xhr_send(&s, big.as_bytes()).await, 413);
    assert_eq!(xhr_send(&s, br#"["small"]"#).await, 204);
}

#[tokio::test]
async fn a_flood_nobody_collects_is_refused_and_memory_stays_bounded() {
    let server = ServerProcess::start(&["--echo", "--outbox-bytes", "262144"]);
    let s = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    let before = server.rss_bytes() as u64 / 1024;
    let chunk = serde_json::to_string(&["y".repeat(30_000)]).unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..400 {
        match xhr_send(&s, chunk.as_bytes()).await {
            204 => accepted += 1,
            503 => refused += 1,
            other => panic!("unexpected answer {other} to a flood send"),
        }
    }
    // 12 MB sent; what the echo could not hand to a client is not kept.
    let grown = (server.rss_bytes() as u64 / 1024).saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the server grew by {grown} KiB ({accepted} accepted, {refused} refused)"
    );
    // What fitted is delivered, a response's worth per poll, then the slow consumer's close.
    let path = s.url.path("xhr");
    let mut delivered = 0;
    loop {
        let text = whole(ask(&server, None, "POST", &path, b"").await, WAIT).await;
        match parse_sock_frame(text.trim_end()).expect("a SockJS frame") {
            SockFrame::Messages(m) => delivered += m.len(),
            SockFrame::Close(code, _) => {
                assert_eq!(code, 1008, "the slow consumer's close");
                break;
            }
            _ => panic!("unexpected frame after the flood"),
        }
        assert!(delivered <= accepted, "more delivered than sent");
    }
    assert!(delivered > 0, "what fitted is delivered");
}

#[tokio::test]
async fn a_second_receiving_request_gets_2010() {
    let server = ServerProcess::start(&["--echo"]);
    let s = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    let path = s.url.path("xhr_streaming");
    let mut first = ask(&server, None, "POST", &path, b"").await;
    first.until(WAIT, |b| b.len() >= 2049).await;
    let second = ask(&server, None, "POST", &path, b"").await;
    let text = whole(second, WAIT).await;
    assert!(
        text.ends_with("c[2010,\"Another connection still open\"]\n"),
        "{text}"
    );
    assert_eq!(xhr_send(&s, br#"["still here"]"#).await, 204);
    first
        .until(WAIT, |b| b.ends_with(b"a[\"still here\"]\n"))
        .await;
    assert!(
        first.text().ends_with("a[\"still here\"]\n"),
        "the first keeps receiving"
    );
}

#[tokio::test]
async fn heartbeats_come_at_the_interval() {
    let server = ServerProcess::start(&["--echo", "--sockjs-heartbeat", "200ms"]);
    let mut s = open(&server, "/sockjs-test/echo", Transport::XhrStreaming, "").await;
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(s.frame().await, SockFrame::Heartbeat);
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "5 heartbeats took {took:?}"
    );
}

#[tokio::test]
async fn the_ws_prefix_refuses_an_unauthenticated_client() {
    let server = ServerProcess::start_strict(&[]);
    let resp = ask(&server, None, "POST", "/ws/000/x/xhr", b"").await;
    assert_eq!(resp.status, 401);
    let guest = "/ws/000/y/xhr?name=guest";
    let resp = ask(&server, None, "POST", guest, b"").await;
    assert_eq!(resp.status, 401, "no guests without --allow-guests");
}

#[tokio::test]
async fn a_sessions_requests_from_another_address_are_not_found() {
    let server = ServerProcess::start(&["--echo"]);
    let s = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    let other = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    for transport in ["xhr_send", "xhr", "xhr_streaming"] {
        let path = s.url.path(transport);
        let resp = ask(&server, other, "POST", &path, br#"["x"]"#).await;
        assert_eq!(resp.status, 404, "{transport} from another address");
    }
    assert_eq!(xhr_send(&s, br#"["mine"]"#).await, 204);
}

#[tokio::test]
async fn shutdown_ends_streaming_responses_with_a_close_frame() {
    let mut server = ServerProcess::start(&["--echo"]);
    let mut s = open(&server, "/sockjs-test/echo", Transport::XhrStreaming, "").await;
    let polled = open(&server, "/sockjs-test/echo", Transport::Xhr, "").await;
    let mut es = ask(&server, None, "GET", &polled.url.path("eventsource"), b"").await;
    es.until(WAIT, |b| b.len() >= 2).await;
    let start = Instant::now();
    server.terminate();
    assert_eq!(
        s.frame().await,
        SockFrame::Close(1001, "server shutting down".into())
    );
    let es = whole(es, Duration::from_secs(5)).await;
    assert!(
        es.ends_with("data: c[1001,\"server shutting down\"]\r\n\r\n"),
        "{es}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    server.wait_exit(Duration::from_secs(15));
}

/// Opens raw session `id` at `/ws` as guest `name` by polling; the answer's status.
async fn open_raw_status(server: &ServerProcess, id: &str, name: &str) -> u16 {
    let path = format!("/ws/000/{id}/xhr?name={name}");
    ask(server, None, "POST", &path, b"").await.status
}

#[tokio::test]
async fn requests_racing_to_open_one_session_count_it_once() {
    // Each opening request authenticates (a named guest: a storage read) between finding no
    // session and opening one; racing requests for one id used to open one each, the last
    // replacing the others in the table with their apps running on and their addresses'
    // counts never given back.
    let args = [
        "--max-connections-per-ip",
        "8",
        "--sockjs-disconnect-delay",
        "300ms",
    ];
    let server = ServerProcess::start(&args);
    for round in 0..3 {
        let id = format!("race{round}");
        let names: Vec<String> = (0..8).map(|i| format!("racer{round}x{i}")).collect();
        let racing = names.iter().map(|name| open_raw_status(&server, &id, name));
        let statuses = futures_util::future::join_all(racing).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        // Every request is over; the session is swept after the disconnect delay.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    for i in 0..8 {
        let status = open_raw_status(&server, &format!("after{i}"), "late").await;
        assert_eq!(
            status, 200,
            "session {i}: the address's count came back to 0"
        );
    }
}

#[tokio::test]
async fn ipv6_sessions_are_capped_per_64_as_connections_are() {
    let args = [
        "--echo",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "2",
    ];
    let server = ServerProcess::start(&args);
    let open = |id: &'static str, client: &'static str| {
        let path = format!("/sockjs-test/echo/000/{id}/xhr");
        let addr = server.addr();
        async move {
            let xff = [("X-Forwarded-For", client)];
            let resp = request(addr, None, "POST", &path, &xff, b"").await;
            let resp = resp.unwrap_or_else(|e| panic!("{e}"));
            (resp.status, whole(resp, WAIT).await)
        }
    };
    assert_eq!(open("v1", "2001:db8::1").await.0, 200);
    assert_eq!(open("v2", "2001:db8::2").await.0, 200);
    let (status, body) = open("v3", "2001:db8::3").await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many SockJS sessions from your address\n"),
        "one host owns its /64: a new address in it is no new client"
    );
    assert_eq!(open("v4", "2001:db8:0:1::1").await.0, 200, "another /64");
}

#[tokio::test]
async fn a_cookie_from_another_origin_of_the_site_opens_no_session() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    parley_tests::auth::register_ok(addr, "carol").await;
    let login = parley_tests::auth::login_cookie(addr, "carol").await;
    let cookie = parley_tests::auth::cookie_header(&login.cookie);
    // A sibling subdomain's `<script src=…/jsonp?c=f>`: the SameSite=Strict cookie comes
    // along (same site), no Origin does, and the answer is a script the page reads.
    for (n, site) in ["same-site", "cross-site"].into_iter().enumerate() {
        let headers = [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", site)];
        for transport in ["jsonp?c=steal", "htmlfile?c=steal", "eventsource"] {
            let path = format!("/ws/000/sib{n}{}/{transport}", transport.len());
            let resp = request(addr, None, "GET", &path, &headers, b"").await;
            let resp = resp.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status, 403, "{transport} from a {site} page");
        }
    }
    // The page's own requests (same origin, or an old browser that says nothing) still open.
    for (n, site) in [Some("same-origin"), None].into_iter().enumerate() {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(site.map(|s| ("Sec-Fetch-Site", s)));
        let path = format!("/ws/000/own{n}/jsonp?c=cb");
        let resp = request(addr, None, "GET", &path, &headers, b"").await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 200, "{site:?}");
        assert_eq!(whole(resp, WAIT).await, "/**/cb(\"o\");\r\n");
    }
}
