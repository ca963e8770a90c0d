//! Rooms under attack (docs/security.md, "Rooms"): guests cannot create rooms, accounts create
//! at most `--max-rooms-per-account`, the room list is paged, and nothing but an explicit create
//! (REST, a raw join, a STOMP SUBSCRIBE or SEND to the room itself) makes an owner — a side
//! channel of an unknown room never does.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use parley_tests::auth::*;
use parley_tests::cluster::Cluster;
use parley_tests::http;
use parley_tests::ServerProcess;
use serde_json::{json, Value};

/// The documented default of `--max-rooms-per-account`.
const DEFAULT_QUOTA: usize = 50;

/// A server with guests, on the default room rules (guests cannot create rooms).
fn server() -> ServerProcess {
    ServerProcess::start_strict(&["--allow-guests"])
}

/// `GET path` as `token` (or anonymously), asserting 200: the JSON answer.
async fn get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> Value {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http::get(addr, path, &headers).await;
    r.assert_status(200, path);
    r.json()
}

/// The names on one page of `GET /api/rooms…`, and its `next` cursor.
async fn page(addr: SocketAddr, query: &str, token: &str) -> (Vec<String>, Option<String>) {
    let v = get_json(addr, &format!("/api/rooms{query}"), Some(token)).await;
    let rooms = v["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /api/rooms{query}: no `rooms` array in {v}"));
    let names = rooms
        .iter()
        .map(|r| {
            assert!(r["private"].is_boolean(), "each room keeps `private`: {r}");
            r["name"].as_str().expect("a name").to_owned()
        })
        .collect();
    (names, v["next"].as_str().map(str::to_owned))
}

/// Every room name listed under `prefix`, following `next` with pages of `limit`.
async fn all_pages(addr: SocketAddr, token: &str, prefix: &str, limit: usize) -> Vec<String> {
    let (mut names, mut after) = (Vec::new(), None::<String>);
    for _ in 0..1_000 {
        let mut query = format!("?prefix={prefix}&limit={limit}");
        if let Some(after) = &after {
            query.push_str(&format!("&after={after}"));
        }
        let (got, next) = page(addr, &query, token).await;
        assert!(got.len() <= limit, "{query}: {} rooms", got.len());
        names.extend(got);
        match next {
            Some(next) => after = Some(next),
            None => return names,
        }
    }
    panic!("the room list never ended")
}

/// Is `room` listed (for `token`)?
async fn listed(addr: SocketAddr, token: &str, room: &str) -> bool {
    let (names, _) = page(addr, &format!("?prefix={room}"), token).await;
    names.iter().any(|n| n == room)
}

/// A raw `error` with `code`.
fn assert_error(v: &Value, code: &str, what: &str) {
    assert_eq!(
        (&v["type"], &v["code"]),
        (&json!("error"), &json!(code)),
        "{what}: {v}"
    );
}

/// A STOMP ERROR whose message mentions `word`.
fn assert_stomp_error(f: &parley_tests::stomp::Frame, word: &str, what: &str) {
    assert_eq!(f.command, "ERROR", "{what}: {f:?}");
    assert!(
        f.header("message").contains(word),
        "{what}: the ERROR should say `{word}`: {f:?}"
    );
}

/// A STOMP guest named `name` on a fresh TCP connection.
async fn stomp_guest(addr: SocketAddr, name: &str) -> Stomp {
    Stomp::tcp_connected(addr, &[("login", name)], name).await
}

// ---------------------------------------------------------------------------------------------

/// Item 11: a guest joining or subscribing to an unknown room is refused, on every path, and
/// no room comes into being; an account's room is then open to the same guests.
#[tokio::test]
async fn guests_cannot_create_rooms_by_joining_subscribing_or_sending() {
    let server = server();
    let (addr, stomp) = (server.addr(), server.stomp_addr());
    let alice = account(addr, "alice").await;
    let mut guest = ws_connect_ok(addr, "/ws?name=visitor", &[]).await;
    let refused = ws_join(&mut guest, "guesthouse").await;
    assert_error(&refused, "no_such_room", "a guest joining an unknown room");
    assert!(
        refused["message"].as_str().unwrap_or("").contains("guest"),
        "the refusal says why: {refused}"
    );
    for (i, destination) in ["/topic/guesthouse", "/topic/guesthouse.typing"]
        .into_iter()
        .enumerate()
    {
        let mut g = stomp_guest(stomp, &format!("walker{i}")).await;
        let f = g.subscribe("s", destination, &[]).await;
        assert_stomp_error(
            &f,
            "no room",
            &format!("a STOMP guest subscribing {destination}"),
        );
    }
    let mut g = stomp_guest(stomp, "sender").await;
    let f = g
        .send_receipt(&[("destination", "/topic/guesthouse")], b"hi")
        .await;
    assert_stomp_error(&f, "no room", "a STOMP guest sending to an unknown room");
    assert!(
        !listed(addr, &alice, "guesthouse").await,
        "no guest made the room"
    );
    // An account's room is open to guests.
    let mut a = ws_bearer(addr, &alice).await;
    ws_join_ok(&mut a, "guesthouse").await;
    ws_join_ok(&mut guest, "guesthouse").await;
    ws_post(&mut guest, "guesthouse", "a guest speaks").await;
    let mut g = stomp_guest(stomp, "walker9").await;
    g.subscribe_ok("s", "/topic/guesthouse.typing").await;
    g.subscribe_ok("r", "/topic/guesthouse").await;
}

/// Item 11: an account creates at most the quota of rooms, whichever way it creates them; the
/// next is refused clearly on every path, joining existing rooms still works, and the quota is
/// per account.
#[tokio::test]
async fn an_account_creates_at_most_its_quota_of_rooms() {
    let server = server();
    let (addr, stomp_addr) = (server.addr(), server.stomp_addr());
    let mallory = account(addr, "mallory").await;
    let mut ws = ws_bearer(addr, &mallory).await;
    let mut stomp = Stomp::with_token(stomp_addr, &mallory, "mallory").await;
    for i in 0..DEFAULT_QUOTA {
        let room = format!("m-{i:03}");
        match i % 3 {
            0 => {
                post_as(addr, "/api/rooms", &mallory, &json!({"name": room}))
                    .await
                    .assert_status(201, &room);
            }
            1 => {
                ws_join_ok(&mut ws, &room).await;
            }
            _ => {
                stomp
                    .subscribe_ok(&format!("s{i}"), &format!("/topic/{room}"))
                    .await
            }
        }
    }
    let r = post_as(addr, "/api/rooms", &mallory, &json!({"name": "one-more"})).await;
    r.assert_status(403, "POST past the quota");
    assert!(r.text().contains("quota"), "{}", r.text());
    assert_error(
        &ws_join(&mut ws, "one-more").await,
        "room_quota",
        "join past the quota",
    );
    let f = stomp.subscribe("x", "/topic/one-more", &[]).await;
    assert_stomp_error(&f, "quota", "SUBSCRIBE past the quota");
    assert!(!listed(addr, &mallory, "one-more").await);
    // Rooms that exist are still open to her, and others still create theirs.
    let bob = account(addr, "bob").await;
    let mut b = ws_bearer(addr, &bob).await;
    ws_join_ok(&mut b, "bobs").await;
    ws_join_ok(&mut ws, "bobs").await;
    ws_join_ok(&mut ws, "m-000").await;
    let mine = all_pages(addr, &mallory, "m-", 100).await;
    assert_eq!(mine.len(), DEFAULT_QUOTA, "{mine:?}");
    let info = get_json(addr, "/api/info", None).await;
    assert_eq!(
        info["rooms"]["max_per_account"],
        json!(DEFAULT_QUOTA),
        "GET /api/info tells clients the quota: {info}"
    );
}

/// Item 11: `GET /api/rooms` answers pages of at most 100 by default, with a `next` cursor and
/// a name prefix filter, and every room exactly once across the pages.
#[tokio::test]
async fn the_room_list_is_paged_with_a_cursor_and_filtered_by_prefix() {
    let server = server();
    let addr = server.addr();
    let mut expected = BTreeSet::new();
    for (n, user) in ["p1", "p2", "p3"].into_iter().enumerate() {
        let token = account(addr, user).await;
        for i in 0..45 {
            let room = format!("{}-{:03}", if i < 40 { "a" } else { "b" }, n * 45 + i);
            post_as(addr, "/api/rooms", &token, &json!({"name": room}))
                .await
                .assert_status(201, &room);
            expected.insert(room);
        }
    }
    let reader = account(addr, "reader").await;
    let secret = account(addr, "secretive").await;
    post_as(
        addr,
        "/api/rooms",
        &secret,
        &json!({"name": "a-hidden", "private": true}),
    )
    .await
    .assert_status(201, "a private room");
    let (first, next) = page(addr, "", &reader).await;
    assert_eq!(first.len(), 100, "the default page holds 100 rooms");
    let next = next.expect("a next cursor after a full page");
    let (rest, end) = page(addr, &format!("?after={next}"), &reader).await;
    assert_eq!(end, None, "the last page has no next cursor");
    let listed: Vec<String> = first.into_iter().chain(rest).collect();
    let sorted: Vec<String> = expected.iter().cloned().collect();
    assert_eq!(listed, sorted, "every visible room once, in name order");
    let b_rooms = all_pages(addr, &reader, "b-", 100).await;
    assert_eq!(b_rooms.len(), 15, "{b_rooms:?}");
    assert!(b_rooms.iter().all(|r| r.starts_with("b-")));
    let a_rooms = all_pages(addr, &reader, "a-", 7).await;
    assert_eq!(a_rooms.len(), 120, "small pages add up");
    assert!(all_pages(addr, &secret, "a-h", 5).await == ["a-hidden"]);
    for bad in ["?limit=x", "?limit=-1"] {
        let r = http::get(
            addr,
            &format!("/api/rooms{bad}"),
            &[("Authorization", &bearer(&reader))],
        )
        .await;
        r.assert_status(400, bad);
    }
    let (huge, _) = page(addr, "?limit=100000", &reader).await;
    assert!(
        huge.len() <= 500,
        "a page is bounded whatever the client asks"
    );
}

/// Item 12: subscribing to a side channel of a room nobody created neither creates it nor
/// makes an owner; guests are refused there; the name stays free for an explicit create.
#[tokio::test]
async fn side_channels_of_an_unknown_room_never_create_or_own_it() {
    let server = server();
    let (addr, stomp) = (server.addr(), server.stomp_addr());
    let alice = account(addr, "alice").await;
    let mallory = account(addr, "mallory").await;
    let mut squatter = Stomp::with_token(stomp, &mallory, "mallory").await;
    for (id, dest) in [("t", "/topic/plans.typing"), ("p", "/topic/plans.presence")] {
        squatter.subscribe_ok(id, dest).await;
    }
    let f = squatter
        .send_receipt(&[("destination", "/topic/plans.typing")], b"")
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    // A guest may not even listen there.
    let mut g = stomp_guest(stomp, "lurker").await;
    let f = g.subscribe("t", "/topic/plans.typing", &[]).await;
    assert_stomp_error(
        &f,
        "no room",
        "a guest on a side channel of an unknown room",
    );
    assert!(!listed(addr, &alice, "plans").await, "no room was made");
    let r = post_as(
        addr,
        "/api/rooms/plans/members",
        &mallory,
        &json!({"user": "alice"}),
    )
    .await;
    assert_eq!(r.status, 403, "the squatter owns nothing: {}", r.text());
    post_as(
        addr,
        "/api/rooms",
        &alice,
        &json!({"name": "plans", "private": true}),
    )
    .await
    .assert_status(201, "the name is still free for alice");
    let r = post_as(
        addr,
        "/api/rooms/plans/members",
        &alice,
        &json!({"user": "mallory"}),
    )
    .await;
    assert_eq!(r.status, 204, "alice owns it: {}", r.text());
}

/// Item 12: a guest's SUBSCRIBE or SEND to the room itself no longer takes the name: the account
/// that creates it afterwards owns it.
#[tokio::test]
async fn a_guest_cannot_squat_a_room_name_before_its_owner_creates_it() {
    let server = server();
    let (addr, stomp) = (server.addr(), server.stomp_addr());
    let alice = account(addr, "alice").await;
    let mut g = stomp_guest(stomp, "squatter").await;
    let _ = g.subscribe("r", "/topic/board", &[]).await;
    let mut g = stomp_guest(stomp, "squatter2").await;
    let _ = g
        .send_receipt(&[("destination", "/topic/minutes")], b"first!")
        .await;
    for room in ["board", "minutes"] {
        post_as(addr, "/api/rooms", &alice, &json!({"name": room}))
            .await
            .assert_status(201, &format!("{room}: nobody squatted the name"));
    }
}

/// `--guests-create-rooms` (load tests, trusted networks) lets guests create public rooms by
/// joining, owned by nobody.
#[tokio::test]
async fn operators_may_let_guests_create_rooms() {
    let server = ServerProcess::start_strict(&["--allow-guests", "--guests-create-rooms"]);
    let addr = server.addr();
    let info = get_json(addr, "/api/info", None).await;
    assert_eq!(info["rooms"]["guests_create"], json!(true), "{info}");
    let mut guest = ws_connect_ok(addr, "/ws?name=visitor", &[]).await;
    ws_join_ok(&mut guest, "open-house").await;
    let alice = account(addr, "alice").await;
    assert!(listed(addr, &alice, "open-house").await);
}

/// Cluster mode: the rules are the same on every node, and a room created on one node is
/// open to guests on another at once.
#[tokio::test]
async fn room_creation_follows_the_same_rules_on_every_node() {
    let cluster = Cluster::start("rooms", 2, &["--guests-create-rooms=false"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut g = stomp_guest(b.stomp_addr(), "walker").await;
    let f = g.subscribe("s", "/topic/hall", &[]).await;
    assert_stomp_error(&f, "no room", "a guest on node B, unknown room");
    let alice = account(a.addr(), "alice").await;
    post_as(a.addr(), "/api/rooms", &alice, &json!({"name": "hall"}))
        .await
        .assert_status(201, "alice creates hall on node A");
    let mut g = stomp_guest(b.stomp_addr(), "walker2").await;
    g.subscribe_ok("s", "/topic/hall").await;
    let mut w = ws_connect_ok(b.addr(), "/ws?name=visitor", &[]).await;
    ws_join_ok(&mut w, "hall").await;
    assert_error(
        &ws_join(&mut w, "nope").await,
        "no_such_room",
        "raw guest, node B",
    );
    // An account creating by joining on node B owns it on node A too.
    let bob = account(a.addr(), "bob").await;
    let mut ws = ws_bearer(b.addr(), &bob).await;
    ws_join_ok(&mut ws, "bobs").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = post_as(
            a.addr(),
            "/api/rooms/bobs/members",
            &bob,
            &json!({"user": "alice"}),
        )
        .await;
        if r.status == 204 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never owned bobs on node A: {}",
            r.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A room is created by the SEND that is accepted, never by one refused (too large) or left in
/// a transaction that is aborted or refused: such a SEND leaves the name free for others. The
/// rooms one COMMIT would create count against the quota together.
#[tokio::test]
async fn a_refused_or_aborted_send_creates_no_room() {
    let server = ServerProcess::start_strict(&[
        "--allow-guests",
        "--max-body",
        "1024",
        "--max-rooms-per-account",
        "2",
    ]);
    let (addr, stomp) = (server.addr(), server.stomp_addr());
    let alice = account(addr, "alice").await;
    let mallory = account(addr, "mallory").await;
    let mut m = Stomp::with_token(stomp, &mallory, "mallory").await;
    let f = m
        .send_receipt(&[("destination", "/topic/big")], &[b'x'; 2000])
        .await;
    assert_stomp_error(&f, "body exceeds", "a SEND over the room body limit");

    let mut m = Stomp::with_token(stomp, &mallory, "mallory").await;
    let tx = [("transaction", "t")];
    m.send("BEGIN", &tx, b"").await;
    m.send("SEND", &[("destination", "/topic/aborted"), tx[0]], b"hi")
        .await;
    m.send("ABORT", &[tx[0], ("receipt", "a")], b"").await;
    let f = m.recv().await.expect("an answer to ABORT");
    assert_eq!(
        (f.command.as_str(), f.header("receipt-id")),
        ("RECEIPT", "a"),
        "{f:?}"
    );

    // Three new rooms in one COMMIT, with a quota of two: none is created.
    m.send("BEGIN", &tx, b"").await;
    for room in ["q1", "q2", "q3"] {
        let to = format!("/topic/{room}");
        m.send("SEND", &[("destination", &to), tx[0]], b"hi").await;
    }
    m.send("COMMIT", &[tx[0], ("receipt", "c")], b"").await;
    let f = m.recv().await.expect("an answer to COMMIT");
    assert_stomp_error(&f, "quota", "a COMMIT creating rooms past the quota");
    for room in ["big", "aborted", "q1", "q2", "q3"] {
        assert!(!listed(addr, &alice, room).await, "{room} was created");
    }
    for room in ["big", "aborted"] {
        post_as(addr, "/api/rooms", &alice, &json!({"name": room}))
            .await
            .assert_status(201, &format!("{room}: the name is still free"));
    }

    // Within the quota the COMMIT creates its rooms, owned by their sender.
    let mut m = Stomp::with_token(stomp, &mallory, "mallory").await;
    m.send("BEGIN", &tx, b"").await;
    for room in ["q1", "q2"] {
        let to = format!("/topic/{room}");
        m.send("SEND", &[("destination", &to), tx[0]], b"hi").await;
    }
    m.send("COMMIT", &[tx[0], ("receipt", "c")], b"").await;
    let f = m.recv().await.expect("an answer to COMMIT");
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    for room in ["q1", "q2"] {
        assert!(listed(addr, &alice, room).await, "{room} was not created");
        let path = format!("/api/rooms/{room}/members");
        post_as(addr, &path, &mallory, &json!({"user": "alice"}))
            .await
            .assert_status(204, &format!("mallory owns {room}"));
    }
}
