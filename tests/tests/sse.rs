//! The SSE room feed (`GET /api/rooms/<room>/events`) and posting over HTTP
//! (`POST /api/rooms/<room>/messages`), against the real binary: resume without gap or
//! duplicate while a WebSocket client keeps sending, access, heartbeats, named presence and
//! typing events, and posts that are durable once answered. SSE is read with the tests' own
//! HTTP/1.1 client (`parley_tests::sockjs::http`), cut into SSE fields here.

mod json_client;

use std::time::Duration;

use parley_tests::auth::{account, bearer};
use parley_tests::http::{get, post_json};
use parley_tests::sse::Sse;
use parley_tests::stomp::WAIT;
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::{json, Value};
use tokio::time::Instant;

use json_client::{raw, recv, send, Ws};

/// A feed of `room` as the holder of `token`, checked open (200, `: ok` first).
async fn feed(server: &ServerProcess, room: &str, token: &str, extra: &[(&str, &str)]) -> Sse {
    let auth = bearer(token);
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    feed_at(server, &format!("/api/rooms/{room}/events"), &headers).await
}

async fn feed_at(server: &ServerProcess, path: &str, headers: &[(&str, &str)]) -> Sse {
    let mut sse = Sse::open(server.addr(), path, headers).await;
    let resp = &sse.resp;
    assert_eq!(resp.status, 200, "{:?}", resp.headers);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    let first = sse.next().await.expect("the feed opens");
    assert_eq!(first.comment.as_deref(), Some("ok"));
    sse
}

/// A raw `/ws` guest joined to `room` (creating it).
async fn joined(server: &ServerProcess, name: &str, room: &str) -> Ws {
    let mut ws = raw(server, name).await;
    send(&mut ws, json!({"type": "join", "room": room})).await;
    recv_until(&mut ws, |v| v["type"] == "joined").await;
    ws
}

async fn recv_until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = recv(ws).await;
        if pred(&v) {
            return v;
        }
    }
}

/// Sends `count` messages to `room` and waits for their acks; the acked ids.
async fn send_acked(ws: &mut Ws, room: &str, count: usize) -> Vec<u64> {
    for i in 0..count {
        send(
            ws,
            json!({"type": "send", "room": room, "body": format!("m{i}")}),
        )
        .await;
    }
    let mut acked = Vec::new();
    while acked.len() < count {
        let v = recv_until(ws, |v| v["type"] == "ack").await;
        acked.push(v["id"].as_str().unwrap().parse().unwrap());
    }
    acked
}

#[tokio::test]
async fn resume_with_last_event_id_has_no_gap_and_no_duplicate() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let token = account(server.addr(), "reader").await;
    let mut writer = joined(&server, "writer", "busy").await;
    let mut first = feed(&server, "busy", &token, &[]).await;
    // The writer keeps sending, paced, across the reader's reconnect.
    const TOTAL: usize = 300;
    let sending = tokio::spawn(async move {
        for i in 0..TOTAL {
            let body = format!("n{i}");
            send(
                &mut writer,
                json!({"type": "send", "room": "busy", "body": body}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut last = 0;
        for _ in 0..TOTAL {
            let ack = recv_until(&mut writer, |v| v["type"] == "ack").await;
            last = ack["id"].as_str().unwrap().parse::<u64>().unwrap();
        }
        last
    });
    let mut ids = Vec::new();
    while ids.len() < 40 {
        let event = first.next_event().await;
        assert_eq!(event.json()["type"], "message");
        assert_eq!(event.json()["id"].as_str(), event.id.as_deref());
        ids.push(event.id());
    }
    drop(first);
    let last_seen = ids.last().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(50)).await; // it keeps sending meanwhile
    let mut second = feed(&server, "busy", &token, &[("Last-Event-ID", &last_seen)]).await;
    let last = sending.await.expect("the writer");
    while *ids.last().unwrap() < last {
        ids.push(second.next_event().await.id());
    }
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(ids, expected, "every id once, in order");
    assert_eq!(last, TOTAL as u64);
}

#[tokio::test]
async fn since_resumes_and_no_resume_point_starts_live() {
    let server = ServerProcess::start(&[]);
    let token = account(server.addr(), "reader").await;
    let mut writer = joined(&server, "writer", "hall").await;
    assert_eq!(
        send_acked(&mut writer, "hall", 5).await,
        vec![1, 2, 3, 4, 5]
    );
    let path = format!("/api/rooms/hall/events?since=3&access_token={token}");
    let mut resumed = feed_at(&server, &path, &[]).await;
    let mut live = feed(&server, "hall", &token, &[]).await;
    assert_eq!(send_acked(&mut writer, "hall", 1).await, vec![6]);
    let replayed: Vec<u64> = vec![
        resumed.next_event().await.id(),
        resumed.next_event().await.id(),
        resumed.next_event().await.id(),
    ];
    assert_eq!(replayed, vec![4, 5, 6]);
    let first_live = live.next_event().await;
    assert_eq!(first_live.id(), 6, "no backlog without a resume point");
    assert_eq!(first_live.json()["body"], "m0");
    assert_eq!(first_live.json()["from"], "writer");
}

#[tokio::test]
async fn private_rooms_are_refused_and_credentials_are_required() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    let (alice, bob) = (account(addr, "alice").await, account(addr, "bob").await);
    let den = json!({"name": "den", "private": true});
    let auth = bearer(&alice);
    post_json(addr, "/api/rooms", &[("Authorization", &auth)], &den)
        .await
        .assert_status(201, "create den");
    let bob_auth = bearer(&bob);
    let history = get(
        addr,
        "/api/rooms/den/messages",
        &[("Authorization", &bob_auth)],
    )
    .await;
    let refused = Sse::open(
        addr,
        "/api/rooms/den/events",
        &[("Authorization", &bob_auth)],
    )
    .await;
    assert_eq!(
        refused.resp.status, history.status,
        "the history API's answer"
    );
    assert_eq!(refused.resp.status, 403);
    feed(&server, "den", &alice, &[]).await;
    let anonymous = Sse::open(addr, "/api/rooms/den/events", &[]).await;
    assert_eq!(anonymous.resp.status, 401);
    let bad = Sse::open(addr, "/api/rooms/den/events?access_token=x.y.z", &[]).await;
    assert_eq!(bad.resp.status, 401);
    let missing = Sse::open(
        addr,
        "/api/rooms/nowhere/events",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(missing.resp.status, 404, "a GET creates no room");
}

#[tokio::test]
async fn a_post_is_what_websockets_receive_and_survives_kill_9() {
    let data = fresh_data_dir();
    let mut server = ServerProcess::start_with_data(&data, &[]);
    let addr = server.addr();
    let token = account(addr, "poster").await;
    let mut ws = joined(&server, "watcher", "news").await;
    let auth = bearer(&token);
    let body = json!({"body": "hello over http", "client_id": "c-1"});
    let posted = post_json(
        addr,
        "/api/rooms/news/messages",
        &[("Authorization", &auth)],
        &body,
    )
    .await;
    posted.assert_status(201, "post");
    let answer = posted.json();
    server.signal(libc::SIGKILL);
    let live = recv_until(&mut ws, |v| v["type"] == "message").await;
    assert_eq!(live["id"], answer["id"]);
    assert_eq!(live["from"], answer["sender"]);
    assert_eq!(live["ts"], answer["ts"]);
    assert_eq!(live["client_id"], "c-1");
    assert_eq!(answer["room"], "news");
    assert_eq!(answer["sender"], "poster");
    assert!(!server.wait_exit(WAIT).success(), "killed");

    let server = ServerProcess::start_with_data(&data, &[]);
    let history = get(
        server.addr(),
        "/api/rooms/news/messages",
        &[("Authorization", &auth)],
    )
    .await;
    history.assert_status(200, "history");
    let messages = history.json()["messages"].as_array().unwrap().clone();
    assert!(
        messages
            .iter()
            .any(|m| m["id"] == answer["id"] && m["body"] == "hello over http"),
        "the acknowledged post is stored: {messages:?}"
    );
}

#[tokio::test]
async fn posts_obey_the_body_and_rate_limits() {
    let server = ServerProcess::start(&["--max-body", "100", "--rate-limit", "1"]);
    let addr = server.addr();
    let token = account(addr, "poster").await;
    let _room = joined(&server, "someone", "small").await;
    let auth = bearer(&token);
    let headers = [("Authorization", auth.as_str())];
    let path = "/api/rooms/small/messages";
    let long = json!({"body": "x".repeat(101)});
    let refused = post_json(addr, path, &headers, &long).await;
    refused.assert_status(413, "over --max-body");
    assert!(refused.json()["error"].is_string());
    let nowhere = "/api/rooms/nowhere/messages";
    let missing = post_json(addr, nowhere, &headers, &json!({"body": "hi"})).await;
    missing.assert_status(404, "posting creates no room");
    let guest = post_json(addr, path, &[], &json!({"body": "hi"})).await;
    guest.assert_status(401, "posting needs an account");
    // Per account, a burst of twice the rate passes; the next is refused.
    let other = bearer(&account(addr, "burst").await);
    let headers = [("Authorization", other.as_str())];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post_json(addr, path, &headers, &json!({"body": "hi"}))
                .await
                .status,
        );
    }
    assert_eq!(statuses, vec![201, 201, 429]);
}

#[tokio::test]
async fn heartbeats_arrive_while_idle() {
    let server = ServerProcess::start(&["--sse-heartbeat", "200ms"]);
    let token = account(server.addr(), "reader").await;
    let _room = joined(&server, "someone", "quiet").await;
    let mut sse = feed(&server, "quiet", &token, &[]).await;
    for _ in 0..3 {
        let beat = sse.next_within(Duration::from_secs(2)).await.expect("open");
        assert_eq!(beat.comment.as_deref(), Some("hb"), "{beat:?}");
    }
}

#[tokio::test]
async fn presence_and_typing_are_named_events() {
    let server = ServerProcess::start(&[]);
    let token = account(server.addr(), "reader").await;
    let _owner = joined(&server, "owner", "lounge").await;
    let mut sse = feed(&server, "lounge", &token, &[]).await;
    let mut bob = joined(&server, "bob", "lounge").await;
    let presence = sse.next_event().await;
    assert_eq!(presence.event.as_deref(), Some("presence"));
    assert_eq!(presence.id, None);
    assert_eq!(
        presence.json(),
        json!({"type": "presence", "room": "lounge", "user": "bob", "event": "join", "guest": true})
    );
    send(&mut bob, json!({"type": "typing", "room": "lounge"})).await;
    let typing = sse.next_event().await;
    assert_eq!(typing.event.as_deref(), Some("typing"));
    assert_eq!(typing.id, None);
    assert_eq!(typing.json()["user"], "bob");
    assert_eq!(typing.json()["type"], "typing");
}

#[tokio::test]
async fn shutdown_ends_the_feed() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "5s"]);
    let token = account(server.addr(), "reader").await;
    // The room stays once its creator leaves; no WebSocket holds the shutdown up.
    drop(joined(&server, "someone", "closing").await);
    let mut sse = feed(&server, "closing", &token, &[]).await;
    let asked = Instant::now();
    server.terminate();
    while sse.next().await.is_some() {}
    let ended = asked.elapsed();
    assert!(server.wait_exit(WAIT).success(), "a clean exit");
    assert!(
        ended < Duration::from_secs(2),
        "ended at once, not after the grace: {ended:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(4), "exit held up");
}
