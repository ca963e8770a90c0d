//! Idempotent sends (docs/protocol.md, docs/stomp.md): a message sent with the client's own id
//! and sent again — on the same connection, after a reconnect, after a server restart, over
//! STOMP — is one message; every retry gets the first one's acknowledgement.

use std::time::Duration;

use parley_tests::auth::*;
use serde_json::{json, Value};

/// Sends `body` to `lobby` with `client_id`; the `ack`'s id.
async fn send_once(ws: &mut Ws, body: &str, client_id: &str, reference: &str) -> String {
    ws_send(
        ws,
        &json!({"type": "send", "room": "lobby", "body": body, "client_id": client_id, "ref": reference}),
    )
    .await;
    let ack = ws_recv_until(ws, |v| {
        (v["type"] == "ack" || v["type"] == "error") && v["ref"] == reference
    })
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    id_string(&ack["id"])
}

/// The messages of `lobby`'s history.
async fn history(addr: std::net::SocketAddr, token: &str) -> Vec<Value> {
    let r = get_as(addr, "/api/rooms/lobby/messages", token).await;
    r.assert_status(200, "history");
    r.json()["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_retried_send_is_one_message_across_reconnects_restarts_and_protocols() {
    let data = scratch_dir();
    let mut server = SpawnedServer::start(&data, &[], &[]);
    let alice = account(server.addr(), "alice").await;
    let bob = account(server.addr(), "bob").await;
    let mut watcher = ws_bearer(server.addr(), &bob).await;
    ws_join_ok(&mut watcher, "lobby").await;
    let mut ws = ws_bearer(server.addr(), &alice).await;
    ws_join_ok(&mut ws, "lobby").await;

    let first = send_once(&mut ws, "once", "c-1", "a").await;
    // Sent again, twice in one read, then later: the same id every time.
    ws_send(
        &mut ws,
        &json!({"type": "send", "room": "lobby", "body": "once", "client_id": "c-1", "ref": "b1"}),
    )
    .await;
    ws_send(
        &mut ws,
        &json!({"type": "send", "room": "lobby", "body": "once", "client_id": "c-1", "ref": "b2"}),
    )
    .await;
    let mut acked = Vec::new();
    while acked.len() < 2 {
        let b = ws_recv_until(&mut ws, |v| v["type"] == "ack").await;
        assert_eq!(id_string(&b["id"]), first, "{b}");
        acked.push(b["ref"].as_str().unwrap().to_owned());
    }
    acked.sort();
    assert_eq!(acked, ["b1", "b2"]);
    assert_eq!(send_once(&mut ws, "once", "c-1", "c").await, first);
    // A different client id is a different message.
    let other = send_once(&mut ws, "twice", "c-2", "d").await;
    assert_ne!(other, first);
    // Reconnected: still the first one.
    drop(ws);
    let mut ws = ws_bearer(server.addr(), &alice).await;
    ws_join_ok(&mut ws, "lobby").await;
    assert_eq!(send_once(&mut ws, "once", "c-1", "e").await, first);
    // Bob saw each message once.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let v = ws_recv(&mut watcher).await;
        if v["type"] == "message" {
            seen.push(v["body"].as_str().unwrap().to_owned());
        }
    }
    ws_quiet(&mut watcher, Duration::from_millis(300), |v| {
        v["type"] == "presence"
    })
    .await;
    assert_eq!(seen, ["once", "twice"]);

    // After a restart the stored client ids are remembered.
    drop(ws);
    server.kill();
    let server = SpawnedServer::start(&data, &[], &[]);
    let alice = login_ok(server.addr(), "alice").await.access;
    let mut ws = ws_bearer(server.addr(), &alice).await;
    ws_join_ok(&mut ws, "lobby").await;
    assert_eq!(send_once(&mut ws, "once", "c-1", "f").await, first);

    // STOMP: a retried SEND gets its RECEIPT and is not delivered again.
    let mut s = Stomp::with_token(server.stomp_addr(), &alice, "alice").await;
    for _ in 0..2 {
        let r = s
            .send_receipt(
                &[("destination", "/topic/lobby"), ("client-id", "s-1")],
                b"over stomp",
            )
            .await;
        assert_eq!(r.command, "RECEIPT", "{r:?}");
    }
    // The same client id from another user is theirs.
    let bob = login_ok(server.addr(), "bob").await.access;
    let mut bob_ws = ws_bearer(server.addr(), &bob).await;
    ws_join_ok(&mut bob_ws, "lobby").await;
    assert_ne!(send_once(&mut bob_ws, "bob's", "c-1", "g").await, first);

    let bodies: Vec<String> = history(server.addr(), &alice)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, ["once", "twice", "over stomp", "bob's"]);
    let bad = {
        ws_send(
            &mut ws,
            &json!({"type": "send", "room": "lobby", "body": "x", "client_id": "", "ref": "h"}),
        )
        .await;
        ws_recv_until(&mut ws, |v| v["ref"] == "h").await
    };
    assert_eq!(bad["code"], "invalid_field", "{bad}");
}
