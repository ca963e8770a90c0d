//! Read state and unread counts over raw JSON, STOMP and REST: a read in one tab reaches the
//! account's other sessions on every protocol (and node), counts leave out own messages, events
//! and deleted messages, mentions are counted, marks survive a restart, bad marks are refused
//! and guests have none.

use std::net::SocketAddr;
use std::time::Duration;

use parley_tests::auth::{
    account, bearer, delete_as, get_as, login_ok, post_as, ws_bearer, ws_connect_ok, ws_join_ok,
    ws_post, ws_quiet, ws_recv_until, ws_send, Stomp, Ws,
};
use parley_tests::cluster::Cluster;
use parley_tests::{fresh_data_dir, http, ServerProcess};
use serde_json::{json, Value};

/// The next `read` message (skipping others).
async fn next_read(ws: &mut Ws) -> Value {
    ws_recv_until(ws, |v| v["type"] == "read" || v["type"] == "error").await
}

/// The entry of `room` in `GET /api/rooms` as `token`'s account sees it.
async fn listed(addr: SocketAddr, token: &str, room: &str) -> Value {
    let r = get_as(addr, "/api/rooms", token).await;
    r.assert_status(200, "GET /api/rooms");
    r.json()["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|e| e["name"] == room)
        .unwrap_or_else(|| panic!("{room} not listed: {}", r.text()))
        .clone()
}

/// `(last_read, unread, mentions)` of a listed room or a `joined` answer.
fn counts(v: &Value) -> (String, u64, u64) {
    (
        v["last_read"].as_str().unwrap_or("?").to_owned(),
        v["unread"].as_u64().unwrap_or(u64::MAX),
        v["mentions"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The next STOMP MESSAGE (skipping receipts).
async fn stomp_message(stomp: &mut Stomp) -> parley_tests::stomp::Frame {
    loop {
        let f = stomp.recv().await.expect("STOMP connection open");
        if f.command == "MESSAGE" {
            return f;
        }
        assert_eq!(f.command, "RECEIPT", "{f:?}");
    }
}

/// Read marks come from the server alone: a STOMP SEND to another account's (or one's own)
/// queue of marks is refused and tells nobody anything.
#[tokio::test]
async fn nobody_forges_a_read_mark() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let alice = account(addr, "alice").await;
    let mallory = account(addr, "mallory").await;
    let mut tab = ws_bearer(addr, &alice).await;
    let mut stomp = Stomp::with_token(server.stomp_addr(), &mallory, "mallory").await;
    for destination in ["/user/alice/queue/read", "/user/mallory/queue/read"] {
        let f = stomp
            .send_receipt(
                &[
                    ("destination", destination),
                    ("room", "general"),
                    ("last-read", "9"),
                ],
                b"",
            )
            .await;
        assert_eq!(f.command, "ERROR", "{destination}: {f:?}");
        let why = format!(
            "{} {}",
            f.header("message"),
            String::from_utf8_lossy(&f.body)
        );
        assert!(why.contains("written by the server"), "{f:?}");
        stomp = Stomp::with_token(server.stomp_addr(), &mallory, "mallory").await;
    }
    ws_quiet(&mut tab, Duration::from_millis(300), |_| false).await;
}

#[tokio::test]
async fn a_read_in_one_tab_reaches_the_other_tabs_and_stomp() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let alice = account(addr, "alice").await;
    let bob = account(addr, "bob").await;
    let mut tab1 = ws_bearer(addr, &alice).await;
    let mut tab2 = ws_bearer(addr, &alice).await;
    let mut stomp = Stomp::with_token(server.stomp_addr(), &alice, "alice").await;
    stomp.subscribe_ok("r", "/user/queue/read").await;
    let mut b = ws_bearer(addr, &bob).await;
    ws_join_ok(&mut b, "general").await;
    ws_join_ok(&mut tab1, "general").await;
    for body in ["one", "two", "three"] {
        ws_post(&mut b, "general", body).await;
    }

    ws_send(
        &mut tab1,
        &json!({"type": "read", "room": "general", "id": "2"}),
    )
    .await;
    let want = json!({"type": "read", "room": "general", "id": "2"});
    assert_eq!(
        next_read(&mut tab1).await,
        want,
        "the reading tab hears it too"
    );
    assert_eq!(next_read(&mut tab2).await, want, "another tab");
    let m = stomp_message(&mut stomp).await;
    assert_eq!(m.header("destination"), "/user/queue/read");
    assert_eq!((m.header("room"), m.header("last-read")), ("general", "2"));

    // STOMP marks read with a receipt; the raw tabs hear it.
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/app/read"),
                ("room", "general"),
                ("id", "3"),
                ("receipt", "read-3"),
            ],
            b"",
        )
        .await;
    let mut got_receipt = false;
    let mut got_message = false;
    while !(got_receipt && got_message) {
        let f = stomp.recv().await.expect("open");
        match f.command.as_str() {
            "RECEIPT" => got_receipt = f.header("receipt-id") == "read-3",
            "MESSAGE" => got_message = f.header("last-read") == "3",
            other => panic!("unexpected {other}: {f:?}"),
        }
    }
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(next_read(tab).await["id"], "3");
    }

    // An older mark from a slower device changes nothing: the answer is the stored mark.
    ws_send(
        &mut tab2,
        &json!({"type": "read", "room": "general", "id": 1}),
    )
    .await;
    assert_eq!(next_read(&mut tab2).await["id"], "3", "never backwards");
    assert_eq!(next_read(&mut tab1).await["id"], "3");
    // Bob's sessions hear nothing of Alice's marks.
    ws_quiet(&mut b, Duration::from_millis(300), |v| v["type"] != "read").await;
}

#[tokio::test]
async fn unread_counts_leave_out_own_messages_events_and_deletions() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let alice = account(addr, "alice").await;
    let bob = account(addr, "bob").await;
    let mut a = ws_bearer(addr, &alice).await;
    let mut b = ws_bearer(addr, &bob).await;
    ws_join_ok(&mut b, "plans").await;
    let first = ws_post(&mut b, "plans", "first").await;
    ws_post(&mut b, "plans", "hey @ALICE, look").await;
    ws_join_ok(&mut a, "plans").await;
    ws_post(&mut a, "plans", "mine, and @alice is me").await;
    let gone = ws_post(&mut b, "plans", "oops").await;
    // Events: a deletion, an edit and a reaction take ids but are no unread messages.
    let room = "/api/rooms/plans/messages";
    delete_as(addr, &format!("{room}/{gone}"), &bob)
        .await
        .assert_status(200, "delete");
    let auth = bearer(&bob);
    http::request_json(
        addr,
        "PATCH",
        &format!("{room}/{first}"),
        &[("Authorization", &auth)],
        &json!({"body": "first (edited)"}),
    )
    .await
    .assert_status(200, "edit");
    post_as(
        addr,
        &format!("{room}/{first}/reactions"),
        &bob,
        &json!({"emoji": "👍"}),
    )
    .await
    .assert_status(200, "react");
    // Acknowledged once durable: everything before it is stored too.
    let last = ws_post(&mut b, "plans", "last").await;

    let want = ("0".to_owned(), 3, 1);
    assert_eq!(counts(&listed(addr, &alice, "plans").await), want);
    let mut tab = ws_bearer(addr, &alice).await;
    assert_eq!(counts(&ws_join_ok(&mut tab, "plans").await), want, "joined");
    assert_eq!(
        counts(&listed(addr, &bob, "plans").await),
        ("0".to_owned(), 1, 0),
        "Bob's own messages are not unread to him; Alice's self-mention is no mention"
    );

    ws_post(&mut b, "plans", "more").await;
    assert_eq!(counts(&listed(addr, &alice, "plans").await).1, 4);

    let r = post_as(addr, "/api/rooms/plans/read", &alice, &json!({"id": last})).await;
    r.assert_status(200, "mark read");
    assert_eq!(r.json(), json!({"room": "plans", "last_read": last}));
    assert_eq!(
        next_read(&mut a).await["id"],
        last.as_str(),
        "sessions hear it"
    );
    assert_eq!(
        counts(&listed(addr, &alice, "plans").await),
        (last.clone(), 1, 0)
    );
    let unread = get_as(addr, "/api/unread", &alice).await;
    unread.assert_status(200, "GET /api/unread");
    assert_eq!(
        unread.json(),
        json!({"rooms": [{"name": "plans", "last_read": last, "unread": 1, "mentions": 0}]})
    );
    let mut again = ws_bearer(addr, &alice).await;
    assert_eq!(
        counts(&ws_join_ok(&mut again, "plans").await),
        (last.clone(), 1, 0)
    );
}

#[tokio::test]
async fn bad_marks_are_refused_and_guests_have_no_read_state() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let alice = account(addr, "alice").await;
    let carol = account(addr, "carol").await;
    let mut c = ws_bearer(addr, &carol).await;
    post_as(
        addr,
        "/api/rooms",
        &carol,
        &json!({"name": "secret", "private": true}),
    )
    .await
    .assert_status(201, "create private room");
    ws_join_ok(&mut c, "secret").await;
    ws_post(&mut c, "secret", "hush").await;
    ws_join_ok(&mut c, "open").await;
    ws_post(&mut c, "open", "hello").await;

    let mut a = ws_bearer(addr, &alice).await;
    let refusals = [
        (
            json!({"type": "read", "room": "open", "id": "2"}),
            "invalid_id",
        ),
        (
            json!({"type": "read", "room": "secret", "id": "1"}),
            "forbidden",
        ),
        (json!({"type": "read", "room": "open"}), "missing_field"),
        (
            json!({"type": "read", "room": "no room!", "id": "1"}),
            "invalid_room",
        ),
    ];
    for (command, code) in refusals {
        ws_send(&mut a, &command).await;
        let answer = next_read(&mut a).await;
        assert_eq!(answer["type"], "error", "{command}: {answer}");
        assert_eq!(answer["code"], code, "{command}: {answer}");
    }
    let r = post_as(addr, "/api/rooms/open/read", &alice, &json!({"id": "5"})).await;
    r.assert_status(400, "past the last id");
    let r = post_as(addr, "/api/rooms/secret/read", &alice, &json!({"id": "1"})).await;
    r.assert_status(403, "private room");
    let r = http::post_json(addr, "/api/rooms/open/read", &[], &json!({"id": "1"})).await;
    r.assert_status(401, "not signed in");
    let mut stomp = Stomp::with_token(server.stomp_addr(), &alice, "alice").await;
    stomp
        .send(
            "SEND",
            &[("destination", "/app/read"), ("room", "open"), ("id", "9")],
            b"",
        )
        .await;
    let f = stomp.recv().await.expect("an ERROR");
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(f.header("message").starts_with("invalid_id"), "{f:?}");

    // Guests: refused with `guest`, and their `joined` carries no counts.
    let mut g = ws_connect_ok(addr, "/ws?name=gus", &[]).await;
    let joined = ws_join_ok(&mut g, "open").await;
    assert!(joined.get("unread").is_none(), "{joined}");
    ws_send(&mut g, &json!({"type": "read", "room": "open", "id": "1"})).await;
    assert_eq!(next_read(&mut g).await["code"], "guest");
    let listed = http::get(addr, "/api/rooms", &[]).await;
    listed.assert_status(200, "guest room list");
    assert!(listed.json()["rooms"][0].get("unread").is_none());
}

#[tokio::test]
async fn read_state_survives_a_restart() {
    let data = fresh_data_dir();
    let (last, alice_token) = {
        let server = ServerProcess::start_on_sqlite(&data, &[]);
        let addr = server.addr();
        let alice = account(addr, "alice").await;
        let bob = account(addr, "bob").await;
        let mut b = ws_bearer(addr, &bob).await;
        ws_join_ok(&mut b, "general").await;
        ws_post(&mut b, "general", "one").await;
        let two = ws_post(&mut b, "general", "two").await;
        ws_post(&mut b, "general", "three").await;
        let r = post_as(addr, "/api/rooms/general/read", &alice, &json!({"id": two})).await;
        r.assert_status(200, "mark read");
        (two, alice)
    };
    let server = ServerProcess::start_on_sqlite(&data, &[]);
    let addr = server.addr();
    let alice = login_ok(addr, "alice").await.access;
    assert_ne!(alice, alice_token);
    assert_eq!(
        counts(&listed(addr, &alice, "general").await),
        (last.clone(), 1, 0)
    );
    let mut a = ws_bearer(addr, &alice).await;
    assert_eq!(counts(&ws_join_ok(&mut a, "general").await), (last, 1, 0));
}

#[tokio::test]
async fn a_read_on_one_node_reaches_the_account_on_another() {
    let cluster = Cluster::start("reads", 2, &[]);
    let (one, two) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let alice = account(one, "alice").await;
    let bob = account(one, "bob").await;
    // Alice listens on node two, raw and STOMP; Bob posts on node one.
    let mut a = ws_bearer(two, &alice).await;
    ws_join_ok(&mut a, "general").await;
    let mut stomp = Stomp::with_token(cluster.nodes[1].stomp_addr(), &alice, "alice").await;
    stomp.subscribe_ok("r", "/user/queue/read").await;
    let mut b = ws_bearer(one, &bob).await;
    ws_join_ok(&mut b, "general").await;
    ws_post(&mut b, "general", "one").await;
    let two_id = ws_post(&mut b, "general", "two @alice").await;
    ws_post(&mut b, "general", "three").await;
    // Node two receives the messages before Alice reads: its broker knows the ids.
    ws_recv_until(&mut a, |v| v["body"] == "three").await;

    let r = post_as(
        one,
        "/api/rooms/general/read",
        &alice,
        &json!({"id": two_id}),
    )
    .await;
    r.assert_status(200, "mark read on node one");
    assert_eq!(
        next_read(&mut a).await["id"],
        two_id.as_str(),
        "raw on node two"
    );
    let m = stomp_message(&mut stomp).await;
    assert_eq!(m.header("last-read"), two_id, "STOMP on node two");
    let want = (two_id.clone(), 1, 0);
    assert_eq!(counts(&listed(one, &alice, "general").await), want);
    assert_eq!(counts(&listed(two, &alice, "general").await), want);

    // A mark from node two, past what node two has delivered yet, is checked against the
    // shared database.
    ws_send(
        &mut a,
        &json!({"type": "read", "room": "general", "id": "3"}),
    )
    .await;
    assert_eq!(next_read(&mut a).await["id"], "3");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let got = counts(&listed(one, &alice, "general").await);
            if got == ("3".to_owned(), 0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node one sees the mark made on node two");
}
