//! Durable history: acknowledged messages survive kill -9, catch-up after reconnect has no gap
//! and no duplicate, history pages backwards, and the REST API.

mod json_client;

use std::time::Duration;

use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use json_client::{raw, recv, send, Ws};

/// Receives until `pred` holds, returning what matched; other messages are skipped.
async fn recv_until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = recv(ws).await;
        if pred(&v) {
            return v;
        }
    }
}

async fn join(ws: &mut Ws, room: &str, since: Option<u64>) {
    let mut msg = json!({"type": "join", "room": room});
    if let Some(since) = since {
        msg["since"] = json!(since.to_string());
    }
    send(ws, msg).await;
    recv_until(ws, |v| v["type"] == "joined").await;
}

fn id(v: &Value) -> u64 {
    v["id"]
        .as_str()
        .expect("id is a string")
        .parse()
        .expect("id is a number")
}

/// Sends `count` messages and waits for every ack; returns the acked ids.
async fn send_acked(ws: &mut Ws, room: &str, count: usize, prefix: &str) -> Vec<u64> {
    for i in 0..count {
        send(ws, json!({"type": "send", "room": room, "body": format!("{prefix}{i}"), "ref": format!("{prefix}{i}")})).await;
    }
    let mut acked = Vec::new();
    while acked.len() < count {
        let v = recv(ws).await;
        if v["type"] == "ack" {
            acked.push(id(&v));
        }
    }
    acked
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let data = fresh_data_dir();
    let mut server = ServerProcess::start_with_data(&data, &[]);
    let mut alice = raw(&server, "alice").await;
    join(&mut alice, "durable", None).await;
    let acked = send_acked(&mut alice, "durable", 200, "m").await;
    // STOMP receipts also mean durable.
    let mut bob = StompClient::connect(server.stomp_addr(), "bob").await;
    bob.send(
        "SEND",
        &[("destination", "/topic/durable"), ("receipt", "r1")],
        b"from stomp",
    )
    .await;
    assert_eq!(
        bob.recv().await.expect("RECEIPT").header("receipt-id"),
        "r1"
    );

    server.signal(libc::SIGKILL);
    let status = server.wait_exit(WAIT);
    assert!(!status.success(), "killed, not exited");

    let server = ServerProcess::start_with_data(&data, &[]);
    let mut carol = raw(&server, "carol").await;
    send(
        &mut carol,
        json!({"type": "history", "room": "durable", "limit": 500}),
    )
    .await;
    let history = recv_until(&mut carol, |v| v["type"] == "history").await;
    let messages = history["messages"].as_array().unwrap();
    let ids: Vec<u64> = messages.iter().map(id).collect();
    for a in &acked {
        assert!(ids.contains(a), "acknowledged message {a} lost");
    }
    assert!(messages
        .iter()
        .any(|m| m["body"] == "from stomp" && m["from"] == "bob"));
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {ids:?}"
    );
    // Numbering continues after the restart, never backwards.
    join(&mut carol, "durable", None).await;
    let next = send_acked(&mut carol, "durable", 1, "after").await[0];
    assert_eq!(next, ids.last().unwrap() + 1);
}

#[tokio::test]
async fn catch_up_has_no_gap_and_no_duplicate_while_others_keep_sending() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let mut writer = raw(&server, "writer").await;
    join(&mut writer, "busy", None).await;
    let mut reader = raw(&server, "reader").await;
    join(&mut reader, "busy", None).await;
    let first = send_acked(&mut writer, "busy", 20, "a").await;
    // The reader saw everything up to here, then drops off.
    let mut seen = 0;
    while seen < *first.last().unwrap() {
        let v = recv(&mut reader).await;
        if v["type"] == "message" {
            seen = id(&v);
        }
    }
    drop(reader);

    // Messages keep coming while the reader is away and while it reconnects.
    let sender = tokio::spawn(async move {
        let ids = send_acked(&mut writer, "busy", 300, "b").await;
        (writer, ids)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut reader = raw(&server, "reader").await;
    join(&mut reader, "busy", Some(seen)).await;
    let (_writer, sent) = timeout(WAIT, sender).await.unwrap().unwrap();
    let last = *sent.last().unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let v = recv(&mut reader).await;
        if v["type"] == "message" {
            got.push(id(&v));
        }
    }
    let expected: Vec<u64> = (seen + 1..=last).collect();
    assert_eq!(got, expected, "replay then live: every id once, in order");
}

#[tokio::test]
async fn history_pages_backwards() {
    let server = ServerProcess::start(&[]);
    let mut c = raw(&server, "pager").await;
    join(&mut c, "pages", None).await;
    let ids = send_acked(&mut c, "pages", 25, "p").await;
    send(
        &mut c,
        json!({"type": "history", "room": "pages", "limit": 10}),
    )
    .await;
    let page = recv_until(&mut c, |v| v["type"] == "history").await;
    let page_ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(page_ids, ids[15..].to_vec(), "newest last");
    send(
        &mut c,
        json!({"type": "history", "room": "pages", "before": page_ids[0].to_string(), "limit": 10}),
    )
    .await;
    let older = recv_until(&mut c, |v| v["type"] == "history").await;
    let older_ids: Vec<u64> = older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(older_ids, ids[5..15].to_vec());
    let m = &page["messages"][0];
    assert_eq!(
        (&m["type"], &m["room"], &m["from"]),
        (&json!("message"), &json!("pages"), &json!("pager"))
    );
}

/// A REST call with an account's bearer token.
async fn http(
    server: &ServerProcess,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap();
    (status, json)
}

#[tokio::test]
async fn rest_rooms_and_messages() {
    let server = ServerProcess::start(&[]);
    let token = parley_tests::auth::account(server.addr(), "owner").await;
    assert_eq!(
        http(
            &server,
            &token,
            "POST",
            "/api/rooms",
            r#"{"name":"plans","private":false}"#
        )
        .await
        .0,
        201
    );
    assert_eq!(
        http(&server, &token, "POST", "/api/rooms", r#"{"name":"plans"}"#)
            .await
            .0,
        409
    );
    assert_eq!(
        http(
            &server,
            &token,
            "POST",
            "/api/rooms",
            r#"{"name":"bad name"}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        http(&server, &token, "POST", "/api/rooms", "not json")
            .await
            .0,
        400
    );
    // Joining creates a room, even before anything is said in it.
    let mut lurker = StompClient::connect(server.stomp_addr(), "lurker").await;
    lurker.subscribe("q", "/topic/quiet").await;
    let mut c = raw(&server, "poster").await;
    join(&mut c, "chatter", None).await;
    let ids = send_acked(&mut c, "chatter", 3, "x").await;
    let (status, rooms) = http(&server, &token, "GET", "/api/rooms", "").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["chatter", "plans", "quiet"],
        "explicit rooms and rooms created by joining"
    );
    let (status, page) = http(
        &server,
        &token,
        "GET",
        &format!("/api/rooms/chatter/messages?before={}&limit=50", ids[2]),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let got: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(got, ids[..2].to_vec());
    assert_eq!(
        http(
            &server,
            &token,
            "GET",
            "/api/rooms/chatter/messages?limit=x",
            ""
        )
        .await
        .0,
        400
    );
}

/// STOMP catch-up: SUBSCRIBE with `since` replays stored messages after that id, then goes live,
/// with no gap and no duplicate while another client keeps sending.
#[tokio::test]
async fn stomp_subscribe_since_replays_then_goes_live() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let mut writer = raw(&server, "writer").await;
    join(&mut writer, "stompy", None).await;
    send_acked(&mut writer, "stompy", 10, "a").await;
    let sender = tokio::spawn(async move {
        let ids = send_acked(&mut writer, "stompy", 200, "b").await;
        (writer, ids)
    });
    let mut reader = StompClient::connect(server.stomp_addr(), "reader").await;
    reader
        .send(
            "SUBSCRIBE",
            &[
                ("id", "r"),
                ("destination", "/topic/stompy"),
                ("since", "3"),
                ("receipt", "s"),
            ],
            b"",
        )
        .await;
    let (_writer, sent) = timeout(WAIT, sender).await.unwrap().unwrap();
    let last = *sent.last().unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let f = reader.recv().await.expect("frame");
        match f.command.as_str() {
            "MESSAGE" => {
                assert_eq!(
                    (f.header("subscription"), f.header("destination")),
                    ("r", "/topic/stompy")
                );
                got.push(f.header("message-id").parse::<u64>().unwrap());
            }
            "RECEIPT" => {}
            other => panic!("unexpected {other}: {f:?}"),
        }
    }
    assert_eq!(got, (4..=last).collect::<Vec<_>>());

    // A malformed catch-up request is an ERROR like any other.
    let mut bad = StompClient::connect(server.stomp_addr(), "bad").await;
    bad.send(
        "SUBSCRIBE",
        &[
            ("id", "x"),
            ("destination", "/topic/stompy"),
            ("since", "yesterday"),
        ],
        b"",
    )
    .await;
    assert_eq!(bad.recv().await.expect("ERROR").command, "ERROR");
}

#[tokio::test]
async fn rest_members_lists_who_is_present() {
    let server = ServerProcess::start(&[]);
    let token = parley_tests::auth::account(server.addr(), "reader").await;
    let mut a = raw(&server, "ann").await;
    join(&mut a, "hall", None).await;
    let mut b = StompClient::connect(server.stomp_addr(), "ben").await;
    b.subscribe("h", "/topic/hall").await;
    let (status, members) = http(&server, &token, "GET", "/api/rooms/hall/members", "").await;
    assert_eq!((status, members), (200, json!(["ann", "ben"])));
    assert_eq!(
        http(&server, &token, "GET", "/api/rooms/bad%20room/members", "")
            .await
            .0,
        400
    );
}
