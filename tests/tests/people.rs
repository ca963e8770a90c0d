//! People and presence across the server (docs/protocol.md, REST): the directory of accounts
//! (prefix, paging, bounds), who is online (any protocol, flipping when the last session
//! closes, seen from every node in cluster mode), member lists with roles, and leaving,
//! inviting and removing in private rooms.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_tests::auth::*;
use parley_tests::cluster::Cluster;
use parley_tests::ServerProcess;
use serde_json::{json, Value};

/// Longest wait for an online state to change.
const FLIP: Duration = Duration::from_secs(10);

async fn get_json(addr: SocketAddr, path: &str, token: &str) -> Value {
    let r = get_as(addr, path, token).await;
    r.assert_status(200, path);
    r.json()
}

fn names(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_owned())
        .collect()
}

/// `user`'s `online` flag in the directory as seen through `addr`.
async fn directory_online(addr: SocketAddr, token: &str, user: &str) -> bool {
    let page = get_json(addr, &format!("/api/users?prefix={user}&limit=200"), token).await;
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == user)
        .unwrap_or_else(|| panic!("{user} not in the directory: {page}"))["online"]
        .as_bool()
        .expect("online flag")
}

/// Is `user` in `GET /api/users/online` through `addr`?
async fn listed_online(addr: SocketAddr, token: &str, user: &str) -> bool {
    let page = get_json(addr, "/api/users/online?limit=500", token).await;
    names(&page).iter().any(|n| n == user)
}

/// Waits until `user`'s online state seen through `addr` is `want` (both endpoints agree).
async fn until_online(addr: SocketAddr, token: &str, user: &str, want: bool) {
    let start = Instant::now();
    loop {
        let dir = directory_online(addr, token, user).await;
        let list = listed_online(addr, token, user).await;
        if dir == want && list == want {
            return;
        }
        assert!(
            start.elapsed() < FLIP,
            "{user} still online={dir}/{list}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_directory_lists_accounts_by_prefix_in_pages() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    let token = account(addr, "zoe").await;
    for n in 0..7 {
        register_ok(addr, &format!("ann{n}")).await;
    }
    register_ok(addr, "Anna").await;
    register_ok(addr, "bob").await;
    let first = get_json(addr, "/api/users?prefix=an&limit=3", &token).await;
    assert_eq!(names(&first), ["ann0", "ann1", "ann2"]);
    assert_eq!(first["next"], "ann2");
    assert_eq!(
        first["users"][0],
        json!({"name": "ann0", "online": false, "away": false})
    );
    let mut all = names(&first);
    let mut next = first["next"].as_str().map(str::to_owned);
    while let Some(after) = next {
        let page = get_json(
            addr,
            &format!("/api/users?prefix=AN&limit=3&after={after}"),
            &token,
        )
        .await;
        all.extend(names(&page));
        next = page["next"].as_str().map(str::to_owned);
    }
    // Case-insensitive: "Anna" sorts as "anna", after every "ann<n>".
    let want: Vec<String> = (0..7)
        .map(|n| format!("ann{n}"))
        .chain(["Anna".into()])
        .collect();
    assert_eq!(all, want);
    let everyone = get_json(addr, "/api/users", &token).await;
    assert_eq!(names(&everyone).len(), 10);
    assert_eq!(everyone["next"], Value::Null);
    // Bounds: a page is at most 200, bad values are refused, strangers are not served.
    assert_eq!(get_as(addr, "/api/users?limit=x", &token).await.status, 400);
    assert_eq!(
        get_as(addr, "/api/users?prefix=a%20b", &token).await.status,
        400
    );
    let long = "a".repeat(33);
    assert_eq!(
        get_as(addr, &format!("/api/users?prefix={long}"), &token)
            .await
            .status,
        400
    );
    assert_eq!(get_as(addr, "/api/users", "not-a-token").await.status, 401);
    let zoe_self = directory_online(addr, &token, "zoe").await;
    assert!(!zoe_self, "nobody connected yet");
}

#[tokio::test]
async fn online_flips_when_the_last_session_of_any_protocol_closes() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    let token = account(addr, "alice").await;
    let watcher = account(addr, "watcher").await;
    until_online(addr, &watcher, "alice", false).await;
    // Two sessions of two protocols: raw JSON and STOMP.
    let mut raw = ws_bearer(addr, &token).await;
    ws_ping(&mut raw).await;
    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    until_online(addr, &watcher, "alice", true).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        directory_online(addr, &watcher, "alice").await,
        "STOMP is still connected"
    );
    stomp.alive("alice").await;
    drop(stomp);
    until_online(addr, &watcher, "alice", false).await;
}

#[tokio::test]
async fn guests_are_listed_online_and_marked() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let token = account(addr, "alice").await;
    let mut guest = ws_connect_ok(addr, "/ws?name=visitor", &[]).await;
    ws_ping(&mut guest).await;
    let page = get_json(addr, "/api/users/online", &token).await;
    let visitor = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "visitor")
        .expect("the guest is online");
    assert_eq!(visitor["guest"], true);
    assert!(page["total"].as_u64().unwrap() >= 1);
    // Guests are not accounts: not in the directory.
    assert!(names(&get_json(addr, "/api/users?prefix=vis", &token).await).is_empty());
}

#[tokio::test]
async fn members_leave_invite_and_remove_in_private_rooms() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    let alice = account(addr, "alice").await;
    let bob = account(addr, "bob").await;
    let carol = account(addr, "carol").await;
    post_as(
        addr,
        "/api/rooms",
        &alice,
        &json!({"name": "den", "private": true}),
    )
    .await
    .assert_status(201, "create den");
    let add = |user: &'static str, role: Option<&'static str>| {
        let alice = alice.clone();
        async move {
            let mut body = json!({"user": user});
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            post_as(addr, "/api/rooms/den/members", &alice, &body)
                .await
                .status
        }
    };
    assert_eq!(add("bob", Some("admin")).await, 204);
    assert_eq!(add("carol", None).await, 204);
    assert_eq!(add("nobody", None).await, 404);
    // The detailed list: roles, owner first, online states; bob is connected.
    let mut bob_ws = ws_bearer(addr, &bob).await;
    ws_join_ok(&mut bob_ws, "den").await;
    let detail = get_json(addr, "/api/rooms/den/members?detail=1", &carol).await;
    assert_eq!(detail["private"], true);
    let members: Vec<(String, Value, bool)> = detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["role"].clone(),
                m["online"] == true,
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("alice".into(), json!("owner"), false),
            ("bob".into(), json!("admin"), true),
            ("carol".into(), json!("member"), false),
        ]
    );
    // The plain list keeps its shape: users present now.
    assert_eq!(
        get_json(addr, "/api/rooms/den/members", &carol).await,
        json!(["bob"])
    );
    // The owner cannot leave; a member leaves and loses access; an admin leaves live.
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/alice", &alice)
            .await
            .status,
        409
    );
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/carol", &carol)
            .await
            .status,
        204
    );
    assert_eq!(
        get_as(addr, "/api/rooms/den/members", &carol).await.status,
        403
    );
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/carol", &carol)
            .await
            .status,
        404
    );
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/bob", &bob)
            .await
            .status,
        204
    );
    let ended = ws_recv_until(&mut bob_ws, |v| v["type"] == "error").await;
    assert_eq!(ended["code"], "forbidden");
    // Removing: members may not, the owner may; someone not in the room is 404.
    assert_eq!(add("carol", None).await, 204);
    assert_eq!(add("bob", None).await, 204);
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/bob", &carol)
            .await
            .status,
        403
    );
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/bob", &alice)
            .await
            .status,
        204
    );
    assert_eq!(
        delete_as(addr, "/api/rooms/den/members/bob", &alice)
            .await
            .status,
        404
    );
    let left: Vec<Value> = get_json(addr, "/api/rooms/den/members?detail=1", &alice).await
        ["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(left, [json!("alice"), json!("carol")]);
}

#[tokio::test]
async fn online_is_seen_from_every_node_and_ends_with_the_node() {
    let mut cluster = Cluster::start("people_online", 2, &["--presence-ttl", "2s"]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let alice = account(a, "alice").await;
    let watcher = account(a, "watcher").await;
    until_online(b, &watcher, "alice", false).await;
    let mut ws = ws_bearer(a, &alice).await;
    ws_ping(&mut ws).await;
    until_online(b, &watcher, "alice", true).await;
    until_online(a, &watcher, "alice", true).await;
    drop(ws);
    until_online(b, &watcher, "alice", false).await;
    // A node that dies takes its users offline everywhere within about the TTL.
    let mut ws = ws_bearer(a, &alice).await;
    ws_ping(&mut ws).await;
    until_online(b, &watcher, "alice", true).await;
    cluster.nodes[0].kill();
    until_online(b, &watcher, "alice", false).await;
}

#[tokio::test]
async fn a_user_is_away_while_every_connection_says_so() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    let token = account(addr, "alice").await;
    let mut one = ws_bearer(addr, &token).await;
    let mut two = ws_bearer(addr, &token).await;
    let away = |addr, token: String| async move {
        let page = get_json(addr, "/api/users?prefix=alice", &token).await;
        (
            page["users"][0]["online"] == true,
            page["users"][0]["away"] == true,
        )
    };
    for ws in [&mut one, &mut two] {
        ws_send(ws, &json!({"type": "away", "away": true})).await;
        ws_ping(ws).await;
    }
    assert_eq!(away(addr, token.clone()).await, (true, true));
    ws_send(&mut two, &json!({"type": "away", "away": false})).await;
    ws_ping(&mut two).await;
    assert_eq!(away(addr, token.clone()).await, (true, false));
    drop(two);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(away(addr, token.clone()).await, (true, true));
    ws_send(&mut one, &json!({"type": "away", "away": "yes"})).await;
    let refused = ws_recv_until(&mut one, |v| v["type"] == "error").await;
    assert_eq!(refused["code"], "invalid_field");
}
