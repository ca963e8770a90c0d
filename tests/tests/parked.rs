//! Parked connections: a STOMP or raw JSON connection with no frame either way for two seconds
//! (heart-beats, pings and pongs aside) gives up its task and waits parked
//! (`parley_connections_parked` counts them). Each thing a connection waits for must still
//! reach it there: a delivery, its client's input, its client's close, its heart-beat timer,
//! and shutdown — over TCP, TLS, WebSocket and WebSocket over TLS.

mod json_client;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_tests::http::until_metric;
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::tls::{self, TestCa};
use parley_tests::ServerProcess;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Wss = WebSocketStream<TlsStream<TcpStream>>;

const ROOM: &str = "/topic/parked";

async fn until_parked(metrics: SocketAddr, n: usize) {
    until_metric(metrics, "parley_connections_parked", n as f64).await;
}

/// STOMP over WebSocket as `login`, subscribed to [`ROOM`].
async fn ws_subscriber(server: &ServerProcess, login: &str) -> Ws {
    let mut req = server.ws_url("/stomp").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    stomp_over(&mut ws, login).await;
    ws
}

/// STOMP over `wss://` as `login`, subscribed to [`ROOM`].
async fn wss_subscriber(ca: &TestCa, server: &ServerProcess, login: &str) -> Wss {
    let stream = tls::connect(&ca.client(&[b"http/1.1"]), server.addr()).await;
    let url = format!("wss://{}/stomp", server.addr());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    stomp_over(&mut ws, login).await;
    ws
}

/// CONNECT as `login` and SUBSCRIBE to [`ROOM`] on a WebSocket.
async fn stomp_over<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, login: &str) {
    let connect = format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\n\n\0");
    ws.send(Message::text(connect)).await.unwrap();
    assert!(ws_frame(ws).await.starts_with("CONNECTED\n"));
    let subscribe = format!("SUBSCRIBE\nid:0\ndestination:{ROOM}\nreceipt:r\n\n\0");
    ws.send(Message::text(subscribe)).await.unwrap();
    assert!(ws_frame(ws).await.starts_with("RECEIPT\n"));
}

/// The next STOMP frame on `ws` (heart-beats skipped).
async fn ws_frame<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> String {
    loop {
        let message = timeout(WAIT, ws.next())
            .await
            .expect("no WebSocket message in time")
            .expect("the WebSocket ended")
            .unwrap();
        match message {
            Message::Text(t) if t.as_str() != "\n" => return t.to_string(),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a STOMP frame, got {other:?}"),
        }
    }
}

async fn tcp_subscriber(server: &ServerProcess, login: &str) -> StompClient {
    let mut client = StompClient::connect(server.stomp_addr(), login).await;
    client.subscribe("0", ROOM).await;
    client
}

async fn say(client: &mut StompClient, body: &str) {
    client
        .send("SEND", &[("destination", ROOM)], body.as_bytes())
        .await;
}

async fn expect_tcp(client: &mut StompClient, body: &str) {
    let frame = client.recv().await.expect("a MESSAGE");
    assert_eq!(frame.command, "MESSAGE", "{frame:?}");
    assert_eq!(frame.body, body.as_bytes());
}

async fn expect_ws<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, body: &str) {
    let frame = ws_frame(ws).await;
    assert!(
        frame.starts_with("MESSAGE\n") && frame.ends_with(&format!("\n\n{body}\0")),
        "{frame:?}"
    );
}

/// Runs `test` on a thread with a large stack: in a debug build, polling these tests' futures
/// takes more than a test thread's 2 MiB.
fn on_large_stack(test: impl Future<Output = ()> + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(test);
        });
    if let Err(panic) = thread.unwrap().join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn parked_connections_wake_for_deliveries_input_and_close() {
    on_large_stack(deliveries_input_and_close());
}

async fn deliveries_input_and_close() {
    let server = ServerProcess::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let mut alice = tcp_subscriber(&server, "alice").await;
    let mut bob = ws_subscriber(&server, "bob").await;
    let mut carol = wake_each_way(&server, metrics, &mut alice, &mut bob).await;

    // A client leaving while parked ends its session.
    until_parked(metrics, 3).await;
    drop(alice);
    bob.close(None).await.unwrap();
    until_metric(metrics, "parley_broker_sessions", 1.0).await;
    until_parked(metrics, 1).await;
    say(&mut carol, "four").await;
    expect_tcp(&mut carol, "four").await;
}

#[test]
fn parked_connections_over_tls_wake_for_deliveries_and_input() {
    on_large_stack(over_tls());
}

/// STOMP over TLS and over `wss://`: the socket's readiness under TLS wakes them.
async fn over_tls() {
    let ca = TestCa::new();
    let pair = ca.served("localhost");
    let (cert, key) = (
        pair.cert.display().to_string(),
        pair.key.display().to_string(),
    );
    let server = ServerProcess::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--stomp-tls",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics_addr();
    let stream = tls::connect(&ca.client(&[]), server.stomp_tls_addr().unwrap()).await;
    let mut erin = StompClient::connect_over(stream, "erin").await;
    erin.subscribe("0", ROOM).await;
    let mut finn = wss_subscriber(&ca, &server, "finn").await;
    wake_each_way(&server, metrics, &mut erin, &mut finn).await;
}

/// With `stomp` and `ws` subscribed: once both park, a third client's message wakes both;
/// once all three park, each of the two is woken by its own SEND. The third client (plain
/// TCP) is returned.
async fn wake_each_way<S: AsyncRead + AsyncWrite + Unpin>(
    server: &ServerProcess,
    metrics: SocketAddr,
    stomp: &mut StompClient,
    ws: &mut WebSocketStream<S>,
) -> StompClient {
    until_parked(metrics, 2).await;
    let mut third = tcp_subscriber(server, "third").await;
    say(&mut third, "one").await;
    expect_tcp(stomp, "one").await;
    expect_ws(ws, "one").await;
    expect_tcp(&mut third, "one").await;

    until_parked(metrics, 3).await;
    say(stomp, "two").await;
    expect_tcp(stomp, "two").await;
    expect_ws(ws, "two").await;
    expect_tcp(&mut third, "two").await;

    until_parked(metrics, 3).await;
    let send = format!("SEND\ndestination:{ROOM}\n\nthree\0");
    ws.send(Message::text(send)).await.unwrap();
    expect_ws(ws, "three").await;
    expect_tcp(stomp, "three").await;
    expect_tcp(&mut third, "three").await;
    third
}

#[test]
fn parked_raw_clients_wake_for_deliveries_input_close_and_shutdown() {
    on_large_stack(raw_clients());
}

/// The raw protocol at `/ws` parks as STOMP does: a room's message, the client's own send, a
/// client leaving and shutdown each reach a parked one.
async fn raw_clients() {
    let mut server = ServerProcess::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let mut alice = json_client::raw(&server, "alice").await;
    raw_join(&mut alice).await;
    let mut carol = json_client::raw(&server, "carol").await;
    raw_join(&mut carol).await;
    let mut bob = tcp_subscriber(&server, "bob").await;

    until_parked(metrics, 3).await;
    say(&mut bob, "one").await;
    expect_tcp(&mut bob, "one").await;
    expect_raw(&mut alice, "one").await;
    expect_raw(&mut carol, "one").await;

    until_parked(metrics, 3).await;
    let send = json!({"type": "send", "room": RAW_ROOM, "body": "two", "ref": "r2"});
    json_client::send(&mut alice, send).await;
    let ack = json_client::next_of(&mut alice, "ack", WAIT).await;
    assert_eq!(ack.expect("an ack")["ref"], "r2");
    expect_raw(&mut carol, "two").await;
    expect_tcp(&mut bob, "two").await;

    until_parked(metrics, 3).await;
    carol.close(None).await.unwrap();
    until_metric(metrics, "parley_broker_sessions", 2.0).await;
    // Carol's leaving woke Alice too: she must be parked again before the shutdown.
    let left = json_client::next_of(&mut alice, "presence", WAIT).await;
    assert_eq!(left.expect("carol's leaving")["event"], "leave");

    until_parked(metrics, 2).await;
    server.terminate();
    let close = loop {
        match timeout(WAIT, alice.next()).await.expect("no close in time") {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    // Gone rather than answering the close: the server's close wait ends at once.
    drop((alice, bob));
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "parley exited with {status}");
}

/// The room [`ROOM`] names, as raw clients name it.
const RAW_ROOM: &str = "parked";

/// Joins [`RAW_ROOM`], as a raw client.
async fn raw_join(ws: &mut json_client::Ws) {
    json_client::send(ws, json!({"type": "join", "room": RAW_ROOM})).await;
    let joined = json_client::next_of(ws, "joined", WAIT).await;
    assert!(joined.is_some(), "no joined answer");
}

/// The next room message a raw client gets (presence and the like skipped) has `body`.
async fn expect_raw(ws: &mut json_client::Ws, body: &str) {
    let message = json_client::next_of(ws, "message", WAIT).await;
    assert_eq!(message.expect("a message")["body"], body);
}

#[test]
fn a_parked_connection_keeps_its_heart_beats_and_hears_shutdown() {
    on_large_stack(heart_beats_and_shutdown());
}

async fn heart_beats_and_shutdown() {
    let mut server = ServerProcess::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--stomp-heart-beat",
        "3000,1000",
        "--shutdown-grace",
        "5s",
    ]);
    let metrics = server.metrics_addr();
    let stream = TcpStream::connect(server.stomp_addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Beats from the server every 3 s: after 2 quiet seconds the connection parks, and its
    // timer must wake it for each beat. The client beats every 0.5 s (1 s agreed): heart-beats
    // wake it, but do not keep it from parking.
    writer
        .write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:dora\nheart-beat:1000,3000\n\n\0")
        .await
        .unwrap();
    let beats = tokio::spawn(async move {
        while writer.write_all(b"\n").await.is_ok() {
            sleep(Duration::from_millis(500)).await;
        }
    });
    let mut received = Vec::new();
    let mut chunk = [0; 1024];
    let mut read = async |received: &mut Vec<u8>| {
        let n = timeout(Duration::from_secs(5), reader.read(&mut chunk))
            .await
            .expect("the server went quiet")
            .unwrap();
        received.extend_from_slice(&chunk[..n]);
        n
    };
    while !received.ends_with(b"\0") {
        assert!(read(&mut received).await > 0);
    }
    assert!(received.starts_with(b"CONNECTED\n"), "{received:?}");
    assert!(
        String::from_utf8_lossy(&received).contains("heart-beat:3000,1000"),
        "{received:?}"
    );
    for beat in 0..2 {
        until_parked(metrics, 1).await;
        received.clear();
        assert!(read(&mut received).await > 0);
        assert_eq!(received, b"\n", "heart-beat {beat}");
    }

    until_parked(metrics, 1).await;
    server.terminate();
    received.clear();
    while read(&mut received).await > 0 {}
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("ERROR\nmessage:server shutting down"),
        "{text:?}"
    );
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "parley exited with {status}");
    beats.abort();
}
