//! Hostile clients against accounts and logins (docs/security.md, "Accounts and logins"):
//! registration floods, locking other users out, names that differ only by case, tokens that
//! are not valid yet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parley_tests::auth::*;
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::timeout;

/// How long a flood runs.
const FLOOD: Duration = Duration::from_secs(8);

/// The answer to one request sent from a chosen source address.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
}

/// `POST path` with a JSON `body` from source address `from` (any 127.x.y.z works on Linux's
/// loopback), so a test can play clients on different machines.
async fn post_from(from: IpAddr, addr: SocketAddr, path: &str, body: &serde_json::Value) -> Answer {
    let exchange = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(from, 0)).ok()?;
        let mut stream = socket.connect(addr).await.ok()?;
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        let head = text.split("\r\n\r\n").next()?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let retry_after = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().parse().ok())?
        });
        Some(Answer {
            status,
            retry_after,
        })
    };
    timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(Answer {
            status: 0,
            retry_after: None,
        })
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn credentials(username: &str, password: &str) -> serde_json::Value {
    json!({"username": username, "password": password})
}

/// Runs `clients` tasks that each call `request(client, round)` in a loop until the flood ends;
/// returns the statuses seen, by kind, and a flag to stop early.
async fn flood<F, Fut>(clients: usize, request: F) -> (Arc<FloodTally>, tokio::task::JoinSet<()>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Answer> + Send,
{
    let tally = Arc::new(FloodTally::default());
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (tally, request) = (tally.clone(), request.clone());
        tasks.spawn(async move {
            let mut round = 0;
            while !tally.stop.load(Ordering::Relaxed) {
                let answer = request(client, round).await;
                tally.count(answer.status);
                round += 1;
            }
        });
    }
    (tally, tasks)
}

#[derive(Default)]
struct FloodTally {
    stop: AtomicBool,
    throttled: AtomicUsize,
    busy: AtomicUsize,
    other: AtomicUsize,
}

impl FloodTally {
    fn count(&self, status: u16) {
        let counter = match status {
            429 => &self.throttled,
            503 => &self.busy,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn end(&self, mut tasks: tokio::task::JoinSet<()>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = timeout(Duration::from_secs(60), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

/// The owner logs in `times` times while a flood runs; every answer must be 200.
async fn owner_logs_in_during(addr: SocketAddr, from: IpAddr, times: usize) {
    let body = credentials("alice", &password_for("alice"));
    for attempt in 1..=times {
        tokio::time::sleep(FLOOD / (times as u32 + 1)).await;
        let answer = post_from(from, addr, "/api/login", &body).await;
        assert_eq!(
            answer.status, 200,
            "the owner's login {attempt} of {times} during the flood (Retry-After {:?})",
            answer.retry_after
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 4: a registration flood must not lock the owner out
// ---------------------------------------------------------------------------------------------

/// The flood: 300 clients register an existing name as fast as they can. The owner's
/// logins (from the flooding address itself) all succeed meanwhile, and the flood is told 429
/// with `Retry-After` once its address used up its registrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_does_not_lock_the_owner_out() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    let (tally, tasks) = flood(300, move |client, round| async move {
        let password = format!("flood password {client} {round}");
        post_from(
            loopback(1),
            addr,
            "/api/register",
            &credentials("alice", &password),
        )
        .await
    })
    .await;
    owner_logs_in_during(addr, loopback(1), 4).await;
    tally.end(tasks).await;
    assert!(
        tally.throttled.load(Ordering::Relaxed) > 0,
        "the flooding address is throttled"
    );
    let answer = post_from(
        loopback(1),
        addr,
        "/api/register",
        &credentials("bob", "a good password"),
    )
    .await;
    assert_eq!(answer.status, 429, "registration from the flooding address");
    assert!(
        answer.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "429 says when to come back: {:?}",
        answer.retry_after
    );
    let elsewhere = post_from(
        loopback(2),
        addr,
        "/api/register",
        &credentials("bob", "a good password"),
    )
    .await;
    assert_eq!(elsewhere.status, 201, "registration from another address");
}

/// New names from many addresses: each registration is a real password hash, more than the
/// hasher threads can do. The owner's logins still get their turn (hasher capacity is kept
/// for logins), and none is counted as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_with_new_names_leave_hashers_for_logins() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    let (tally, tasks) = flood(300, move |client, round| async move {
        let from = loopback(10 + (client % 200) as u8);
        let name = format!("f{client}r{round}");
        post_from(
            from,
            addr,
            "/api/register",
            &credentials(&name, "a good password"),
        )
        .await
    })
    .await;
    owner_logs_in_during(addr, loopback(1), 6).await;
    tally.end(tasks).await;
}

// ---------------------------------------------------------------------------------------------
// Item 5: nobody can lock a named user out from elsewhere
// ---------------------------------------------------------------------------------------------

/// An attacker's wrong passwords for alice from one address throttle that address's attempts
/// for alice, with growing delays, but not alice's own login from another address.
#[tokio::test]
async fn an_attackers_failures_do_not_lock_the_owner_out() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    let attacker = loopback(66);
    let wrong = credentials("alice", "a wrong password");
    for i in 1..=5 {
        let answer = post_from(attacker, addr, "/api/login", &wrong).await;
        assert_eq!(answer.status, 401, "wrong password {i}");
    }
    let throttled = post_from(attacker, addr, "/api/login", &wrong).await;
    assert_eq!(throttled.status, 429, "the attacker's sixth guess");
    assert!(throttled.retry_after.is_some_and(|s| s >= 1), "Retry-After");
    let right = credentials("alice", &password_for("alice"));
    let from_attacker = post_from(attacker, addr, "/api/login", &right).await;
    assert_eq!(
        from_attacker.status, 429,
        "even a right password from the attacker's address"
    );
    for i in 1..=3 {
        let owner = post_from(loopback(1), addr, "/api/login", &right).await;
        assert_eq!(
            owner.status, 200,
            "the owner's login {i} from their own address"
        );
    }
}

/// The same over STOMP: failures from one address do not stop a STOMP login from another.
#[tokio::test]
async fn stomp_failures_elsewhere_do_not_lock_the_owner_out() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    let wrong = credentials("alice", "a wrong password");
    for _ in 1..=8 {
        post_from(loopback(67), addr, "/api/login", &wrong).await;
    }
    Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &password_for("alice"))],
        "alice",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Item 7: names differ by more than case
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn account_names_are_unique_ignoring_case() {
    let server = ServerProcess::start_strict(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    for name in ["ALICE", "Alice", "aLiCe"] {
        let r = register(addr, name, "another good password").await;
        r.assert_status(409, &format!("registering {name} beside alice"));
    }
    // The account keeps its own spelling, and only it logs in.
    login_ok(addr, "alice").await;
    login(addr, "ALICE", &password_for("alice"))
        .await
        .assert_status(401, "another spelling is no account");
    for name in ["Guest-1", "GUEST-2", "gUeSt-x"] {
        register(addr, name, "a good password")
            .await
            .assert_status(400, &format!("{name} is reserved for guests"));
    }
}

#[tokio::test]
async fn guests_cannot_take_an_accounts_name_in_another_case() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    register_ok(addr, "alice").await;
    for name in ["Alice", "ALICE", "alice", "Guest-12", "GUEST-12"] {
        let status = ws_status(addr, &format!("/ws?name={name}"), &[]).await;
        assert_eq!(status, 403, "a guest named {name}");
        let (_s, f) = Stomp::tcp_connect(server.stomp_addr(), &[("login", name)]).await;
        assert_eq!(f.command, "ERROR", "a STOMP guest named {name}: {f:?}");
    }
    ws_connect_ok(addr, "/ws?name=Bob", &[]).await;
}

/// A guest took `Carol` while it was free; registering `carol` ends that guest's session.
#[tokio::test]
async fn registering_a_name_ends_guests_using_it_in_another_case() {
    let server = ServerProcess::start(&[]);
    let mut guest = ws_connect_ok(server.addr(), "/ws?name=Carol", &[]).await;
    register_ok(server.addr(), "carol").await;
    match ws_next(&mut guest, Duration::from_secs(10)).await {
        WsEvent::Closed(Some(close)) => assert_eq!(u16::from(close.code), 4401, "{close:?}"),
        other => panic!("the guest named Carol must be closed with 4401: {other:?}"),
    }
}

#[tokio::test]
async fn parley_token_refuses_names_reserved_for_guests() {
    let data = fresh_data_dir();
    let data_str = data.to_str().unwrap();
    for name in ["guest-1", "Guest-1", "GUEST-abc"] {
        let out = run_parley(&["token", name, "--data", data_str], None, &[]);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "parley token {name} must fail and print no token: {out:?}"
        );
    }
    mint_token(&data, "alice", &[]);
}

// ---------------------------------------------------------------------------------------------
// Item 15: nbf
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let secret = b"attack-secret-0123456789abcdefghijklmnopqrstuvwxyz";
    let file = scratch_dir().join("jwt-secret");
    std::fs::write(&file, secret).unwrap();
    let server = ServerProcess::start_strict(&["--jwt-secret-file", file.to_str().unwrap()]);
    let token = |nbf: u64| {
        let now = now_secs();
        let claims = json!({
            "sub": "alice", "iat": now, "nbf": nbf, "exp": now + 600,
            "iss": "parley", "aud": "parley", "jti": format!("nbf-{nbf}"), "typ": "access",
        });
        let key = EncodingKey::from_secret(secret).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let now = now_secs();
    let future = me(server.addr(), &token(now + 600)).await;
    future.assert_status(401, "nbf ten minutes ahead");
    assert!(future.text().contains("not valid yet"), "{}", future.text());
    let ws = ws_status(
        server.addr(),
        "/ws",
        &[("Authorization", &bearer(&token(now + 600)))],
    )
    .await;
    assert_eq!(ws, 401, "a WebSocket upgrade with a token not valid yet");
    me(server.addr(), &token(now + 5))
        .await
        .assert_status(200, "nbf within the 30 s leeway");
    me(server.addr(), &token(now - 60))
        .await
        .assert_status(200, "nbf in the past");
}
