//! Edits, deletions, reactions and replies (docs/protocol.md, docs/stomp.md): each change is an
//! event of the room with its own id, reaching raw and STOMP clients alike, stored, replayed by
//! catch-up in order and shown in history as the message's state; only the author edits, only
//! the author (in time) or a room admin deletes, and changes are rate-limited.

use std::time::Duration;

use parley_tests::auth::*;
use parley_tests::http;
use parley_tests::ServerProcess;
use serde_json::{json, Value};

/// `PATCH path` with a JSON body and a bearer token.
async fn patch_as(server: &ServerProcess, path: &str, token: &str, body: &Value) -> http::Response {
    let auth = bearer(token);
    http::request_json(
        server.addr(),
        "PATCH",
        path,
        &[("Authorization", &auth)],
        body,
    )
    .await
}

/// Sends a raw command with a `ref` and returns its answer: the `ack` or the `error`.
async fn answer(ws: &mut Ws, mut command: Value) -> Value {
    let reference = format!("r{}", rand_ref());
    command["ref"] = json!(reference);
    ws_send(ws, &command).await;
    ws_recv_until(ws, |v| {
        (v["type"] == "ack" || v["type"] == "error") && v["ref"] == reference.as_str()
    })
    .await
}

fn rand_ref() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The next STOMP MESSAGE whose `kind` header is `kind` ("" for a plain message).
async fn stomp_kind(s: &mut Stomp, kind: &str) -> parley_tests::stomp::Frame {
    loop {
        let f = s.recv().await.expect("a MESSAGE");
        if f.command == "MESSAGE" && f.header("kind") == kind {
            return f;
        }
    }
}

struct Room {
    server: ServerProcess,
    alice: String,
    bob: String,
    carol: String,
}

impl Room {
    async fn new(args: &[&str]) -> Room {
        let server = ServerProcess::start_strict(args);
        let alice = account(server.addr(), "alice").await;
        let bob = account(server.addr(), "bob").await;
        let carol = account(server.addr(), "carol").await;
        Room {
            server,
            alice,
            bob,
            carol,
        }
    }

    async fn raw(&self, token: &str) -> Ws {
        let mut ws = ws_bearer(self.server.addr(), token).await;
        ws_join_ok(&mut ws, "lobby").await;
        ws
    }
}

#[tokio::test]
async fn edits_deletions_reactions_and_replies_reach_every_protocol_and_history() {
    let r = Room::new(&[]).await;
    let mut alice = r.raw(&r.alice).await;
    let mut bob = r.raw(&r.bob).await;
    let mut carol = Stomp::with_token(r.server.stomp_addr(), &r.carol, "carol").await;
    carol.subscribe_ok("lobby", "/topic/lobby").await;

    let first = ws_post(&mut alice, "lobby", "helo").await;
    let reply = answer(
        &mut bob,
        json!({"type": "send", "room": "lobby", "body": "hi!", "reply_to": first, "client_id": "b-1"}),
    )
    .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let m = ws_recv_until(&mut alice, |v| v["type"] == "message" && v["body"] == "hi!").await;
    assert_eq!(id_string(&m["reply_to"]), first, "{m}");
    assert_eq!(m["client_id"], "b-1", "{m}");
    let f = stomp_kind(&mut carol, "").await;
    let f = if f.header("reply-to").is_empty() {
        stomp_kind(&mut carol, "").await
    } else {
        f
    };
    assert_eq!(f.header("reply-to"), first, "{f:?}");

    // Alice fixes her typo: an event with its own id, the same everywhere.
    let ack = answer(
        &mut alice,
        json!({"type": "edit", "room": "lobby", "id": first, "body": "hello"}),
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let edit = ws_recv_until(&mut bob, |v| v["type"] == "edit").await;
    assert_eq!(
        (id_string(&edit["target"]), &edit["body"], &edit["from"]),
        (first.clone(), &json!("hello"), &json!("alice")),
        "{edit}"
    );
    assert_eq!(id_string(&edit["id"]), id_string(&ack["id"]), "{edit}");
    let f = stomp_kind(&mut carol, "edit").await;
    assert_eq!(
        (
            f.header("target-id"),
            f.header("message-id"),
            f.body.as_slice()
        ),
        (
            first.as_str(),
            id_string(&ack["id"]).as_str(),
            &b"hello"[..]
        ),
        "{f:?}"
    );

    // Only the author edits; only the author or an admin deletes.
    let no = answer(
        &mut bob,
        json!({"type": "edit", "room": "lobby", "id": first, "body": "x"}),
    )
    .await;
    assert_eq!(no["code"], "forbidden", "{no}");
    let no = answer(
        &mut bob,
        json!({"type": "delete", "room": "lobby", "id": first}),
    )
    .await;
    assert_eq!(no["code"], "forbidden", "{no}");
    let no = answer(
        &mut bob,
        json!({"type": "edit", "room": "lobby", "id": "999", "body": "x"}),
    )
    .await;
    assert_eq!(no["code"], "no_such_message", "{no}");

    // Reactions toggle per user and emoji; STOMP adds explicitly.
    let reply_id = id_string(&reply["id"]);
    let toggle = json!({"type": "react", "room": "lobby", "id": reply_id, "emoji": "👍"});
    for op in ["add", "remove", "add"] {
        assert_eq!(answer(&mut alice, toggle.clone()).await["type"], "ack");
        let e = ws_recv_until(&mut bob, |v| v["type"] == "reaction").await;
        assert_eq!(
            (&e["op"], &e["emoji"], &e["from"]),
            (&json!(op), &json!("👍"), &json!("alice")),
            "{e}"
        );
    }
    let receipt = carol
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("kind", "react"),
                ("target-id", &reply_id),
            ],
            "🎉".as_bytes(),
        )
        .await;
    assert_eq!(receipt.command, "RECEIPT", "{receipt:?}");
    let e = ws_recv_until(&mut alice, |v| {
        v["type"] == "reaction" && v["emoji"] == "🎉"
    })
    .await;
    assert_eq!(
        (&e["from"], &e["op"]),
        (&json!("carol"), &json!("add")),
        "{e}"
    );
    let bad = answer(
        &mut bob,
        json!({"type": "react", "room": "lobby", "id": reply_id, "emoji": "lol"}),
    )
    .await;
    assert_eq!(bad["code"], "invalid_emoji", "{bad}");

    // History shows the state: edited text, the reply, reactions by emoji.
    let page = get_as(r.server.addr(), "/api/rooms/lobby/messages", &r.bob).await;
    page.assert_status(200, "history");
    let messages = page.json()["messages"].as_array().cloned().unwrap();
    assert_eq!(
        messages.len(),
        2,
        "events are not history entries: {messages:?}"
    );
    assert_eq!(
        (&messages[0]["body"], &messages[0]["edited"]),
        (&json!("hello"), &json!(true))
    );
    assert_eq!(id_string(&messages[1]["reply_to"]), first);
    assert_eq!(
        messages[1]["reactions"],
        json!([{"emoji": "👍", "users": ["alice"]}, {"emoji": "🎉", "users": ["carol"]}])
    );

    // Alice deletes her message (REST); a late joiner's catch-up replays everything in order.
    let path = format!("/api/rooms/lobby/messages/{first}");
    delete_as(r.server.addr(), &path, &r.alice)
        .await
        .assert_status(200, "author deletes");
    let d = ws_recv_until(&mut bob, |v| v["type"] == "delete").await;
    assert_eq!(id_string(&d["target"]), first, "{d}");
    let mut late = ws_bearer(r.server.addr(), &r.carol).await;
    ws_send(
        &mut late,
        &json!({"type": "join", "room": "lobby", "since": "0"}),
    )
    .await;
    ws_recv_until(&mut late, |v| v["type"] == "joined").await;
    let mut replay: Vec<Value> = Vec::new();
    while replay.last().is_none_or(|v| v["type"] != "delete") {
        let v = ws_recv(&mut late).await;
        if v["type"] != "presence" {
            replay.push(v);
        }
    }
    let kinds: Vec<&str> = replay.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["message", "message", "edit", "reaction", "reaction", "reaction", "reaction", "delete"],
        "{replay:?}"
    );
    let ids: Vec<u64> = replay
        .iter()
        .map(|v| id_string(&v["id"]).parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {ids:?}"
    );
    assert_eq!(replay[0]["deleted"], true, "{}", replay[0]);
    assert!(
        replay[0].get("body").is_none() && replay[2]["body"] == "",
        "no text kept: {replay:?}"
    );
    // Edits of a deleted message are refused.
    let no = answer(
        &mut alice,
        json!({"type": "edit", "room": "lobby", "id": first, "body": "x"}),
    )
    .await;
    assert_eq!(no["code"], "no_such_message", "{no}");
}

#[tokio::test]
async fn changes_are_limited_in_time_rate_and_size_and_stomp_cannot_forge_them() {
    let r = Room::new(&[
        "--edit-window",
        "1s",
        "--edit-rate",
        "1",
        "--max-body",
        "100",
    ])
    .await;
    let mut alice = r.raw(&r.alice).await;
    let first = ws_post(&mut alice, "lobby", "one").await;
    let edit = |body: &str| json!({"type": "edit", "room": "lobby", "id": first, "body": body});
    let big = "x".repeat(101);
    assert_eq!(
        answer(&mut alice, edit(&big)).await["code"],
        "body_too_large"
    );
    // Bursts of twice the rate, then refused.
    let mut codes = Vec::new();
    for i in 0..4 {
        let a = answer(&mut alice, edit(&format!("v{i}"))).await;
        codes.push(a["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert!(codes.contains(&"rate_limited".to_owned()), "{codes:?}");
    // Two seconds refill the burst (two changes) and end the window.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(answer(&mut alice, edit("late")).await["code"], "too_late");
    patch_as(
        &r.server,
        &format!("/api/rooms/lobby/messages/{first}"),
        &r.alice,
        &json!({"body": "late"}),
    )
    .await
    .assert_status(403, "REST edit after the window");

    // A STOMP SEND cannot pass itself off as edited or deleted, nor name a bad reply.
    let mut s = Stomp::with_token(r.server.stomp_addr(), &r.bob, "bob").await;
    s.subscribe_ok("lobby", "/topic/lobby").await;
    let ok = s
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("edited", "true"),
                ("deleted", "true"),
            ],
            b"plain",
        )
        .await;
    assert_eq!(ok.command, "RECEIPT", "{ok:?}");
    let m = ws_recv_until(&mut alice, |v| v["body"] == "plain").await;
    assert!(
        m.get("edited").is_none() && m.get("deleted").is_none(),
        "{m}"
    );
    let bad = s
        .send_receipt(
            &[("destination", "/topic/lobby"), ("reply-to", "first")],
            b"x",
        )
        .await;
    assert_eq!(bad.command, "ERROR", "{bad:?}");
    let mut s = Stomp::with_token(r.server.stomp_addr(), &r.bob, "bob").await;
    let bad = s
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("kind", "edit"),
                ("target-id", &first),
            ],
            b"mine now",
        )
        .await;
    assert!(
        bad.command == "ERROR" && bad.header("message").starts_with("forbidden"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_new_public_room_is_announced_to_whoever_watches_the_room_list() {
    let r = Room::new(&[]).await;
    let mut watcher = ws_bearer(r.server.addr(), &r.bob).await;
    ws_send(&mut watcher, &json!({"type": "watch_rooms"})).await;
    ws_ping(&mut watcher).await;
    let mut stomp = Stomp::with_token(r.server.stomp_addr(), &r.carol, "carol").await;
    stomp.subscribe_ok("rooms", "/topic/.rooms").await;
    // Created by a join, then by REST; a private room is not announced.
    let mut alice = ws_bearer(r.server.addr(), &r.alice).await;
    ws_join_ok(&mut alice, "fresh").await;
    let private = json!({"name": "hidden", "private": true});
    post_as(r.server.addr(), "/api/rooms", &r.alice, &private)
        .await
        .assert_status(201, "private room");
    let public = json!({"name": "plans", "private": false});
    post_as(r.server.addr(), "/api/rooms", &r.alice, &public)
        .await
        .assert_status(201, "public room");
    for room in ["fresh", "plans"] {
        let v = ws_recv_until(&mut watcher, |v| v["type"] == "room").await;
        assert_eq!(
            (&v["room"], &v["event"], &v["user"]),
            (&json!(room), &json!("created"), &json!("alice")),
            "{v}"
        );
        let f = stomp.recv().await.expect("a room-list MESSAGE");
        assert_eq!(
            (f.header("destination"), f.header("room")),
            ("/topic/.rooms", room),
            "{f:?}"
        );
    }
    let bad = stomp
        .send_receipt(&[("destination", "/topic/.rooms"), ("room", "fake")], b"")
        .await;
    assert_eq!(
        bad.command, "ERROR",
        "only the server writes the room list: {bad:?}"
    );
}
