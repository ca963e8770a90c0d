//! TLS at Parley: HTTPS with HSTS and ALPN `http/1.1`, `wss://`, STOMP over TLS, certificate
//! reloads (SIGHUP and file changes) that keep every open connection, and bad certificates
//! refused at reload and at start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::tls::{self, Pair, TestCa};
use parley_tests::{auth, fresh_data_dir, parley_binary, ServerProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<TlsStream<TcpStream>>;

fn tls_args(pair: &Pair) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pair.cert.display().to_string(),
        "--tls-key".into(),
        pair.key.display().to_string(),
        "--stomp-tls".into(),
        "127.0.0.1:0".into(),
    ]
}

fn start(pair: &Pair, more: &[&str]) -> ServerProcess {
    let args = tls_args(pair);
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(more);
    ServerProcess::start(&all)
}

async fn wss(ca: &TestCa, server: &ServerProcess, name: &str) -> Wss {
    let stream = tls::connect(&ca.client(&[b"http/1.1"]), server.addr()).await;
    let url = format!("wss://{}/ws?name={name}", server.addr());
    timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake")
        .0
}

async fn send(ws: &mut Wss, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

async fn recv(ws: &mut Wss) -> Value {
    loop {
        match timeout(WAIT, ws.next()).await.expect("nothing received") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next JSON message of `kind`, skipping presence and the like.
async fn recv_type(ws: &mut Wss, kind: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn stomp_tls(ca: &TestCa, server: &ServerProcess, login: &str) -> StompClient {
    let addr = server.stomp_tls_addr().expect("STOMP over TLS listens");
    let stream = tls::connect(&ca.client(&[]), addr).await;
    StompClient::connect_over(stream, login).await
}

/// Waits until a new handshake with `addr` presents `want`.
async fn wait_for_leaf(ca: &TestCa, addr: std::net::SocketAddr, want: &[u8], what: &str) {
    let connector = ca.client(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls::served_leaf(&connector, addr).await != want {
        assert!(
            Instant::now() < deadline,
            "{what}: the new certificate is not served"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server's log holds `text`.
async fn wait_for_log(server: &ServerProcess, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.stderr_log();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `parley serve` with `pair` and expects it to refuse to start; returns its stderr.
fn refused_start(pair: &Pair) -> String {
    let data = fresh_data_dir();
    let mut child = Command::new(parley_binary())
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--http", "127.0.0.1:0", "--stomp-tcp", "off"])
        .args(tls_args(pair))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parley");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("parley started with a bad certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(!status.success(), "exit status {status}: {err}");
    err
}

#[tokio::test]
async fn https_serves_with_hsts_alpn_http11_and_modern_versions_only() {
    let ca = TestCa::new();
    let served = ca.served("first");
    let server = start(&served, &["--handshake-timeout", "1s"]);
    let h2_or_h1 = ca.client(&[b"h2", b"http/1.1"]);
    let (resp, alpn) = tls::request(&h2_or_h1, server.addr(), "GET", "/healthz", &[], b"").await;
    resp.assert_status(200, "GET /healthz over TLS");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    assert_eq!(
        resp.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let (info, _) = tls::request(&h2_or_h1, server.addr(), "GET", "/api/info", &[], b"").await;
    let stomp_tls = server.stomp_tls_addr().unwrap().to_string();
    assert_eq!(info.json()["stomp_tls"], stomp_tls.as_str());

    // TLS 1.2 is still spoken; TLS 1.1 is not. Security level 0 lets this openssl offer 1.1
    // at all; the server's handshake-failure alert is what refuses it.
    let tls12 = ca.client_with(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let stream = tls::connect(&tls12, server.addr()).await;
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-connect",
            &server.addr().to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let said = String::from_utf8_lossy(&s_client.stderr);
    assert!(!s_client.status.success(), "a TLS 1.1 handshake succeeded");
    assert!(said.contains("alert handshake failure"), "{said}");

    // Plain HTTP to the HTTPS listener gets no HTTP answer, and the connection ends.
    let mut plain = TcpStream::connect(server.addr()).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered");

    // A client that never starts its handshake is closed at --handshake-timeout.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "still open after 5 s: {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
}

#[tokio::test]
async fn login_over_tls_sets_a_secure_cookie_even_on_loopback() {
    let ca = TestCa::new();
    let served = ca.served("login");
    let args = tls_args(&served);
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start_strict(&all);
    let client = ca.client(&[b"http/1.1"]);
    let password = auth::password_for("tilda");
    let body = json!({"username": "tilda", "password": password}).to_string();
    let json = [("Content-Type", "application/json")];
    let (r, _) = tls::request(
        &client,
        server.addr(),
        "POST",
        "/api/register",
        &json,
        body.as_bytes(),
    )
    .await;
    r.assert_status(201, "register over TLS");
    let body = json!({"username": "tilda", "password": password, "cookie": true}).to_string();
    let (r, _) = tls::request(
        &client,
        server.addr(),
        "POST",
        "/api/login",
        &json,
        body.as_bytes(),
    )
    .await;
    r.assert_status(200, "login over TLS");
    let cookie = r
        .header_values("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(auth::SESSION_COOKIE))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", r.headers))
        .to_owned();
    assert!(
        cookie.split(';').any(|a| a.trim() == "Secure"),
        "Host is 127.0.0.1 but the page is https: {cookie}"
    );
}

#[tokio::test]
async fn connections_survive_a_certificate_swap_and_sighup() {
    let ca = TestCa::new();
    let served = ca.served("before");
    // No file watching: the signal alone reloads.
    let mut server = start(&served, &["--tls-check-interval", "0s"]);
    let first = served.der();
    assert_eq!(
        tls::served_leaf(&ca.client(&[]), server.addr()).await,
        first
    );

    let mut ws = wss(&ca, &server, "alice").await;
    send(&mut ws, json!({"type": "join", "room": "tls"})).await;
    recv_type(&mut ws, "joined").await;
    let mut stomp = stomp_tls(&ca, &server, "bob").await;
    stomp.subscribe("s1", "/topic/tls").await;

    let next = ca.issue("after", 30);
    next.install(&served);
    server.signal(libc::SIGHUP);
    let stomp_addr = server.stomp_tls_addr().unwrap();
    wait_for_leaf(&ca, server.addr(), &next.der(), "HTTPS after SIGHUP").await;
    wait_for_leaf(&ca, stomp_addr, &next.der(), "STOMP over TLS after SIGHUP").await;

    // Both connections made before the swap still carry messages, both ways.
    for round in 0..3 {
        let body = format!("over wss {round}");
        send(
            &mut ws,
            json!({"type": "send", "room": "tls", "body": body}),
        )
        .await;
        // The subscriber also gets its own sends back: skip those of earlier rounds.
        loop {
            let got = stomp.recv().await.expect("MESSAGE over STOMP-TLS");
            assert_eq!(got.command, "MESSAGE", "{got:?}");
            if got.body == body.as_bytes() {
                break;
            }
        }
        let body = format!("over stomp-tls {round}");
        stomp
            .send("SEND", &[("destination", "/topic/tls")], body.as_bytes())
            .await;
        loop {
            let m = recv_type(&mut ws, "message").await;
            if m["body"] == body.as_str() {
                break;
            }
        }
    }
    assert!(
        server.try_exit_status().is_none(),
        "SIGHUP must not end the server"
    );
}

#[tokio::test]
async fn a_certificate_file_change_is_reloaded_without_a_signal() {
    let ca = TestCa::new();
    let served = ca.served("old");
    let server = start(&served, &["--tls-check-interval", "200ms"]);
    let next = ca.issue("new", 30);
    next.install(&served);
    wait_for_leaf(&ca, server.addr(), &next.der(), "after the files changed").await;
}

#[tokio::test]
async fn expired_or_mismatched_certificates_are_refused_at_reload_and_at_start() {
    let ca = TestCa::new();
    let served = ca.served("good");
    let good = served.der();
    let server = start(&served, &["--tls-check-interval", "0s"]);
    let client = ca.client(&[]);
    let mut stomp = stomp_tls(&ca, &server, "carol").await;

    let expired = ca.issue("expired", -1);
    expired.install(&served);
    server.signal(libc::SIGHUP);
    let log = wait_for_log(&server, "still serving the previous one").await;
    assert!(log.contains("expired on"), "{log}");
    assert_eq!(tls::served_leaf(&client, server.addr()).await, good);

    let (a, b) = (ca.issue("a", 30), ca.issue("b", 30));
    Pair {
        cert: a.cert.clone(),
        key: b.key.clone(),
    }
    .install(&served);
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "does not belong to the certificate").await;
    assert_eq!(tls::served_leaf(&client, server.addr()).await, good);
    stomp
        .send(
            "SEND",
            &[("destination", "/topic/x"), ("receipt", "r")],
            b"still here",
        )
        .await;
    let receipt = stomp.recv().await.expect("RECEIPT");
    assert_eq!(receipt.command, "RECEIPT");

    let err = refused_start(&expired);
    assert!(err.contains("expired on"), "{err}");
    let err = refused_start(&Pair {
        cert: a.cert,
        key: b.key,
    });
    assert!(err.contains("does not belong"), "{err}");
}
