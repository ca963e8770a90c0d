//! Socket.IO (Engine.IO 4) against the real binary, for what the Node suites
//! (tests/interop/js/socketio*.test.mjs: the protocol test suites, the differential test against
//! the reference server, socket.io-client) do not show: every bound a client can push on
//! (payload size, sessions in all and per address, what waits for a client that stops
//! polling), sessions bound to their address, Origin and credentials, and sessions leaving the
//! table when they end.

mod json_client;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_tests::auth::{login_ok, register_ok};
use parley_tests::http::get;
use parley_tests::socketio::{ask, Polling};
use parley_tests::stomp::WAIT;
use parley_tests::ServerProcess;
use serde_json::{json, Value};
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use json_client::{raw, recv, send};

const CHAT: &str = "/socket.io/";

fn from(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// `socketio_sessions` of `/stats`.
async fn sessions(server: &ServerProcess) -> u64 {
    let stats = get(server.addr(), "/stats", &[]).await.json();
    stats["socketio_sessions"]
        .as_u64()
        .expect("socketio_sessions")
}

/// Waits until `/stats` counts `n` sessions.
async fn until_sessions(server: &ServerProcess, n: u64) {
    let deadline = Instant::now() + WAIT;
    while sessions(server).await != n {
        assert!(
            Instant::now() < deadline,
            "still {} sessions, not {n}",
            sessions(server).await
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// A polling session connected to the chat namespace as guest `name`, in `room`.
async fn chat_in(server: &ServerProcess, name: &str, room: &str) -> Polling {
    let session = Polling::open(server.addr(), None, CHAT, "")
        .await
        .expect("handshake");
    let connect = format!("40{}", json!({"name": name}));
    assert_eq!(session.post(&[&connect]).await.status, 200);
    session.until(WAIT, |p| p.starts_with("40{")).await;
    let join = format!("421{}", json!(["join", {"room": room}]));
    session.post(&[&join]).await;
    session.until(WAIT, |p| p.starts_with("431[")).await;
    session
}

#[tokio::test]
async fn a_payload_past_max_payload_is_refused_and_ends_the_session() {
    let server = ServerProcess::start(&["--socketio-max-payload", "4096", "--public-stats"]);
    let session = Polling::open(server.addr(), None, CHAT, "")
        .await
        .expect("handshake");
    assert_eq!(session.open["maxPayload"], 4096);
    let big = format!("4{}", "x".repeat(5000));
    assert_eq!(session.post(&[&big]).await.status, 413);
    // A poll that finds the session still closing gets Engine.IO's close packet; the session
    // is unknown from then on.
    let mut after = session.poll().await;
    if (after.status, after.text()) == (200, "1".to_owned()) {
        after = session.poll().await;
    }
    assert_eq!(
        (after.status, after.text()),
        (
            400,
            r#"{"code":1,"message":"Session ID unknown"}"#.to_owned()
        )
    );
    until_sessions(&server, 0).await;

    // The same bound on the WebSocket transport: the message is refused with 1009.
    let url = format!("{}?EIO=4&transport=websocket", server.ws_url(CHAT));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let open = timeout(WAIT, ws.next())
        .await
        .expect("open packet")
        .expect("open")
        .expect("ws");
    assert!(open.to_text().expect("text").starts_with("0{"));
    ws.send(Message::text(big)).await.expect("send");
    let closed = loop {
        match timeout(WAIT, ws.next()).await.expect("close") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(closed, Some(1009));
    until_sessions(&server, 0).await;
}

#[tokio::test]
async fn sessions_are_capped_in_all_and_per_address() {
    let server = ServerProcess::start(&[
        "--socketio-max-sessions",
        "4",
        "--max-connections-per-ip",
        "2",
        "--public-stats",
    ]);
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            Polling::open(addr, from(1), CHAT, "")
                .await
                .expect("within the cap"),
        );
    }
    let refused = Polling::open(addr, from(1), CHAT, "")
        .await
        .expect_err("over the per-address cap");
    assert_eq!(refused.status, 429, "{}", refused.text());
    for _ in 0..2 {
        held.push(
            Polling::open(addr, from(2), CHAT, "")
                .await
                .expect("another address"),
        );
    }
    let full = Polling::open(addr, from(3), CHAT, "")
        .await
        .expect_err("over the server's cap");
    assert_eq!(full.status, 503, "{}", full.text());
    // A session that ends frees its place.
    held[0].post(&["1"]).await;
    until_sessions(&server, 3).await;
    Polling::open(addr, from(3), CHAT, "")
        .await
        .expect("a place again");
}

#[tokio::test]
async fn a_session_answers_only_the_address_that_opened_it() {
    let server = ServerProcess::start(&[]);
    let session = Polling::open(server.addr(), from(1), CHAT, "")
        .await
        .expect("handshake");
    let stranger = Polling {
        from: from(2),
        ..session.clone()
    };
    let answer = stranger.poll().await;
    assert_eq!(
        (answer.status, answer.text()),
        (
            400,
            r#"{"code":1,"message":"Session ID unknown"}"#.to_owned()
        )
    );
    assert_eq!(stranger.post(&["40"]).await.status, 400);
    // The owner's session is untouched.
    assert_eq!(session.post(&[r#"40{"name":"owner"}"#]).await.status, 200);
    session.until(WAIT, |p| p.starts_with("40{")).await;
}

#[tokio::test]
async fn a_client_that_stops_polling_is_a_slow_consumer_and_others_carry_on() {
    let server = ServerProcess::start(&[
        "--outbox-bytes",
        "65536",
        "--rate-limit",
        "0",
        "--public-stats",
    ]);
    let stalled = chat_in(&server, "stalled", "flood").await;
    let steady = chat_in(&server, "steady", "flood").await;
    let mut sender = raw(&server, "sender").await;
    send(&mut sender, json!({"type": "join", "room": "flood"})).await;
    while recv(&mut sender).await["type"] != "joined" {}
    // 100 KiB in batches of 10 KiB: more than the stalled client's outbox (64 KiB) holds; the
    // steady client, polling between batches, never holds more than a batch.
    let body = "y".repeat(1024);
    for batch in 0..10 {
        for i in 0..10 {
            let reference = format!("{batch}-{i}");
            send(
                &mut sender,
                json!({"type": "send", "room": "flood", "body": body, "ref": reference}),
            )
            .await;
        }
        let mut got = 0;
        steady
            .until(WAIT, |p| {
                got += usize::from(p.starts_with(r#"42["message""#));
                got == 10
            })
            .await;
    }
    // The stalled one held more than its outbox: its session was closed as a slow consumer,
    // and what it held was given back.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = stalled.poll().await;
        if answer.status == 400 || answer.packets().last().is_some_and(|p| p == "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled session is still open"
        );
    }
    until_sessions(&server, 1).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_at_its_ping_timeout() {
    let server = ServerProcess::start(&[
        "--socketio-ping-interval",
        "300ms",
        "--socketio-ping-timeout",
        "200ms",
        "--public-stats",
    ]);
    let session = Polling::open(server.addr(), None, CHAT, "")
        .await
        .expect("handshake");
    assert_eq!(session.open["pingInterval"], 300);
    // A client that answers pings stays.
    for _ in 0..3 {
        let answer = session.poll().await;
        assert_eq!(answer.text(), "2");
        assert_eq!(session.post(&["3"]).await.status, 200);
    }
    assert_eq!(sessions(&server).await, 1);
    sleep(Duration::from_millis(700)).await;
    assert_eq!(
        session.poll().await.status,
        400,
        "closed at the ping timeout"
    );
    assert_eq!(sessions(&server).await, 0);
}

#[tokio::test]
async fn origins_and_credentials_are_checked_as_for_every_protocol() {
    let server = ServerProcess::start_strict(&["--allowed-origin", "https://chat.example"]);
    let addr = server.addr();
    let handshake = format!("{CHAT}?EIO=4&transport=polling");
    let other = [("Origin", "https://evil.example")];
    let refused = ask(addr, None, "GET", &handshake, &other, b"")
        .await
        .expect("answer");
    assert_eq!(
        (refused.status, refused.text()),
        (403, r#"{"code":4,"message":"Forbidden"}"#.to_owned())
    );

    // No guests here: without credentials the CONNECT is refused, with a bad token too.
    let session = Polling::open(addr, None, CHAT, "")
        .await
        .expect("handshake");
    session.post(&["40"]).await;
    let seen = session.until(WAIT, |p| p.starts_with("44")).await;
    let error: Value = serde_json::from_str(&seen.last().expect("packet")[2..]).expect("json");
    assert_eq!(error["data"]["code"], "unauthorized", "{error}");
    session.post(&[r#"40{"token":"not-a-jwt"}"#]).await;
    session.until(WAIT, |p| p.starts_with("44")).await;

    // An account's token in the CONNECT's auth.
    register_ok(addr, "sioalice").await;
    let tokens = login_ok(addr, "sioalice").await;
    let connect = format!("40{}", json!({"token": tokens.access}));
    session.post(&[&connect]).await;
    session.until(WAIT, |p| p.starts_with("40{")).await;
    let ask_who = format!("427{}", json!(["join", {"room": "members"}]));
    session.post(&[&ask_who]).await;
    let joined = session.until(WAIT, |p| p.starts_with("437[")).await;
    let joined: Value = serde_json::from_str(&joined.last().expect("ack")[3..]).expect("json");
    assert_eq!(joined[0]["members"], json!(["sioalice"]), "{joined}");

    // A cookie alone opens no WebSocket without an Origin (cross-site WebSocket hijacking).
    let mut req = format!("{}?EIO=4&transport=websocket", server.ws_url(CHAT))
        .into_client_request()
        .expect("request");
    let cookie = format!("parley_session={}", tokens.refresh);
    req.headers_mut()
        .insert("cookie", cookie.parse().expect("header"));
    let refused = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("403"), "{refused}");
}

#[tokio::test]
async fn rate_limits_hold_and_other_namespaces_are_refused() {
    let server = ServerProcess::start(&["--rate-limit", "5"]);
    let session = chat_in(&server, "eager", "busy").await;
    let sends: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "42{}{}",
                100 + i,
                json!(["send", {"room": "busy", "body": "x"}])
            )
        })
        .collect();
    let sends: Vec<&str> = sends.iter().map(String::as_str).collect();
    session.post(&sends).await;
    // Past the rate, sends are refused in their acks; the first ones were stored.
    let (mut limited, mut stored) = (false, false);
    session
        .until(WAIT, |p| {
            limited |= p.starts_with("43") && p.contains("rate_limited");
            stored |= p.starts_with("43") && p.contains(r#""type":"ack""#);
            limited && stored
        })
        .await;
    // Another namespace is refused, as the reference server refuses unknown ones.
    session.post(&["40/admin,"]).await;
    let refused = session.until(WAIT, |p| p.starts_with("44/admin,")).await;
    assert_eq!(
        refused.last().map(String::as_str),
        Some(r#"44/admin,{"message":"Invalid namespace"}"#)
    );
}
