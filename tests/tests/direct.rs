//! Direct messages stored like rooms (docs/protocol.md, docs/stomp.md): a conversation between
//! two accounts has ids, history and catch-up, reaches the recipient when they next connect and
//! both people's every session on either protocol; a DM to nobody is refused.

use std::time::Duration;

use parley_tests::auth::*;
use parley_tests::ServerProcess;
use serde_json::{json, Value};

/// Sends a DM `to` someone; the answer (`ack` or `error`).
async fn dm(ws: &mut Ws, to: &str, body: &str, reference: &str) -> Value {
    ws_send(
        ws,
        &json!({"type": "send", "to": to, "body": body, "ref": reference}),
    )
    .await;
    ws_recv_until(ws, |v| {
        (v["type"] == "ack" || v["type"] == "error") && v["ref"] == reference
    })
    .await
}

#[tokio::test]
async fn a_conversation_is_stored_numbered_and_caught_up_on_every_protocol() {
    let data = scratch_dir();
    let mut server = SpawnedServer::start(&data, &[], &[]);
    let alice = account(server.addr(), "alice").await;
    let bob = account(server.addr(), "bob").await;
    let mut a1 = ws_bearer(server.addr(), &alice).await;
    let mut a2 = ws_bearer(server.addr(), &alice).await;

    // Bob is away: the DM is stored, numbered in the conversation, acknowledged once durable.
    let ack = dm(&mut a1, "BOB", "are you there?", "1").await;
    assert_eq!(
        (ack["type"].as_str(), id_string(&ack["id"]).as_str()),
        (Some("ack"), "1"),
        "{ack}"
    );
    // Alice's other tab sees what she sent, to the account as it is spelt.
    let copy = ws_recv_until(&mut a2, |v| v["type"] == "message").await;
    assert_eq!(
        (&copy["from"], &copy["to"], &copy["body"]),
        (&json!("alice"), &json!("bob"), &json!("are you there?")),
        "{copy}"
    );
    let no = dm(&mut a1, "nobody", "hello?", "2").await;
    assert_eq!(no["code"], "no_such_user", "{no}");

    // Bob connects and catches up; his STOMP session is subscribed to his DMs.
    let mut b1 = ws_bearer(server.addr(), &bob).await;
    ws_send(
        &mut b1,
        &json!({"type": "catch_up", "with": "alice", "since": "0"}),
    )
    .await;
    let first = ws_recv_until(&mut b1, |v| v["type"] == "message").await;
    assert_eq!(
        (id_string(&first["id"]), &first["from"], &first["to"]),
        ("1".to_owned(), &json!("alice"), &json!("bob")),
        "{first}"
    );
    let mut bs = Stomp::with_token(server.stomp_addr(), &bob, "bob").await;
    bs.subscribe_ok("dm", "/user/queue/messages").await;
    assert_eq!(dm(&mut a1, "bob", "second", "3").await["type"], "ack");
    let f = bs.recv().await.expect("the DM over STOMP");
    assert_eq!(
        (
            f.header("message-id"),
            f.header("recipient"),
            f.header("sender")
        ),
        ("2", "bob", "alice"),
        "{f:?}"
    );
    assert_eq!(
        ws_recv_until(&mut b1, |v| v["type"] == "message").await["body"],
        "second"
    );

    // Bob answers over STOMP: its RECEIPT once durable; alice gets id 3.
    let r = bs
        .send_receipt(
            &[("destination", "/user/alice/queue/messages")],
            b"here now",
        )
        .await;
    assert_eq!(r.command, "RECEIPT", "{r:?}");
    let answer = ws_recv_until(&mut a1, |v| v["type"] == "message" && v["from"] == "bob").await;
    assert_eq!(
        (id_string(&answer["id"]), &answer["to"]),
        ("3".to_owned(), &json!("alice")),
        "{answer}"
    );
    let bad = Stomp::with_token(server.stomp_addr(), &bob, "bob")
        .await
        .send_receipt(&[("destination", "/user/nobody/queue/messages")], b"x")
        .await;
    assert!(
        bad.command == "ERROR" && bad.header("message").starts_with("no_such_user"),
        "{bad:?}"
    );

    // History: REST and raw, oldest first; the list of conversations.
    let h = get_as(server.addr(), "/api/dms/alice/messages", &bob).await;
    h.assert_status(200, "DM history");
    let bodies: Vec<Value> = h.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        [json!("are you there?"), json!("second"), json!("here now")]
    );
    ws_send(
        &mut a1,
        &json!({"type": "history", "with": "bob", "limit": 2}),
    )
    .await;
    let page = ws_recv_until(&mut a1, |v| v["type"] == "history").await;
    assert_eq!(page["with"], "bob", "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");
    let list = get_as(server.addr(), "/api/dms", &bob).await.json();
    let entry = &list["conversations"][0];
    assert_eq!(
        (&entry["with"], &entry["last_id"], &entry["unread"]),
        (&json!("alice"), &json!("3"), &json!(2)),
        "{list}"
    );
    assert_eq!(
        list["conversations"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    get_as(server.addr(), "/api/dms/nobody/messages", &bob)
        .await
        .assert_status(404, "no such account");

    // Ids go on after a restart; a catch-up from the middle gets the rest only.
    drop((a1, a2, b1, bs));
    server.kill();
    let server = SpawnedServer::start(&data, &[], &[]);
    let alice = login_ok(server.addr(), "alice").await.access;
    let mut a1 = ws_bearer(server.addr(), &alice).await;
    assert_eq!(
        id_string(&dm(&mut a1, "bob", "after restart", "4").await["id"]),
        "4"
    );
    ws_send(
        &mut a1,
        &json!({"type": "catch_up", "with": "bob", "since": "2"}),
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let v = ws_recv(&mut a1).await;
        if v["type"] == "message" {
            got.push(id_string(&v["id"]));
        }
    }
    assert_eq!(got, ["3", "4"]);
    // The conversation is not a room.
    let rooms = get_as(server.addr(), "/api/rooms", &alice).await.json();
    assert!(!rooms.to_string().contains("dm:"), "{rooms}");

    // Read state: alice's three messages are unread for bob until he reads them, on any device.
    let bob = login_ok(server.addr(), "bob").await.access;
    let unread = |list: &Value| list["conversations"][0]["unread"].clone();
    let list = get_as(server.addr(), "/api/dms", &bob).await.json();
    assert_eq!(unread(&list), json!(3), "{list}");
    let mut b1 = ws_bearer(server.addr(), &bob).await;
    let mut b2 = ws_bearer(server.addr(), &bob).await;
    ws_send(
        &mut b1,
        &json!({"type": "read", "with": "Alice", "id": "2"}),
    )
    .await;
    let told = ws_recv_until(&mut b2, |v| v["type"] == "read").await;
    assert_eq!(
        (&told["with"], &told["id"]),
        (&json!("alice"), &json!("2")),
        "{told}"
    );
    let list = get_as(server.addr(), "/api/dms", &bob).await.json();
    assert_eq!(unread(&list), json!(1), "{list}");
    let r = parley_tests::auth::post_as(
        server.addr(),
        "/api/dms/alice/read",
        &bob,
        &json!({"id": "4"}),
    )
    .await;
    r.assert_status(200, "REST read mark");
    let list = get_as(server.addr(), "/api/dms", &bob).await.json();
    assert_eq!(
        (unread(&list), &list["conversations"][0]["last_read"]),
        (json!(0), &json!("4")),
        "{list}"
    );
}

#[tokio::test]
async fn guests_dm_whoever_is_online_without_storage() {
    let server = ServerProcess::start(&[]);
    let mut ann = ws_connect_ok(server.addr(), "/ws?name=ann", &[]).await;
    let no = dm(&mut ann, "ben", "hi", "1").await;
    assert_eq!(no["code"], "no_such_user", "{no}");
    let mut ben = ws_connect_ok(server.addr(), "/ws?name=ben", &[]).await;
    ws_ping(&mut ben).await;
    let ack = dm(&mut ann, "ben", "hi", "2").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = ws_recv_until(&mut ben, |v| v["type"] == "message").await;
    assert_eq!(
        (&m["from"], &m["to"], &m["guest"]),
        (&json!("ann"), &json!("ben"), &json!(true)),
        "{m}"
    );
    ws_send(&mut ben, &json!({"type": "history", "with": "ann"})).await;
    let refused = ws_recv_until(&mut ben, |v| v["type"] == "error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    ws_quiet(&mut ann, Duration::from_millis(200), |v| {
        v["type"] == "message"
    })
    .await;
}
