//! Personal access tokens against the real binary (docs/auth.md, "Tokens for programs"): made,
//! listed and revoked over REST, shown once and stored hashed, usable on REST, `/ws` and STOMP,
//! their scopes (read-only, one room) enforced on every protocol, bounded per account, never
//! able to mint more, and refused at once (open sessions closed) when revoked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_tests::auth::*;
use parley_tests::http::until_metric;
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::{json, Value};

/// A strict server (no guests) and its data directory.
fn strict() -> (ServerProcess, PathBuf) {
    let data = fresh_data_dir();
    (ServerProcess::start_strict_with_data(&data, &[]), data)
}

/// `POST /api/tokens` as `jwt`, asserting 201; returns the answer.
async fn make(addr: SocketAddr, jwt: &str, name: &str, scope: &str) -> Value {
    let r = post_as(
        addr,
        "/api/tokens",
        jwt,
        &json!({"name": name, "scope": scope}),
    )
    .await;
    r.assert_status(201, "create a token");
    r.json()
}

fn token_of(made: &Value) -> String {
    made["token"].as_str().expect("the token").to_owned()
}

/// Every file in `dir` (the database and its WAL), as bytes.
fn stored_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_file() {
            all.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn tokens_are_made_shown_once_stored_hashed_listed_and_revoked() {
    let (server, data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let made = make(addr, &jwt, "ci bot", "all").await;
    let token = token_of(&made);
    assert!(token.starts_with("pat_") && token.len() == 47, "{made}");
    assert_eq!(made["name"], "ci bot");
    assert_eq!(made["scope"], "all");
    let lifetime = made["expires_ms"].as_u64().unwrap() - made["created_ms"].as_u64().unwrap();
    assert_eq!(lifetime, 90 * 24 * 3600 * 1000, "90 days by default");

    let listed = get_as(addr, "/api/tokens", &jwt).await;
    listed.assert_status(200, "list");
    let tokens = listed.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], made["id"]);
    assert!(tokens[0].get("token").is_none() && !listed.text().contains(&token));
    assert!(
        !contains(&stored_bytes(&data), &token[4..]),
        "the token itself is nowhere in the database"
    );

    let me_now = me(addr, &token).await;
    me_now.assert_status(200, "the token as a bearer");
    assert_eq!(me_now.json()["username"], "alice");
    let id = made["id"].as_str().unwrap();
    delete_as(addr, &format!("/api/tokens/{id}"), &jwt)
        .await
        .assert_status(204, "revoke");
    me(addr, &token).await.assert_status(401, "revoked");
    delete_as(addr, &format!("/api/tokens/{id}"), &jwt)
        .await
        .assert_status(404, "revoked once");
    let bob = account(addr, "bob").await;
    let other = make(addr, &jwt, "second", "read").await;
    let other_id = other["id"].as_str().unwrap();
    delete_as(addr, &format!("/api/tokens/{other_id}"), &bob)
        .await
        .assert_status(404, "not bob's");

    for (body, what) in [
        (json!({"name": ""}), "empty name"),
        (json!({"name": "x".repeat(65)}), "long name"),
        (json!({"name": "x", "scope": "write"}), "unknown scope"),
        (json!({"name": "x", "scope": "room:no spaces"}), "bad room"),
        (json!({"name": "x", "expires_in_days": 0}), "no lifetime"),
        (json!({"name": "x", "expires_in_days": 366}), "over a year"),
    ] {
        post_as(addr, "/api/tokens", &jwt, &body)
            .await
            .assert_status(400, what);
    }
}

#[tokio::test]
async fn tokens_are_bounded_and_never_mint_more() {
    let (server, _data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let first = token_of(&make(addr, &jwt, "t0", "all").await);
    for n in 1..20 {
        make(addr, &jwt, &format!("t{n}"), "read").await;
    }
    let past = post_as(addr, "/api/tokens", &jwt, &json!({"name": "t20"})).await;
    past.assert_status(409, "the 21st");
    assert!(past.json()["error"]
        .as_str()
        .unwrap()
        .contains("at most 20"));

    let minted = post_as(addr, "/api/tokens", &first, &json!({"name": "more"})).await;
    minted.assert_status(403, "a token making tokens");
    get_as(addr, "/api/tokens", &first)
        .await
        .assert_status(403, "a token listing tokens");
    parley_tests::http::post_json(addr, "/api/tokens", &[], &json!({"name": "anon"}))
        .await
        .assert_status(401, "no account, no tokens");
}

#[tokio::test]
async fn a_token_connects_over_ws_and_stomp_and_cannot_renew() {
    let (server, _data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let token = token_of(&make(addr, &jwt, "bot", "all").await);

    let mut ws = ws_connect_ok(addr, &format!("/ws?access_token={token}"), &[]).await;
    ws_join_ok(&mut ws, "lobby").await;
    ws_post(&mut ws, "lobby", "from a bot").await;
    ws_send(&mut ws, &json!({"type": "auth", "access_token": token})).await;
    let renewal = ws_recv_until(&mut ws, |v| v["type"] == "error").await;
    assert!(
        renewal["message"]
            .as_str()
            .unwrap()
            .contains("cannot renew"),
        "{renewal}"
    );
    let mut by_header = ws_bearer(addr, &token).await;
    ws_ping(&mut by_header).await;

    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    stomp.subscribe_ok("s", "/topic/lobby").await;
    let sent = stomp
        .send_receipt(&[("destination", "/topic/lobby")], b"stomp bot")
        .await;
    assert_eq!(sent.command, "RECEIPT", "{sent:?}");
    Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &token)],
        "alice",
    )
    .await;
    let (_, wrong) = Stomp::tcp_connect(server.stomp_addr(), &[("passcode", "pat_nonsense")]).await;
    assert_eq!(wrong.command, "ERROR", "{wrong:?}");
}

#[tokio::test]
async fn read_only_tokens_read_everything_and_write_nothing() {
    let (server, _data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let mut owner = ws_bearer(addr, &jwt).await;
    ws_join_ok(&mut owner, "lobby").await;
    ws_post(&mut owner, "lobby", "hello").await;
    let token = token_of(&make(addr, &jwt, "reader", "read").await);

    assert_eq!(me(addr, &token).await.json()["scope"], "read");
    let mut ws = ws_bearer(addr, &token).await;
    ws_join_ok(&mut ws, "lobby").await;
    ws_send(&mut ws, &json!({"type": "history", "room": "lobby"})).await;
    let history = ws_recv_until(&mut ws, |v| v["type"] == "history").await;
    assert_eq!(history["messages"][0]["body"], "hello", "{history}");
    for command in [
        json!({"type": "send", "room": "lobby", "body": "no", "ref": "1"}),
        json!({"type": "send", "to": "alice", "body": "no", "ref": "2"}),
    ] {
        ws_send(&mut ws, &command).await;
        let refused = ws_recv_until(&mut ws, |v| v["type"] == "error").await;
        assert_eq!(
            refused["message"], "this token is read-only",
            "{command}: {refused}"
        );
    }
    let created = ws_join(&mut ws, "brand-new").await;
    assert_eq!(
        created["type"], "error",
        "read-only creates no room: {created}"
    );

    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    stomp.subscribe_ok("s", "/topic/lobby").await;
    let sent = stomp
        .send_receipt(&[("destination", "/topic/lobby")], b"no")
        .await;
    assert_eq!(sent.command, "ERROR");
    assert!(
        sent.header("message").contains("this token is read-only"),
        "{sent:?}"
    );

    let post = post_as(
        addr,
        "/api/rooms/lobby/messages",
        &token,
        &json!({"body": "no"}),
    )
    .await;
    post.assert_status(403, "REST post, read-only");
    get_as(addr, "/api/rooms/lobby/messages", &token)
        .await
        .assert_status(200, "REST history, read-only");
    post_as(addr, "/api/rooms", &token, &json!({"name": "mine"}))
        .await
        .assert_status(403, "REST room creation, read-only");
}

#[tokio::test]
async fn room_tokens_stay_in_their_room() {
    let (server, _data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let mut owner = ws_bearer(addr, &jwt).await;
    ws_join_ok(&mut owner, "lobby").await;
    ws_join_ok(&mut owner, "other").await;
    let token = token_of(&make(addr, &jwt, "lobby bot", "room:lobby").await);

    let mut ws = ws_bearer(addr, &token).await;
    ws_join_ok(&mut ws, "lobby").await;
    ws_post(&mut ws, "lobby", "in my room").await;
    for room in ["other", "fresh"] {
        let refused = ws_join(&mut ws, room).await;
        assert_eq!(refused["type"], "error", "{room}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("limited to room \"lobby\""),
            "{refused}"
        );
    }
    ws_send(
        &mut ws,
        &json!({"type": "send", "to": "alice", "body": "dm", "ref": "d"}),
    )
    .await;
    let dm = ws_recv_until(&mut ws, |v| v["type"] == "error").await;
    assert!(
        dm["message"].as_str().unwrap().contains("limited to room"),
        "{dm}"
    );

    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    let sent = stomp
        .send_receipt(&[("destination", "/topic/lobby")], b"ok")
        .await;
    assert_eq!(sent.command, "RECEIPT", "{sent:?}");
    let elsewhere = stomp
        .send_receipt(&[("destination", "/topic/other")], b"no")
        .await;
    assert!(
        elsewhere.header("message").contains("limited to room"),
        "{elsewhere:?}"
    );

    get_as(addr, "/api/rooms/other/messages", &token)
        .await
        .assert_status(403, "REST history of another room");
    let rooms = get_as(addr, "/api/rooms", &token).await.json();
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lobby"], "{rooms}");
}

/// A STOMP session waiting parked (idle for 2 s: `parley_connections_parked`) hears its
/// token's revocation as soon as a running one would.
#[tokio::test]
async fn revoking_a_token_reaches_a_parked_session() {
    let data = fresh_data_dir();
    let server = ServerProcess::start_strict_with_data(&data, &["--metrics", "127.0.0.1:0"]);
    let (addr, metrics) = (server.addr(), server.metrics_addr());
    let jwt = account(addr, "alice").await;
    let made = make(addr, &jwt, "parked", "all").await;
    let token = token_of(&made);
    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    until_metric(metrics, "parley_connections_parked", 1.0).await;
    let id = made["id"].as_str().unwrap();
    delete_as(addr, &format!("/api/tokens/{id}"), &jwt)
        .await
        .assert_status(204, "revoke");
    match stomp.next(Duration::from_secs(5)).await {
        StompEvent::Frame(f) => {
            assert_eq!(f.command, "ERROR");
            assert!(f.header("message").contains("revoked"), "{f:?}");
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_sessions() {
    let (server, _data) = strict();
    let addr = server.addr();
    let jwt = account(addr, "alice").await;
    let made = make(addr, &jwt, "doomed", "all").await;
    let token = token_of(&made);
    let mut ws = ws_bearer(addr, &token).await;
    ws_join_ok(&mut ws, "lobby").await;
    let mut stomp = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    let id = made["id"].as_str().unwrap();
    delete_as(addr, &format!("/api/tokens/{id}"), &jwt)
        .await
        .assert_status(204, "revoke");
    match ws_next(&mut ws, Duration::from_secs(5)).await {
        WsEvent::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4401);
            assert!(frame.reason.contains("revoked"), "{frame:?}");
        }
        other => panic!("expected a 4401 close, got {other:?}"),
    }
    match stomp.next(Duration::from_secs(5)).await {
        StompEvent::Frame(f) => {
            assert_eq!(f.command, "ERROR");
            assert!(f.header("message").contains("revoked"), "{f:?}");
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
    let auth = bearer(&token);
    assert_eq!(
        ws_status(addr, "/ws", &[("Authorization", &auth)]).await,
        401
    );
    let (_, refused) = Stomp::tcp_connect(server.stomp_addr(), &[("passcode", &token)]).await;
    assert_eq!(refused.command, "ERROR", "{refused:?}");
}
