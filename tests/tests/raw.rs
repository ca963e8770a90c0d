//! The raw JSON protocol at /ws against the real binary, alone and sharing rooms with STOMP.

mod json_client;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::ServerProcess;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use json_client::{raw, recv, send, Ws};

/// Nothing arrives for a short while.
async fn quiet(ws: &mut Ws) {
    if let Ok(Some(Ok(m))) = timeout(Duration::from_millis(300), ws.next()).await {
        panic!("expected silence, got {m:?}");
    }
}

async fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "join", "room": room})).await;
    let joined = recv(ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

#[tokio::test]
async fn raw_and_stomp_clients_share_a_room() {
    let server = ServerProcess::start(&[]);
    let mut bob = StompClient::connect(server.stomp_addr(), "bob").await;
    bob.subscribe("0", "/topic/general").await;
    let mut alice = raw(&server, "alice").await;
    let joined = join(&mut alice, "general").await;
    assert_eq!(joined["members"], json!(["alice", "bob"]));

    send(
        &mut alice,
        json!({"type": "send", "room": "general", "body": "hi bob", "ref": "c1", "from": "mallory"}),
    )
    .await;
    // The echo comes at once; the ack once the message is durable: either may be first.
    let (a, b) = (recv(&mut alice).await, recv(&mut alice).await);
    let (ack, own) = if a["type"] == "ack" { (a, b) } else { (b, a) };
    assert_eq!(
        (&ack["type"], &ack["ref"]),
        (&json!("ack"), &json!("c1")),
        "{ack}"
    );

    assert_eq!(own["type"], "message");
    let at_bob = bob.recv().await.expect("MESSAGE");
    // Same id, sender and timestamp on both protocols.
    assert_eq!(at_bob.header("message-id"), own["id"].as_str().unwrap());
    assert_eq!(own["id"], ack["id"]);
    assert_eq!(at_bob.header("sender"), "alice");
    assert_eq!(own["from"], "alice");
    assert_eq!(at_bob.header("timestamp"), own["ts"].to_string());
    assert_eq!(at_bob.body, b"hi bob");
    assert_eq!(own["room"], "general");

    bob.send(
        "SEND",
        &[
            ("destination", "/topic/general"),
            ("content-type", "text/plain"),
        ],
        b"hi alice",
    )
    .await;
    let m = recv(&mut alice).await;
    assert_eq!(
        (&m["from"], &m["body"], &m["room"]),
        (&json!("bob"), &json!("hi alice"), &json!("general")),
        "{m}"
    );
}

#[tokio::test]
async fn presence_and_typing() {
    let server = ServerProcess::start(&[]);
    let mut alice = raw(&server, "alice").await;
    join(&mut alice, "lobby").await;
    quiet(&mut alice).await; // no presence event about ourselves

    let mut carol = raw(&server, "carol").await;
    let joined = join(&mut carol, "lobby").await;
    assert_eq!(joined["members"], json!(["alice", "carol"]));
    assert_eq!(
        recv(&mut alice).await,
        json!({"type": "presence", "room": "lobby", "user": "carol", "guest": true, "event": "join"})
    );

    // A second tab of carol is not a second member and no new event.
    let mut carol2 = raw(&server, "carol").await;
    join(&mut carol2, "lobby").await;
    send(&mut carol, json!({"type": "typing", "room": "lobby"})).await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"type": "typing", "room": "lobby", "user": "carol", "guest": true})
    );
    // Nobody is told their own typing, in any tab.
    quiet(&mut carol2).await;
    quiet(&mut carol).await;

    send(&mut carol, json!({"type": "leave", "room": "lobby"})).await;
    quiet(&mut alice).await;
    carol2.close(None).await.unwrap();
    assert_eq!(
        recv(&mut alice).await,
        json!({"type": "presence", "room": "lobby", "user": "carol", "guest": true, "event": "leave"})
    );
}

#[tokio::test]
async fn direct_messages_reach_only_the_recipient_on_every_protocol() {
    let server = ServerProcess::start(&[]);
    let mut alice = raw(&server, "alice").await;
    let mut bob_raw = raw(&server, "bob").await;
    let mut bob_stomp = StompClient::connect(server.stomp_addr(), "bob").await;
    bob_stomp.subscribe("dm", "/user/queue/messages").await;
    let mut eve = raw(&server, "eve").await;

    send(
        &mut alice,
        json!({"type": "send", "to": "bob", "body": "psst", "ref": "d1"}),
    )
    .await;
    // Alice gets the ack and, like every session of hers, her own copy (in either order).
    let mut got = [recv(&mut alice).await, recv(&mut alice).await];
    got.sort_by_key(|v| v["type"] != "ack");
    assert_eq!(got[0]["type"], "ack", "{got:?}");
    assert_eq!(
        (&got[1]["from"], &got[1]["to"]),
        (&json!("alice"), &json!("bob")),
        "{got:?}"
    );
    let m = recv(&mut bob_raw).await;
    assert_eq!(
        (&m["to"], &m["from"], &m["body"]),
        (&json!("bob"), &json!("alice"), &json!("psst")),
        "{m}"
    );
    let s = bob_stomp.recv().await.expect("MESSAGE");
    assert_eq!(
        (s.header("sender"), s.header("destination")),
        ("alice", "/user/queue/messages")
    );
    quiet(&mut eve).await;

    // And from STOMP to a raw client.
    let mut carol = StompClient::connect(server.stomp_addr(), "carol").await;
    carol
        .send(
            "SEND",
            &[("destination", "/user/alice/queue/messages")],
            b"from stomp",
        )
        .await;
    let m = recv(&mut alice).await;
    assert_eq!(
        (&m["to"], &m["from"], &m["body"]),
        (&json!("alice"), &json!("carol"), &json!("from stomp"))
    );
}

/// A client that has its 101 already receives its direct messages: the server registers the
/// session while answering the upgrade, not once the connection's task first runs.
#[tokio::test]
async fn a_direct_message_sent_right_after_the_recipient_connects_arrives() {
    let server = ServerProcess::start(&[]);
    let mut alice = raw(&server, "alice").await;
    for i in 0..30 {
        let name = format!("bob{i}");
        let mut bob = raw(&server, &name).await;
        let body = format!("hi {i}");
        let sent = json!({"type": "send", "to": name, "body": body, "ref": format!("d{i}")});
        send(&mut alice, sent).await;
        let m = recv(&mut bob).await;
        assert_eq!(
            (&m["from"], &m["body"]),
            (&json!("alice"), &json!(body)),
            "{m}"
        );
        // Alice's ack and own copy, in either order.
        let mut got = [
            recv(&mut alice).await["type"].clone(),
            recv(&mut alice).await["type"].clone(),
        ];
        got.sort_by_key(|t| t.to_string());
        assert_eq!(got, [json!("ack"), json!("message")]);
    }
}

#[tokio::test]
async fn every_error_is_answered_and_the_connection_stays_open() {
    let server = ServerProcess::start(&["--max-body", "16"]);
    let mut c = raw(&server, "dave").await;
    let cases = [
        (Message::text("{nope"), "bad_json"),
        (Message::text("[1,2]"), "bad_json"),
        (Message::binary(vec![1, 2, 3]), "bad_json"),
        (
            Message::text(json!({"room": "x"}).to_string()),
            "missing_field",
        ),
        (
            Message::text(json!({"type": "dance"}).to_string()),
            "unknown_type",
        ),
        (
            Message::text(json!({"type": "join"}).to_string()),
            "missing_field",
        ),
        (
            Message::text(json!({"type": "join", "room": "bad room"}).to_string()),
            "invalid_room",
        ),
        (
            Message::text(
                json!({"type": "send", "room": "r", "body": "x", "ref": "e1"}).to_string(),
            ),
            "not_joined",
        ),
        (
            Message::text(json!({"type": "send", "to": "not a name", "body": "x"}).to_string()),
            "invalid_user",
        ),
        (
            Message::text(json!({"type": "send", "to": "bob", "body": "x".repeat(17)}).to_string()),
            "body_too_large",
        ),
        (
            Message::text(json!({"type": "send", "body": "x"}).to_string()),
            "missing_field",
        ),
    ];
    for (message, code) in cases {
        c.send(message.clone()).await.unwrap();
        let e = recv(&mut c).await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!(code)),
            "{message:?} → {e}"
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send(
        &mut c,
        json!({"type": "send", "room": "r", "body": "x", "ref": "e1"}),
    )
    .await;
    assert_eq!(
        recv(&mut c).await["ref"],
        "e1",
        "errors echo the client's ref"
    );
    send(&mut c, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut c).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn rate_limit_answers_rate_limited() {
    let server = ServerProcess::start(&["--rate-limit", "5"]);
    let mut c = raw(&server, "fast").await;
    for _ in 0..30 {
        send(&mut c, json!({"type": "ping"})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..30 {
        let m = recv(&mut c).await;
        codes.push(
            m["code"]
                .as_str()
                .unwrap_or(m["type"].as_str().unwrap())
                .to_owned(),
        );
    }
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!(
        (10..=20).contains(&limited),
        "burst of 10 then limited: {codes:?}"
    );
}

#[tokio::test]
async fn a_client_that_keeps_misbehaving_is_closed_with_1008() {
    let server = ServerProcess::start(&[]);
    let mut c = raw(&server, "spam").await;
    for _ in 0..20 {
        c.send(Message::text("garbage")).await.unwrap();
    }
    loop {
        match timeout(WAIT, c.next()).await.expect("not closed") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn invalid_names_are_refused_and_guests_get_one() {
    let server = ServerProcess::start(&[]);
    let bad = tokio_tungstenite::connect_async(server.ws_url("/ws?name=no%20spaces")).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected 400, got {other:?}"),
    }
    let (mut guest, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap();
    let joined = join(&mut guest, "g").await;
    let name = joined["members"][0].as_str().unwrap();
    assert!(name.starts_with("guest-"), "{joined}");
}

#[tokio::test]
async fn a_send_and_a_close_in_one_write_still_sends() {
    use parley_tests::raw::{Frame, RawWebSocket};
    let server = ServerProcess::start(&[]);
    let mut bob = StompClient::connect(server.stomp_addr(), "bob").await;
    bob.subscribe("0", "/topic/general").await;
    let (mut alice, _) = RawWebSocket::connect(server.addr(), "/ws?name=alice", &[]).await;
    alice
        .send(&Frame::text(r#"{"type":"join","room":"general"}"#))
        .await;
    let joined = alice.expect_frame().await;
    assert!(
        String::from_utf8_lossy(&joined.payload).contains("\"joined\""),
        "{joined:?}"
    );
    // The message and the close frame in one write: the server reads them together.
    let send = Frame::text(r#"{"type":"send","room":"general","body":"last words"}"#);
    let mut bytes = send.encode(Some([1, 2, 3, 4]));
    bytes.extend(Frame::close(1000, "bye").encode(Some([5, 6, 7, 8])));
    alice.send_bytes(&bytes).await;
    let m = bob.recv().await.expect("MESSAGE");
    assert_eq!(m.body, b"last words", "{m:?}");
}
