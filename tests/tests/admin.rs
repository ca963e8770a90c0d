//! Operators and the admin API: who may call it (401 anonymous, 403 everyone but an operator
//! with a full-scope credential), granting by the CLI and by `--operator`, the audit log, and
//! kicks, bans, closed rooms and deletions taking effect on every node of a cluster.

mod json_client;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use parley_tests::auth::{
    account, bearer, delete_as, get_as, login, login_ok, password_for, post_as, refresh,
};
use parley_tests::cluster::Cluster;
use parley_tests::http::{get, request, request_json};
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::{database_for, fresh_data_dir, parley_binary, ServerProcess};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use json_client::{recv, send, Ws};

/// Every admin call: method, path, body.
fn every_call() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/api/admin/overview", None),
        ("GET", "/api/admin/connections", None),
        ("POST", "/api/admin/kick", Some(json!({"user": "nobody"}))),
        ("GET", "/api/admin/bans", None),
        ("POST", "/api/admin/bans", Some(json!({"user": "nobody"}))),
        ("DELETE", "/api/admin/bans/nobody", None),
        ("GET", "/api/admin/operators", None),
        ("GET", "/api/admin/rooms", None),
        ("POST", "/api/admin/rooms/lobby/close", Some(json!({}))),
        ("POST", "/api/admin/rooms/lobby/reopen", None),
        ("DELETE", "/api/admin/rooms/lobby/messages/1", None),
        ("GET", "/api/admin/slow-consumers", None),
        ("GET", "/api/admin/busiest-rooms", None),
        ("GET", "/api/admin/audit", None),
    ]
}

/// Calls `method path` with `body` as `token` (none: anonymous); the status.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> u16 {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = match body {
        Some(body) => request_json(addr, method, path, &headers, body).await,
        None => request(addr, method, path, &headers, None).await,
    };
    r.status
}

/// A personal access token of the account signed in with `token`, of `scope`.
async fn personal_token(addr: SocketAddr, token: &str, scope: &str) -> String {
    let r = post_as(
        addr,
        "/api/tokens",
        token,
        &json!({"name": scope, "scope": scope}),
    )
    .await;
    r.assert_status(201, "token made");
    r.json()["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn every_admin_call_is_for_operators_only() {
    let server = ServerProcess::start(&["--operator", "root"]);
    let addr = server.addr();
    let root = account(addr, "root").await;
    let alice = account(addr, "alice").await;
    let read_only = personal_token(addr, &root, "read").await;
    let one_room = personal_token(addr, &root, "room:lobby").await;
    let full = personal_token(addr, &root, "all").await;
    for (method, path, body) in every_call() {
        assert_eq!(
            call(addr, method, path, &body, None).await,
            401,
            "anonymous {method} {path}"
        );
        assert_eq!(
            call(addr, method, path, &body, Some(&alice)).await,
            403,
            "alice {method} {path}"
        );
        for (scope, token) in [("read", &read_only), ("room", &one_room)] {
            let status = call(addr, method, path, &body, Some(token)).await;
            assert_eq!(status, 403, "root's {scope} token {method} {path}");
        }
        let status = call(addr, method, path, &body, Some(&root)).await;
        assert!(
            !matches!(status, 401 | 403 | 405),
            "root {method} {path}: {status}"
        );
    }
    let r = get_as(addr, "/api/admin/overview", &full).await;
    r.assert_status(200, "a full-scope token of an operator");
    // Guests are never operators, even named like one (the name is an account's anyway).
    let r = get(addr, "/api/admin/overview", &[]).await;
    r.assert_status(401, "anonymous");
    // Every operator call is in the audit log but the page's overview poll.
    let audit = get_as(addr, "/api/admin/audit?limit=100", &root).await;
    audit.assert_status(200, "audit");
    let entries = audit.json()["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "POST kick",
        "POST bans",
        "DELETE bans/<user>",
        "POST rooms/<room>/close",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    assert!(
        actions.contains(&"GET connections") && actions.contains(&"GET bans"),
        "reads are stored too: {actions:?}"
    );
    assert!(
        !actions.contains(&"GET overview"),
        "the overview poll is logged, not stored: {actions:?}"
    );
    assert!(
        entries.iter().all(|e| e["actor"] == "root"),
        "only operators' calls are stored"
    );
    let unban = entries
        .iter()
        .find(|e| e["action"] == "DELETE bans/<user>")
        .unwrap();
    assert_eq!(unban["target"], "nobody");
    assert_eq!(unban["outcome"], "ok", "banned just before");
}

#[tokio::test]
async fn configured_operators_match_any_spelling_of_their_account() {
    let server = ServerProcess::start(&["--operator", "ROOT"]);
    let addr = server.addr();
    let root = account(addr, "root").await;
    get_as(addr, "/api/admin/overview", &root)
        .await
        .assert_status(200, "--operator ROOT is the account root");
    let operators = get_as(addr, "/api/admin/operators", &root).await.json();
    assert_eq!(operators["configured"], json!(["ROOT"]), "{operators}");
    assert_eq!(operators["next"], Value::Null);
}

#[tokio::test]
async fn a_banned_users_refresh_token_is_refused_but_not_used_up() {
    let server = ServerProcess::start(&["--operator", "root"]);
    let addr = server.addr();
    let root = account(addr, "root").await;
    account(addr, "alice").await;
    let tokens = login_ok(addr, "alice").await;
    post_as(addr, "/api/admin/bans", &root, &json!({"user": "alice"}))
        .await
        .assert_status(200, "ban");
    for attempt in ["first", "again"] {
        let r = refresh(addr, &tokens.refresh).await;
        r.assert_status(403, attempt);
        assert_eq!(r.json()["error"], "banned: by an operator");
    }
    delete_as(addr, "/api/admin/bans/alice", &root)
        .await
        .assert_status(204, "unban");
    let r = refresh(addr, &tokens.refresh).await;
    r.assert_status(200, "the same refresh token works once the ban is lifted");
    assert!(r.json()["access_token"].is_string());
}

#[tokio::test]
async fn bans_and_closed_rooms_are_listed_in_pages() {
    let server = ServerProcess::start(&["--operator", "root"]);
    let addr = server.addr();
    let root = account(addr, "root").await;
    for user in ["carol", "Bob", "dave"] {
        post_as(addr, "/api/admin/bans", &root, &json!({"user": user}))
            .await
            .assert_status(200, user);
    }
    let first = get_as(addr, "/api/admin/bans?limit=2", &root).await.json();
    let names: Vec<&str> = first["bans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["user"].as_str())
        .collect();
    assert_eq!(names, ["Bob", "carol"], "by name in any case: {first}");
    assert_eq!(first["next"], "carol");
    let rest = get_as(addr, "/api/admin/bans?limit=2&after=carol", &root)
        .await
        .json();
    assert_eq!(rest["bans"][0]["user"], "dave", "{rest}");
    assert_eq!(rest["next"], Value::Null, "the last page");
    let r = request(
        addr,
        "POST",
        "/api/admin/rooms/attic/close",
        &[("Authorization", &bearer(&root))],
        None,
    )
    .await;
    r.assert_status(200, "close");
    let rooms = get_as(addr, "/api/admin/rooms?limit=1", &root).await.json();
    assert_eq!(rooms["closed"][0]["room"], "attic", "{rooms}");
    assert_eq!(rooms["next"], "attic", "a full page: there may be more");
}

/// Runs `parley admin VERB NAME` on the server's storage.
fn admin_cli(data: &std::path::Path, verb: &str, name: &str) -> std::process::Output {
    let mut command = std::process::Command::new(parley_binary());
    command.args(["admin", verb, name, "--data"]).arg(data);
    if let Some(url) = database_for(data) {
        command.args(["--database", &url]);
    }
    command.output().expect("running parley admin")
}

#[tokio::test]
async fn the_cli_grants_and_revokes_operators_at_once() {
    let data = fresh_data_dir();
    let server = ServerProcess::start_with_data(&data, &[]);
    let addr = server.addr();
    let bob = account(addr, "bob").await;
    get_as(addr, "/api/admin/overview", &bob)
        .await
        .assert_status(403, "not yet");
    let out = admin_cli(&data, "grant", "nobody");
    assert!(!out.status.success(), "no such account");
    let out = admin_cli(&data, "grant", "BOB");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = get_as(addr, "/api/admin/overview", &bob).await;
    r.assert_status(200, "granted");
    assert!(r.json()["sessions"].is_u64());
    let operators = get_as(addr, "/api/admin/operators", &bob).await.json();
    assert_eq!(operators["granted"][0]["user"], "bob", "{operators}");
    let audit = get_as(addr, "/api/admin/audit", &bob).await.json();
    let grant = audit["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "grant_operator").cloned())
        .expect("the grant is audited");
    assert_eq!(
        (grant["actor"].as_str(), grant["outcome"].as_str()),
        (Some("cli"), Some("ok"))
    );
    let out = admin_cli(&data, "revoke", "bob");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    get_as(addr, "/api/admin/overview", &bob)
        .await
        .assert_status(403, "revoked");
}

/// A raw client signed in with `token` at `addr`.
async fn raw_with(addr: SocketAddr, token: &str) -> Ws {
    let url = format!("ws://{addr}/ws?access_token={token}");
    timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

/// Reads `ws` until it closes: the JSON errors before, and the close code and reason.
async fn until_closed(ws: &mut Ws) -> (Vec<Value>, u16, String) {
    let mut errors = Vec::new();
    loop {
        let next = timeout(WAIT, ws.next()).await.expect("no close in time");
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if v["type"] == "error" {
                    errors.push(v);
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                return (errors, u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The next ERROR of a STOMP client (MESSAGEs skipped): its `message` header.
async fn stomp_error(client: &mut StompClient) -> String {
    loop {
        let frame = client.recv().await.expect("an ERROR before the close");
        if frame.command == "ERROR" {
            return frame.header("message").to_owned();
        }
    }
}

/// Waits until `f` holds (the bus carries an action within milliseconds).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_kick_on_one_node_closes_the_users_sessions_on_every_node() {
    let cluster = Cluster::start("admin_kick", 2, &["--operator", "root"]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let root = account(a, "root").await;
    let alice = account(a, "alice").await;
    let mut raw_a = raw_with(a, &alice).await;
    let mut stomp_b = StompClient::connect_as(cluster.nodes[1].stomp_addr(), "alice", &alice).await;
    let mut bystander = raw_with(b, &root).await;
    // The connection lists say who is where.
    let listed = get_as(b, "/api/admin/connections?user=alice", &root)
        .await
        .json();
    assert_eq!(listed["total"], 1, "{listed}");
    let c = &listed["connections"][0];
    assert_eq!(
        (c["protocol"].as_str(), c["transport"].as_str()),
        (Some("stomp"), Some("tcp"))
    );
    assert_eq!(c["address"], "127.0.0.1");
    let r = post_as(
        a,
        "/api/admin/kick",
        &root,
        &json!({"user": "alice", "reason": "cool off"}),
    )
    .await;
    r.assert_status(200, "kick");
    assert_eq!(r.json()["closed_here"], 1, "alice's raw session on A");
    let (errors, code, reason) = until_closed(&mut raw_a).await;
    assert_eq!((code, reason.as_str()), (4403, "kicked: cool off"));
    assert_eq!(
        errors[0]["code"], "kicked",
        "said as JSON first: {errors:?}"
    );
    assert_eq!(stomp_error(&mut stomp_b).await, "kicked: cool off");
    // Others stay; one session can be kicked by its node and id.
    send(&mut bystander, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut bystander).await["type"], "pong");
    let mine = get_as(b, "/api/admin/connections?user=root", &root)
        .await
        .json();
    let (node, session) = (
        &mine["connections"][0]["node"],
        &mine["connections"][0]["session"],
    );
    let r = post_as(
        a,
        "/api/admin/kick",
        &root,
        &json!({"session": session, "node": node}),
    )
    .await;
    r.assert_status(200, "kick one session of another node");
    let (_, code, reason) = until_closed(&mut bystander).await;
    assert_eq!((code, reason.as_str()), (4403, "kicked: by an operator"));
}

#[tokio::test]
async fn a_ban_on_one_node_refuses_and_closes_on_the_other_until_lifted() {
    let cluster = Cluster::start("admin_ban", 2, &["--operator", "root"]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let root = account(a, "root").await;
    let alice = account(a, "alice").await;
    let tokens = login_ok(b, "alice").await;
    let mut raw_b = raw_with(b, &alice).await;
    let mut stomp_b = StompClient::connect_as(cluster.nodes[1].stomp_addr(), "alice", &alice).await;
    let r = post_as(
        a,
        "/api/admin/bans",
        &root,
        &json!({"user": "Alice", "reason": "spam"}),
    )
    .await;
    r.assert_status(200, "ban");
    let (errors, code, reason) = until_closed(&mut raw_b).await;
    assert_eq!((code, reason.as_str()), (4403, "banned: spam"));
    assert_eq!(errors[0]["code"], "banned");
    assert_eq!(stomp_error(&mut stomp_b).await, "banned: spam");
    // Refused everywhere, saying why.
    let r = login(b, "alice", &password_for("alice")).await;
    r.assert_status(403, "login refused");
    assert_eq!(r.json()["error"], "banned: spam");
    refresh(b, &tokens.refresh)
        .await
        .assert_status(403, "refresh refused");
    let r = get_as(b, "/api/me", &alice).await;
    r.assert_status(403, "the old access token is refused");
    let connect = StompClient::try_connect_as(cluster.nodes[1].stomp_addr(), "alice", &alice).await;
    assert!(connect.is_none(), "STOMP CONNECT refused");
    let bans = get_as(b, "/api/admin/bans", &root).await.json();
    assert_eq!(bans["bans"][0]["user"], "Alice", "{bans}");
    assert_eq!(bans["bans"][0]["by"], "root");
    // Lifted on A, B lets alice in again.
    delete_as(a, "/api/admin/bans/alice", &root)
        .await
        .assert_status(204, "unban");
    eventually("login after the ban is lifted", || async {
        login(b, "alice", &password_for("alice")).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn a_closed_room_ends_subscriptions_and_refuses_sends_on_every_node() {
    let cluster = Cluster::start("admin_close", 2, &["--operator", "root"]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let root = account(a, "root").await;
    let alice = account(a, "alice").await;
    let mut raw_b = raw_with(b, &alice).await;
    send(&mut raw_b, json!({"type": "join", "room": "town"})).await;
    assert_eq!(recv(&mut raw_b).await["type"], "joined");
    send(
        &mut raw_b,
        json!({"type": "send", "room": "town", "body": "before", "ref": "1"}),
    )
    .await;
    // Stored (acknowledged) before the room closes: what follows is about the close alone.
    while recv(&mut raw_b).await["type"] != "ack" {}
    let mut stomp_b = StompClient::connect_as(cluster.nodes[1].stomp_addr(), "alice", &alice).await;
    stomp_b.subscribe("t", "/topic/town").await;
    let r = post_as(
        a,
        "/api/admin/rooms/town/close",
        &root,
        &json!({"reason": "archived"}),
    )
    .await;
    r.assert_status(200, "close");
    let ended = loop {
        let v = recv(&mut raw_b).await;
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(ended["room"], "town");
    assert!(
        ended["message"].as_str().unwrap().contains("archived"),
        "{ended}"
    );
    assert!(stomp_error(&mut stomp_b).await.contains("archived"));
    // No new messages, no joins; the history stays readable.
    send(&mut raw_b, json!({"type": "join", "room": "town"})).await;
    let refused = recv(&mut raw_b).await;
    assert_eq!(refused["code"], "room_closed", "{refused}");
    let r = post_as(
        b,
        "/api/rooms/town/messages",
        &alice,
        &json!({"body": "after"}),
    )
    .await;
    r.assert_status(403, "posting in a closed room");
    let history = get_as(b, "/api/rooms/town/messages", &alice).await;
    history.assert_status(200, "history");
    assert!(history.text().contains("before"), "{}", history.text());
    let closed = get_as(b, "/api/admin/rooms", &root).await.json();
    assert_eq!(closed["closed"][0]["room"], "town");
    let reopen = request(
        a,
        "POST",
        "/api/admin/rooms/town/reopen",
        &[("Authorization", &bearer(&root))],
        None,
    )
    .await;
    reopen.assert_status(204, "reopen");
    eventually("joining the reopened room", || async {
        post_as(
            b,
            "/api/rooms/town/messages",
            &alice,
            &json!({"body": "again"}),
        )
        .await
        .status
            == 201
    })
    .await;
}

#[tokio::test]
async fn an_operators_deletion_reaches_clients_on_both_nodes() {
    let cluster = Cluster::start("admin_delete", 2, &["--operator", "root"]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let root = account(a, "root").await;
    let alice = account(a, "alice").await;
    let mut on_a = raw_with(a, &alice).await;
    let mut on_b = json_client::raw_at(b, "watcher").await;
    for ws in [&mut on_a, &mut on_b] {
        send(ws, json!({"type": "join", "room": "square"})).await;
        assert_eq!(recv(ws).await["type"], "joined");
    }
    send(
        &mut on_a,
        json!({"type": "send", "room": "square", "body": "oops", "ref": "1"}),
    )
    .await;
    let id = loop {
        let v = recv(&mut on_b).await;
        if v["type"] == "message" {
            break v["id"]
                .as_str()
                .and_then(|id| id.parse::<u64>().ok())
                .expect("id");
        }
    };
    let path = format!("/api/admin/rooms/square/messages/{id}");
    delete_as(a, &path, &root)
        .await
        .assert_status(204, "operator delete");
    for (who, ws) in [("A", &mut on_a), ("B", &mut on_b)] {
        let deleted = loop {
            let v = recv(ws).await;
            if v["type"] == "delete" {
                break v;
            }
        };
        assert_eq!(deleted["target"], id.to_string(), "{who}: {deleted}");
    }
    let busiest = get_as(a, "/api/admin/busiest-rooms", &root).await.json();
    assert_eq!(busiest["rooms"][0]["room"], "square", "{busiest}");
    delete_as(a, &path, &root)
        .await
        .assert_status(404, "deleted already");
}
