//! Rooms and permissions against the real binary (docs/auth.md, "Rooms and permissions"):
//! private rooms are readable by members only on every path (raw, STOMP, REST, side channels),
//! membership is managed by the owner, removal ends live subscriptions, moderators delete
//! messages into tombstones, the server owns `.presence` and the sender, DMs stay private, and
//! guests stay out of private rooms.

use std::time::Duration;

use parley_tests::auth::*;
use parley_tests::http;
use parley_tests::ServerProcess;
use serde_json::{json, Value};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(800);

/// A strict server with accounts alice (owner of private room `secret`), bob and carol.
struct World {
    server: ServerProcess,
    alice: String,
    bob: String,
    carol: String,
}

impl World {
    async fn new() -> World {
        let server = ServerProcess::start_strict(&[]);
        let alice = account(server.addr(), "alice").await;
        let bob = account(server.addr(), "bob").await;
        let carol = account(server.addr(), "carol").await;
        let r = post_as(
            server.addr(),
            "/api/rooms",
            &alice,
            &json!({"name": "secret", "private": true}),
        )
        .await;
        r.assert_status(201, "alice creates private room secret");
        World {
            server,
            alice,
            bob,
            carol,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// `POST /api/rooms/<room>/members {"user", "role"?}` as `token`.
    async fn add_member(&self, token: &str, room: &str, user: &str, role: Option<&str>) -> u16 {
        let mut body = json!({"user": user});
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        post_as(
            self.addr(),
            &format!("/api/rooms/{room}/members"),
            token,
            &body,
        )
        .await
        .status
    }

    async fn stomp(&self, token: &str, user: &str) -> Stomp {
        Stomp::with_token(self.server.stomp_addr(), token, user).await
    }
}

fn assert_forbidden_raw(v: &Value, what: &str) {
    assert_eq!(
        (&v["type"], &v["code"]),
        (&json!("error"), &json!("forbidden")),
        "{what}: {v}"
    );
}

fn assert_forbidden_stomp(f: &parley_tests::stomp::Frame, what: &str) {
    assert_eq!(f.command, "ERROR", "{what}: {f:?}");
    assert!(
        f.header("message").starts_with("forbidden"),
        "{what}: ERROR message should start with `forbidden`: {f:?}"
    );
}

/// Names of the rooms `GET /api/rooms` lists for `token`.
async fn listed_rooms(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> Vec<Value> {
    let r = http::get(addr, "/api/rooms", headers).await;
    r.assert_status(200, "GET /api/rooms");
    r.json()["rooms"]
        .as_array()
        .expect("a `rooms` array")
        .clone()
}

fn names(rooms: &[Value]) -> Vec<String> {
    rooms
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The messages of a REST history answer.
fn messages(v: &Value) -> Vec<Value> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {v}"))
        .clone()
}

/// Asserts no STOMP MESSAGE whose body is `body` arrives within [`QUIET`] (an ERROR or a close
/// is fine: the subscription ended).
async fn stomp_never_gets(s: &mut Stomp, body: &str) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.next(left).await {
            StompEvent::Timeout | StompEvent::Closed => return,
            StompEvent::Frame(f) if f.command == "ERROR" => return,
            StompEvent::Frame(f) => assert!(
                !(f.command == "MESSAGE" && f.body == body.as_bytes()),
                "a message arrived that must not: {f:?}"
            ),
        }
    }
}

/// Asserts no raw `message` whose body is `body` arrives within [`QUIET`].
async fn raw_never_gets(ws: &mut Ws, body: &str) {
    ws_quiet(ws, QUIET, |v| {
        !(v["type"] == "message" && v["body"] == body)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_private_room_makes_the_creator_its_owner() {
    let w = World::new().await;
    let rooms = listed_rooms(w.addr(), &[("Authorization", &bearer(&w.alice))]).await;
    assert!(
        rooms
            .iter()
            .any(|r| r["name"] == "secret" && r["private"] == true),
        "the owner sees her private room: {rooms:?}"
    );
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    ws_post(&mut alice, "secret", "owner speaks").await;
    // Owning it means managing its members.
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);
    // A second room of that name is a conflict, not a takeover.
    let r = post_as(
        w.addr(),
        "/api/rooms",
        &w.carol,
        &json!({"name": "secret", "private": false}),
    )
    .await;
    r.assert_status(409, "the name is taken");
    assert_eq!(
        w.add_member(&w.carol, "secret", "carol", None).await,
        403,
        "carol did not become an owner"
    );
}

#[tokio::test]
async fn creating_rooms_and_reading_them_need_an_account() {
    let w = World::new().await;
    let r = http::post_json(
        w.addr(),
        "/api/rooms",
        &[],
        &json!({"name": "anon", "private": false}),
    )
    .await;
    r.assert_status(401, "POST /api/rooms without a token");
    http::get(w.addr(), "/api/rooms", &[])
        .await
        .assert_status(401, "GET /api/rooms without a token on a strict server");
    http::get(w.addr(), "/api/rooms/secret/messages", &[])
        .await
        .assert_status(401, "history without a token");
    let auth = "Bearer not.a.token";
    http::get(w.addr(), "/api/rooms", &[("Authorization", auth)])
        .await
        .assert_status(401, "GET /api/rooms with a bad token");
}

#[tokio::test]
async fn outsider_cannot_join_or_read_a_private_room_on_raw() {
    let w = World::new().await;
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    ws_post(&mut alice, "secret", "top secret").await;

    let mut carol = ws_bearer(w.addr(), &w.carol).await;
    let v = ws_join(&mut carol, "secret").await;
    assert_forbidden_raw(&v, "join");
    ws_send(
        &mut carol,
        &json!({"type": "join", "room": "secret", "since": "0"}),
    )
    .await;
    let v = ws_recv_until(&mut carol, |v| v["type"] != "presence").await;
    assert_forbidden_raw(&v, "join with since");
    ws_send(
        &mut carol,
        &json!({"type": "history", "room": "secret", "limit": 50}),
    )
    .await;
    let v = ws_recv(&mut carol).await;
    assert_forbidden_raw(&v, "history");
    assert!(
        !v.to_string().contains("top secret"),
        "nothing of the content leaks: {v}"
    );
    // Sending or typing into it is refused too (never a silent drop).
    ws_send(
        &mut carol,
        &json!({"type": "send", "room": "secret", "body": "let me in", "ref": "s1"}),
    )
    .await;
    let v = ws_recv(&mut carol).await;
    assert_eq!(v["type"], "error", "send to a private room: {v}");
    ws_send(&mut carol, &json!({"type": "typing", "room": "secret"})).await;
    let v = ws_recv(&mut carol).await;
    assert_eq!(v["type"], "error", "typing in a private room: {v}");
    // The members heard nothing from carol.
    raw_never_gets(&mut alice, "let me in").await;
}

#[tokio::test]
async fn outsider_cannot_subscribe_to_a_private_room_or_its_side_channels_on_stomp() {
    let w = World::new().await;
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    ws_post(&mut alice, "secret", "top secret").await;
    for (dest, extra) in [
        ("/topic/secret", vec![]),
        ("/topic/secret.typing", vec![]),
        ("/topic/secret.presence", vec![]),
        ("/topic/secret", vec![("since", "0"), ("ack", "auto")]),
    ] {
        let mut carol = w.stomp(&w.carol, "carol").await;
        let f = carol.subscribe("0", dest, &extra).await;
        assert_forbidden_stomp(&f, &format!("SUBSCRIBE {dest} {extra:?}"));
        assert!(
            !String::from_utf8_lossy(&f.body).contains("top secret"),
            "{f:?}"
        );
    }
    // Over WebSocket too.
    let mut carol = Stomp::ws(w.addr(), &[]).await.expect("upgrade");
    let f = carol.connect(&[("passcode", &w.carol)]).await;
    assert_eq!(f.command, "CONNECTED");
    let f = carol.subscribe("0", "/topic/secret", &[]).await;
    assert_forbidden_stomp(&f, "SUBSCRIBE over /stomp");
    // SEND into it and typing in it.
    for dest in ["/topic/secret", "/topic/secret.typing"] {
        let mut carol = w.stomp(&w.carol, "carol").await;
        let f = carol
            .send_receipt(&[("destination", dest)], b"let me in")
            .await;
        assert_forbidden_stomp(&f, &format!("SEND {dest}"));
    }
    raw_never_gets(&mut alice, "let me in").await;
}

#[tokio::test]
async fn outsider_cannot_read_a_private_room_over_rest_or_see_it_listed() {
    let w = World::new().await;
    // Refused the same way before and after the room has content.
    let before = get_as(w.addr(), "/api/rooms/secret/messages", &w.carol).await;
    before.assert_status(403, "history of an empty private room");
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    ws_post(&mut alice, "secret", "top secret").await;
    let after = get_as(w.addr(), "/api/rooms/secret/messages", &w.carol).await;
    after.assert_status(403, "history of a private room");
    assert_eq!(
        before.body, after.body,
        "the refusal does not depend on content"
    );
    assert!(!after.text().contains("top secret"));
    get_as(
        w.addr(),
        "/api/rooms/secret/messages?limit=10&before=100",
        &w.carol,
    )
    .await
    .assert_status(403, "paged history");
    let members = get_as(w.addr(), "/api/rooms/secret/members", &w.carol).await;
    members.assert_status(403, "members of a private room");
    assert!(!members.text().contains("alice"));
    // A public room for comparison.
    post_as(
        w.addr(),
        "/api/rooms",
        &w.bob,
        &json!({"name": "lobby", "private": false}),
    )
    .await
    .assert_status(201, "bob creates a public room");
    let rooms = listed_rooms(w.addr(), &[("Authorization", &bearer(&w.carol))]).await;
    let listed = names(&rooms);
    assert!(listed.contains(&"lobby".to_string()), "{rooms:?}");
    assert!(
        !listed.contains(&"secret".to_string()),
        "a private room is not listed to non-members: {rooms:?}"
    );
    get_as(w.addr(), "/api/rooms/lobby/messages", &w.carol)
        .await
        .assert_status(200, "history of a public room");
}

#[tokio::test]
async fn outsider_receives_nothing_while_members_chat() {
    let w = World::new().await;
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);
    let mut bob = w.stomp(&w.bob, "bob").await;
    bob.subscribe_ok("s", "/topic/secret").await;

    // Carol tries every door, then listens on what she may have.
    let mut carol_raw = ws_bearer(w.addr(), &w.carol).await;
    assert_forbidden_raw(&ws_join(&mut carol_raw, "secret").await, "join");
    ws_join_ok(&mut carol_raw, "lobby").await;
    let mut carol_stomp = w.stomp(&w.carol, "carol").await;
    carol_stomp.subscribe_ok("l", "/topic/lobby").await;
    carol_stomp.subscribe_ok("dm", "/user/queue/messages").await;

    for i in 0..3 {
        ws_post(&mut alice, "secret", &format!("secret {i}")).await;
    }
    ws_send(&mut alice, &json!({"type": "typing", "room": "secret"})).await;
    // Bob (a member) got them: the messages were really sent.
    for i in 0..3 {
        let m = bob.recv().await.expect("MESSAGE");
        assert_eq!(m.body, format!("secret {i}").as_bytes(), "{m:?}");
    }
    ws_quiet(&mut carol_raw, QUIET, |_| false).await;
    match carol_stomp.next(QUIET).await {
        StompEvent::Timeout => {}
        other => panic!("the outsider received {other:?}"),
    }
}

#[tokio::test]
async fn owner_adds_a_member_who_can_then_join_and_read_history() {
    let w = World::new().await;
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    let id = ws_post(&mut alice, "secret", "before bob").await;
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);

    let mut bob = ws_bearer(w.addr(), &w.bob).await;
    let joined = ws_join_ok(&mut bob, "secret").await;
    assert_eq!(joined["room"], "secret");
    ws_send(&mut bob, &json!({"type": "history", "room": "secret"})).await;
    let h = ws_recv_until(&mut bob, |v| v["type"] == "history" || v["type"] == "error").await;
    assert_eq!(h["type"], "history", "{h}");
    let msgs = messages(&h);
    assert!(
        msgs.iter()
            .any(|m| m["body"] == "before bob" && id_string(&m["id"]) == id),
        "{h}"
    );
    let r = get_as(w.addr(), "/api/rooms/secret/messages", &w.bob).await;
    r.assert_status(200, "member reads REST history");
    assert!(messages(&r.json())
        .iter()
        .any(|m| m["body"] == "before bob"));
    let r = get_as(w.addr(), "/api/rooms/secret/members", &w.bob).await;
    r.assert_status(200, "member reads the member list");
    let rooms = listed_rooms(w.addr(), &[("Authorization", &bearer(&w.bob))]).await;
    assert!(names(&rooms).contains(&"secret".to_string()), "{rooms:?}");
    // STOMP catch-up works for the member.
    let mut bob_stomp = w.stomp(&w.bob, "bob").await;
    bob_stomp
        .send(
            "SUBSCRIBE",
            &[
                ("id", "s"),
                ("destination", "/topic/secret"),
                ("since", "0"),
                ("ack", "auto"),
            ],
            b"",
        )
        .await;
    let m = bob_stomp.recv().await.expect("catch-up MESSAGE");
    assert_eq!(
        (m.command.as_str(), m.body.as_slice()),
        ("MESSAGE", b"before bob".as_slice()),
        "{m:?}"
    );
    // And live messages reach him; his own carry his name.
    ws_post(&mut bob, "secret", "hi from bob").await;
    let m = ws_recv_until(&mut alice, |v| v["type"] == "message" && v["from"] == "bob").await;
    assert_eq!(m["body"], "hi from bob");
}

#[tokio::test]
async fn only_the_owner_adds_members() {
    let w = World::new().await;
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);
    assert_eq!(
        w.add_member(&w.bob, "secret", "carol", None).await,
        403,
        "a member adding someone"
    );
    assert_eq!(
        w.add_member(&w.carol, "secret", "carol", None).await,
        403,
        "an outsider adding herself"
    );
    assert_eq!(
        w.add_member(&w.alice, "secret", "nobody", None).await,
        404,
        "an unknown user"
    );
    let r = http::post_json(
        w.addr(),
        "/api/rooms/secret/members",
        &[],
        &json!({"user": "carol"}),
    )
    .await;
    r.assert_status(401, "adding without a token");
    // An admin is not the owner either.
    let dave = account(w.addr(), "dave").await;
    assert_eq!(
        w.add_member(&w.alice, "secret", "dave", Some("admin"))
            .await,
        204
    );
    assert_eq!(
        w.add_member(&dave, "secret", "carol", None).await,
        403,
        "an admin adding a member"
    );
    // Carol is still out.
    get_as(w.addr(), "/api/rooms/secret/messages", &w.carol)
        .await
        .assert_status(403, "carol after the refused additions");
}

#[tokio::test]
async fn removing_a_member_ends_their_live_subscriptions() {
    let w = World::new().await;
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    let mut bob_raw = ws_bearer(w.addr(), &w.bob).await;
    ws_join_ok(&mut bob_raw, "secret").await;
    let mut bob_stomp = w.stomp(&w.bob, "bob").await;
    bob_stomp.subscribe_ok("s", "/topic/secret").await;
    bob_stomp.subscribe_ok("t", "/topic/secret.typing").await;

    // Positive control: both of bob's subscriptions are live.
    ws_post(&mut alice, "secret", "while a member").await;
    ws_recv_until(&mut bob_raw, |v| {
        v["type"] == "message" && v["body"] == "while a member"
    })
    .await;
    let m = bob_stomp.recv().await.expect("MESSAGE");
    assert_eq!(m.body, b"while a member", "{m:?}");

    let r = delete_as(w.addr(), "/api/rooms/secret/members/bob", &w.alice).await;
    r.assert_status(204, "owner removes bob");

    ws_post(&mut alice, "secret", "after removal").await;
    ws_send(&mut alice, &json!({"type": "typing", "room": "secret"})).await;
    raw_never_gets(&mut bob_raw, "after removal").await;
    stomp_never_gets(&mut bob_stomp, "after removal").await;
    // He cannot come back in.
    let mut bob_again = ws_bearer(w.addr(), &w.bob).await;
    assert_forbidden_raw(
        &ws_join(&mut bob_again, "secret").await,
        "join after removal",
    );
    get_as(w.addr(), "/api/rooms/secret/messages", &w.bob)
        .await
        .assert_status(403, "history after removal");
    let mut bob_stomp = w.stomp(&w.bob, "bob").await;
    let f = bob_stomp.subscribe("s", "/topic/secret", &[]).await;
    assert_forbidden_stomp(&f, "SUBSCRIBE after removal");
}

#[tokio::test]
async fn owner_or_admin_deletes_a_message_into_a_tombstone() {
    let w = World::new().await;
    let dave = account(w.addr(), "dave").await;
    assert_eq!(w.add_member(&w.alice, "secret", "bob", None).await, 204);
    assert_eq!(
        w.add_member(&w.alice, "secret", "dave", Some("admin"))
            .await,
        204
    );
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice, "secret").await;
    let mut bob = ws_bearer(w.addr(), &w.bob).await;
    ws_join_ok(&mut bob, "secret").await;
    let mut bob_stomp = w.stomp(&w.bob, "bob").await;
    bob_stomp.subscribe_ok("r", "/topic/secret").await;

    let doomed = ws_post(&mut alice, "secret", "regrettable").await;
    let kept = ws_post(&mut alice, "secret", "fine").await;
    ws_recv_until(&mut bob, |v| v["type"] == "message" && v["body"] == "fine").await;

    let path = format!("/api/rooms/secret/messages/{doomed}");
    delete_as(w.addr(), &path, &w.bob)
        .await
        .assert_status(403, "a plain member deleting");
    delete_as(w.addr(), &path, &w.carol)
        .await
        .assert_status(403, "an outsider deleting");
    delete_as(w.addr(), &path, &dave)
        .await
        .assert_status(200, "an admin deleting");

    // The deletion is an event of the room with its own id, naming the message it deletes.
    let d = ws_recv_until(&mut bob, |v| v["type"] == "delete").await;
    assert_eq!(d["room"], "secret", "{d}");
    assert_eq!(id_string(&d["target"]), doomed, "{d}");
    assert_eq!(d["from"], "dave", "{d}");
    let p = loop {
        let f = bob_stomp.recv().await.expect("the delete event");
        if f.header("kind") == "delete" {
            break f;
        }
    };
    assert_eq!(p.header("destination"), "/topic/secret", "{p:?}");
    assert_eq!(id_string(&d["id"]), p.header("message-id"), "{p:?}");

    // History: a tombstone without the body; the other message intact.
    let check = |msgs: &[Value], what: &str| {
        let tomb = msgs
            .iter()
            .find(|m| id_string(&m["id"]) == doomed)
            .unwrap_or_else(|| panic!("{what}: the deleted message keeps its place: {msgs:?}"));
        assert_eq!(tomb["deleted"], true, "{what}: {tomb}");
        assert!(
            tomb.get("body").is_none() && !tomb.to_string().contains("regrettable"),
            "{what}: a tombstone has no body: {tomb}"
        );
        let ok = msgs
            .iter()
            .find(|m| id_string(&m["id"]) == kept)
            .unwrap_or_else(|| panic!("{what}: {msgs:?}"));
        assert_eq!(ok["body"], "fine", "{what}: {ok}");
        assert_ne!(ok.get("deleted"), Some(&json!(true)), "{what}: {ok}");
    };
    let r = get_as(w.addr(), "/api/rooms/secret/messages", &w.bob).await;
    r.assert_status(200, "history");
    check(&messages(&r.json()), "REST history");
    ws_send(&mut bob, &json!({"type": "history", "room": "secret"})).await;
    let h = ws_recv_until(&mut bob, |v| v["type"] == "history").await;
    check(&messages(&h), "raw history");
    // Catch-up shows the tombstone too.
    let mut late = ws_bearer(w.addr(), &w.bob).await;
    ws_send(
        &mut late,
        &json!({"type": "join", "room": "secret", "since": "0"}),
    )
    .await;
    ws_recv_until(&mut late, |v| v["type"] == "joined").await;
    let mut replay = Vec::new();
    while replay.len() < 2 {
        let v = ws_recv(&mut late).await;
        if v["type"] == "message" {
            replay.push(v);
        }
    }
    check(&replay, "catch-up");

    // The owner may delete too.
    delete_as(
        w.addr(),
        &format!("/api/rooms/secret/messages/{kept}"),
        &w.alice,
    )
    .await
    .assert_status(200, "the owner deleting");
    assert_eq!(
        p.header("target-id"),
        doomed,
        "docs/stomp.md: a delete event names its message in target-id: {p:?}"
    );
}

#[tokio::test]
async fn the_owner_of_a_room_created_by_joining_moderates_it() {
    let w = World::new().await;
    let mut bob = ws_bearer(w.addr(), &w.bob).await;
    ws_join_ok(&mut bob, "bobs-place").await;
    let mut carol = ws_bearer(w.addr(), &w.carol).await;
    ws_join_ok(&mut carol, "bobs-place").await;
    let bobs = ws_post(&mut bob, "bobs-place", "mine").await;
    let carols = ws_post(&mut carol, "bobs-place", "spam").await;
    delete_as(
        w.addr(),
        &format!("/api/rooms/bobs-place/messages/{bobs}"),
        &w.carol,
    )
    .await
    .assert_status(403, "a participant deleting the owner's message");
    delete_as(
        w.addr(),
        &format!("/api/rooms/bobs-place/messages/{carols}"),
        &w.bob,
    )
    .await
    .assert_status(200, "the joining account owns the public room it created");
}

#[tokio::test]
async fn nobody_may_send_to_a_presence_channel() {
    let w = World::new().await;
    let mut bob = ws_bearer(w.addr(), &w.bob).await;
    ws_join_ok(&mut bob, "lobby").await;
    for (token, user, dest) in [
        (&w.alice, "alice", "/topic/secret.presence"),
        (&w.bob, "bob", "/topic/lobby.presence"),
        (&w.carol, "carol", "/topic/lobby.presence"),
    ] {
        let mut s = w.stomp(token, user).await;
        let f = s
            .send_receipt(
                &[
                    ("destination", dest),
                    ("event", "join"),
                    ("user", "mallory"),
                ],
                b"",
            )
            .await;
        assert_eq!(f.command, "ERROR", "{user} SEND {dest}: {f:?}");
    }
    ws_quiet(&mut bob, QUIET, |v| v["type"] != "presence").await;
}

#[tokio::test]
async fn the_sender_is_the_authenticated_identity() {
    let w = World::new().await;
    let mut bob = w.stomp(&w.bob, "bob").await;
    bob.subscribe_ok("l", "/topic/lobby").await;
    let mut alice = w.stomp(&w.alice, "alice").await;
    let f = alice
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("content-type", "text/plain"),
                ("sender", "bob"),
            ],
            b"forged?",
        )
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    let m = bob.recv().await.expect("MESSAGE");
    assert_eq!(
        (m.header("sender"), m.body.as_slice()),
        ("alice", b"forged?".as_slice()),
        "{m:?}"
    );
    let mut alice_raw = ws_bearer(w.addr(), &w.alice).await;
    ws_join_ok(&mut alice_raw, "lobby").await;
    ws_send(
        &mut alice_raw,
        &json!({"type": "send", "room": "lobby", "body": "raw forged?", "from": "bob"}),
    )
    .await;
    let m = ws_recv_until(&mut alice_raw, |v| v["type"] == "message").await;
    assert_eq!(m["from"], "alice", "{m}");
    let m = bob.recv().await.expect("MESSAGE");
    assert_eq!(m.header("sender"), "alice", "{m:?}");
    // A DM's sender too.
    let mut carol = w.stomp(&w.carol, "carol").await;
    carol.subscribe_ok("dm", "/user/queue/messages").await;
    ws_send(
        &mut alice_raw,
        &json!({"type": "send", "to": "carol", "body": "psst", "from": "bob"}),
    )
    .await;
    let m = carol.recv().await.expect("DM");
    assert_eq!(m.header("sender"), "alice", "{m:?}");
}

#[tokio::test]
async fn direct_messages_are_readable_only_by_their_recipient() {
    let w = World::new().await;
    let mut carol = w.stomp(&w.carol, "carol").await;
    let f = carol.subscribe("x", "/user/bob/queue/messages", &[]).await;
    assert_eq!(
        f.command, "ERROR",
        "carol subscribing to bob's queue: {f:?}"
    );

    let mut bob = w.stomp(&w.bob, "bob").await;
    bob.subscribe_ok("dm", "/user/queue/messages").await;
    let mut carol = w.stomp(&w.carol, "carol").await;
    carol.subscribe_ok("dm", "/user/queue/messages").await;
    let mut carol_raw = ws_bearer(w.addr(), &w.carol).await;
    let mut alice = ws_bearer(w.addr(), &w.alice).await;
    ws_send(
        &mut alice,
        &json!({"type": "send", "to": "bob", "body": "for bob only", "ref": "d1"}),
    )
    .await;
    let m = bob.recv().await.expect("DM");
    assert_eq!(
        (m.header("sender"), m.body.as_slice()),
        ("alice", b"for bob only".as_slice()),
        "{m:?}"
    );
    match carol.next(QUIET).await {
        StompEvent::Timeout => {}
        other => panic!("carol received {other:?}"),
    }
    ws_quiet(&mut carol_raw, Duration::from_millis(200), |_| false).await;
}

#[tokio::test]
async fn guests_cannot_create_rooms_or_enter_private_ones() {
    let server = ServerProcess::start(&["--guests-create-rooms=false"]);
    let alice = account(server.addr(), "alice").await;
    post_as(
        server.addr(),
        "/api/rooms",
        &alice,
        &json!({"name": "secret", "private": true}),
    )
    .await
    .assert_status(201, "alice creates a private room");
    post_as(
        server.addr(),
        "/api/rooms",
        &alice,
        &json!({"name": "lobby"}),
    )
    .await
    .assert_status(201, "alice creates a public room");
    let r = http::post_json(
        server.addr(),
        "/api/rooms",
        &[],
        &json!({"name": "guestroom", "private": false}),
    )
    .await;
    assert!(
        r.status == 401 || r.status == 403,
        "a guest (no token) creating a room: {} {:?}",
        r.status,
        r.text()
    );
    // Raw guest.
    let mut guest = ws_connect_ok(server.addr(), "/ws?name=visitor", &[]).await;
    assert_forbidden_raw(&ws_join(&mut guest, "secret").await, "guest joins private");
    ws_send(&mut guest, &json!({"type": "history", "room": "secret"})).await;
    assert_forbidden_raw(&ws_recv(&mut guest).await, "guest history of private");
    // Public rooms are fine for guests.
    ws_join_ok(&mut guest, "lobby").await;
    ws_post(&mut guest, "lobby", "hello from a guest").await;
    // STOMP guest.
    let mut sg = Stomp::tcp_connected(server.stomp_addr(), &[("login", "walker")], "walker").await;
    let f = sg.subscribe("s", "/topic/secret", &[]).await;
    assert_forbidden_stomp(&f, "STOMP guest subscribes to private");
    // REST without a token: public only.
    let rooms = listed_rooms(server.addr(), &[]).await;
    let listed = names(&rooms);
    assert!(listed.contains(&"lobby".to_string()), "{rooms:?}");
    assert!(!listed.contains(&"secret".to_string()), "{rooms:?}");
    http::get(server.addr(), "/api/rooms/lobby/messages", &[])
        .await
        .assert_status(
            200,
            "public history without a token when guests are allowed",
        );
    let r = http::get(server.addr(), "/api/rooms/secret/messages", &[]).await;
    assert!(
        r.status == 401 || r.status == 403,
        "private history without a token: {} {:?}",
        r.status,
        r.text()
    );
    // A guest cannot be made a member.
    let r = post_as(
        server.addr(),
        "/api/rooms/secret/members",
        &alice,
        &json!({"user": "visitor"}),
    )
    .await;
    r.assert_status(404, "a guest is no user to add");
}

#[tokio::test]
async fn making_a_room_private_ends_subscriptions_taken_while_its_name_was_free() {
    let server = ServerProcess::start_strict(&[]);
    let alice = account(server.addr(), "alice").await;
    let mallory = account(server.addr(), "mallory").await;
    // Mallory squats on the side channels of a room nobody created yet.
    let mut squatter = Stomp::with_token(server.stomp_addr(), &mallory, "mallory").await;
    for (id, dest) in [
        ("t", "/topic/plans.typing"),
        ("p", "/topic/plans.presence"),
        ("x", "/topic/plans.x"),
    ] {
        squatter.subscribe_ok(id, dest).await;
    }
    post_as(
        server.addr(),
        "/api/rooms",
        &alice,
        &json!({"name": "plans", "private": true}),
    )
    .await
    .assert_status(201, "alice creates private room plans");
    // The squatter is told (ERROR) and hears nothing the members say afterwards.
    let mut owner = Stomp::with_token(server.stomp_addr(), &alice, "alice").await;
    owner.subscribe_ok("r", "/topic/plans").await;
    let receipt = owner
        .send_receipt(
            &[("destination", "/topic/plans.x")],
            b"secret via side topic",
        )
        .await;
    assert_eq!(receipt.command, "RECEIPT", "{receipt:?}");
    stomp_never_gets(&mut squatter, "secret via side topic").await;
}

#[tokio::test]
async fn the_owners_role_cannot_be_changed_by_the_owner() {
    let w = World::new().await;
    let status = w
        .add_member(&w.alice, "secret", "alice", Some("member"))
        .await;
    assert_eq!(
        status, 400,
        "demoting oneself would leave the room ownerless"
    );
    let status = w.add_member(&w.alice, "secret", "bob", Some("admin")).await;
    assert_eq!(status, 204);
}
