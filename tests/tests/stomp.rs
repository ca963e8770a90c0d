//! STOMP end to end against the real binary: delivery over TCP and WebSocket, errors, and the
//! slow-consumer policy.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::ServerProcess;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn topic_message_reaches_every_subscriber_with_server_headers() {
    let server = ServerProcess::start(&[]);
    let mut alice = StompClient::connect(server.stomp_addr(), "alice").await;
    let mut bob = StompClient::connect(server.stomp_addr(), "bob").await;
    bob.subscribe("0", "/topic/general").await;
    alice.subscribe("a", "/topic/general").await;
    alice
        .send(
            "SEND",
            &[("destination", "/topic/general"), ("sender", "mallory")],
            b"hi all",
        )
        .await;
    for client in [&mut alice, &mut bob] {
        let m = client.recv().await.expect("MESSAGE");
        assert_eq!(m.command, "MESSAGE");
        assert_eq!(m.header("destination"), "/topic/general");
        assert_eq!(m.header("sender"), "alice", "the sender cannot be forged");
        assert!(!m.header("message-id").is_empty());
        assert!(m.header("timestamp").parse::<u64>().is_ok());
        assert_eq!(m.body, b"hi all");
    }
}

#[tokio::test]
async fn errors_carry_message_and_receipt_id_then_close() {
    let server = ServerProcess::start(&[]);
    let mut c = StompClient::connect(server.stomp_addr(), "carol").await;
    c.send(
        "SUBSCRIBE",
        &[
            ("id", "0"),
            ("destination", "/nowhere/x"),
            ("receipt", "r-7"),
        ],
        b"",
    )
    .await;
    let e = c.recv().await.expect("ERROR");
    assert_eq!(e.command, "ERROR");
    assert_eq!(e.header("receipt-id"), "r-7");
    assert!(e.header("message").contains("invalid destination"), "{e:?}");
    assert!(c.recv().await.is_none(), "the server closes after ERROR");
}

#[tokio::test]
async fn connect_must_come_within_the_handshake_timeout() {
    let server = ServerProcess::start(&["--handshake-timeout", "1s"]);
    let mut stream = tokio::net::TcpStream::connect(server.stomp_addr())
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .expect("not closed")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed too early"
    );
    assert!(
        buf.starts_with(b"ERROR\n"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn websocket_frames_split_and_joined_across_messages() {
    let server = ServerProcess::start(&["--guest-queues"]);
    let mut req = server.ws_url("/stomp").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v12.stomp");
    // CONNECT split over three messages, then SUBSCRIBE and SEND together in one.
    for part in [
        "CONN",
        "ECT\naccept-version:1.2\nhost:/\nlogin:dave\n",
        "\n\0",
    ] {
        ws.send(Message::text(part)).await.unwrap();
    }
    let both =
        "SUBSCRIBE\nid:s\ndestination:/queue/jobs\n\n\0SEND\ndestination:/queue/jobs\n\nwork\0";
    ws.send(Message::text(both)).await.unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match timeout(WAIT, ws.next())
            .await
            .expect("no message")
            .expect("stream ended")
            .unwrap()
        {
            Message::Text(t) if t.as_str() != "\n" => texts.push(t.to_string()),
            _ => {}
        }
    }
    assert!(texts[0].starts_with("CONNECTED\n"), "{texts:?}");
    assert!(
        texts[1].starts_with("MESSAGE\n") && texts[1].ends_with("\n\nwork\0"),
        "{texts:?}"
    );
    // A binary body comes back as a binary message.
    let mut frame = b"SEND\ndestination:/queue/jobs\ncontent-length:3\n\n\xff\x00\xfe\0".to_vec();
    frame.truncate(frame.len());
    ws.send(Message::binary(frame)).await.unwrap();
    loop {
        match timeout(WAIT, ws.next())
            .await
            .expect("no message")
            .expect("ended")
            .unwrap()
        {
            Message::Binary(b) => {
                assert!(b.ends_with(b"\n\n\xff\x00\xfe\0"));
                break;
            }
            Message::Text(t) if t.as_str() == "\n" => {}
            other => panic!("expected a binary MESSAGE, got {other:?}"),
        }
    }
}

/// A subscriber that stops reading is cut off; the publisher and the other subscriber are not
/// slowed down and miss nothing.
#[tokio::test]
async fn slow_subscriber_does_not_stall_others() {
    let server = ServerProcess::start(&[
        "--stomp-outbox",
        "128",
        "--rate-limit",
        "0",
        "--public-stats",
    ]);
    let addr = server.stomp_addr();
    let mut slow = StompClient::connect(addr, "slow").await;
    slow.subscribe("s", "/topic/firehose").await;
    let mut fast = StompClient::connect(addr, "fast").await;
    fast.subscribe("f", "/topic/firehose").await;
    let mut publisher = StompClient::connect(addr, "pub").await;

    const COUNT: usize = 2_000;
    let body = vec![b'x'; 16 * 1024];
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < COUNT {
            let m = fast
                .recv()
                .await
                .expect("fast subscriber lost its connection");
            assert_eq!(m.command, "MESSAGE");
            assert_eq!(
                m.header("seq"),
                seen.to_string(),
                "in order, nothing missing"
            );
            seen += 1;
        }
        seen
    });
    let started = Instant::now();
    for i in 0..COUNT {
        let seq = i.to_string();
        let receipt = if i + 1 == COUNT { "done" } else { "" };
        let mut headers = vec![("destination", "/topic/firehose"), ("seq", seq.as_str())];
        if !receipt.is_empty() {
            headers.push(("receipt", receipt));
        }
        publisher.send("SEND", &headers, &body).await;
        if i % 20 == 19 {
            // A steady stream rather than one burst, so a reader that keeps up is never
            // mistaken for a slow one by the small outbox.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let receipt = publisher.recv().await.expect("receipt");
    assert_eq!(receipt.header("receipt-id"), "done");
    let publish_time = started.elapsed();
    assert_eq!(
        timeout(WAIT, reader)
            .await
            .expect("fast reader stuck")
            .unwrap(),
        COUNT
    );
    assert!(
        publish_time < Duration::from_secs(10),
        "publisher stalled for {publish_time:?}"
    );

    // The slow one was disconnected: draining what the kernel buffered ends in EOF, never all
    // 2000 messages (32 MiB) — and the server counted it.
    let mut got = 0;
    while let Some(frame) = slow.recv().await {
        if frame.command == "MESSAGE" {
            got += 1;
        }
    }
    assert!(
        got < COUNT,
        "slow subscriber received everything; it was never cut off"
    );
    let stats = http_get(&server, "/stats").await;
    assert!(stats.contains("\"slow_consumers\":1"), "{stats}");
}

async fn http_get(server: &ServerProcess, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Heart-beats as negotiated: the server beats at max(sx, cy) and drops a client silent for
/// longer than twice max(cx, sy).
#[tokio::test]
async fn heart_beats_are_sent_and_silence_is_punished() {
    let server = ServerProcess::start(&["--stomp-heart-beat", "300,400"]);
    let mut stream = tokio::net::TcpStream::connect(server.stomp_addr())
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    // We can send every 500 ms and want beats every 200 ms: server→client max(300, 200) = 300 ms,
    // client→server max(500, 400) = 500 ms, tolerance ×2 = 1 s.
    stream
        .write_all(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:500,200\n\n\0")
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut beats_before_error = 0;
    let mut chunk = [0u8; 1024];
    loop {
        let n = timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("server went quiet")
            .unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        if !received.windows(5).any(|w| w == b"ERROR") {
            beats_before_error = received.iter().filter(|&&b| b == b'\n').count();
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("CONNECTED\n") && text.contains("heart-beat:300,400"),
        "{text}"
    );
    assert!(text.contains("ERROR\nmessage:heart-beat timeout"), "{text}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&elapsed),
        "silent client dropped after {elapsed:?}, expected about 1 s"
    );
    // CONNECTED has 6 lines; the rest before the ERROR are beats (~3 in 1 s at 300 ms).
    assert!(beats_before_error >= 6 + 2, "too few heart-beats: {text:?}");
}

/// STOMP TCP connections count toward `--max-connections` like HTTP ones.
#[tokio::test]
async fn stomp_connections_share_the_connection_limit() {
    let server = ServerProcess::start(&["--max-connections", "2"]);
    let _a = StompClient::connect(server.stomp_addr(), "a").await;
    let _b = StompClient::connect(server.stomp_addr(), "b").await;
    let mut third = tokio::net::TcpStream::connect(server.stomp_addr())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = timeout(WAIT, third.read_to_end(&mut buf))
        .await
        .expect("over-limit connection left open");
    assert!(
        n.is_err() || buf.is_empty(),
        "over-limit connection was served: {buf:?}"
    );
}

/// Joining a room (subscribing to `/topic/<room>`) is announced on `/topic/<room>.presence`:
/// a user's first subscription joins, their last one leaves; several sessions are one member.
#[tokio::test]
async fn presence_is_announced_per_user() {
    let server = ServerProcess::start(&[]);
    let addr = server.stomp_addr();
    let mut watcher = StompClient::connect(addr, "watcher").await;
    watcher.subscribe("p", "/topic/general.presence").await;
    let mut tab1 = StompClient::connect(addr, "alice").await;
    tab1.subscribe("r", "/topic/general").await;
    let joined = watcher.recv().await.expect("join");
    assert_eq!(
        (joined.header("user"), joined.header("event")),
        ("alice", "join"),
        "{joined:?}"
    );
    let mut tab2 = StompClient::connect(addr, "alice").await;
    tab2.subscribe("r", "/topic/general").await;
    drop(tab1);
    tab2.send("DISCONNECT", &[("receipt", "bye")], b"").await;
    assert_eq!(
        tab2.recv().await.expect("receipt").header("receipt-id"),
        "bye"
    );
    // Only the last session leaving is a leave; the second tab's join was no event at all.
    let left = watcher.recv().await.expect("leave");
    assert_eq!(
        (left.header("user"), left.header("event")),
        ("alice", "leave"),
        "{left:?}"
    );
}

/// Room messages over STOMP obey the chat limits: body size and rate (ERROR, then close).
#[tokio::test]
async fn room_body_limit_and_rate_limit_apply_to_stomp() {
    let server =
        ServerProcess::start(&["--max-body", "100", "--rate-limit", "5", "--guest-queues"]);
    let mut big = StompClient::connect(server.stomp_addr(), "big").await;
    big.send(
        "SEND",
        &[("destination", "/topic/limits"), ("receipt", "b")],
        &[b'x'; 101],
    )
    .await;
    let e = big.recv().await.expect("ERROR");
    assert_eq!((e.command.as_str(), e.header("receipt-id")), ("ERROR", "b"));
    assert!(e.header("message").contains("100 bytes"), "{e:?}");
    // Queues keep the frame limit: a larger body is fine there.
    let mut q = StompClient::connect(server.stomp_addr(), "q").await;
    q.send(
        "SEND",
        &[("destination", "/queue/big"), ("receipt", "q")],
        &[b'x'; 1000],
    )
    .await;
    assert_eq!(q.recv().await.expect("RECEIPT").command, "RECEIPT");

    let mut fast = StompClient::connect(server.stomp_addr(), "fast").await;
    for _ in 0..20 {
        fast.send("SEND", &[("destination", "/topic/limits.x")], b"hi")
            .await;
    }
    let e = fast.recv().await.expect("ERROR");
    assert_eq!(e.command, "ERROR");
    assert!(e.header("message").contains("rate limited"), "{e:?}");
}

#[tokio::test]
async fn a_send_and_a_close_in_one_write_still_sends_over_websocket() {
    use parley_tests::raw::{Frame, RawWebSocket};
    let server = ServerProcess::start(&[]);
    let mut bob = StompClient::connect(server.stomp_addr(), "bob").await;
    bob.subscribe("0", "/topic/general").await;
    let subprotocol = [("Sec-WebSocket-Protocol", "v12.stomp")];
    let (mut alice, _) = RawWebSocket::connect(server.addr(), "/stomp", &subprotocol).await;
    let connect = "CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\n\n\0";
    alice.send(&Frame::text(connect)).await;
    let connected = alice.expect_frame().await;
    assert!(connected.payload.starts_with(b"CONNECTED"), "{connected:?}");
    // The SEND and the WebSocket close in one write: the server reads them together.
    let send = "SEND\ndestination:/topic/general\n\nlast words\0";
    let mut bytes = Frame::text(send).encode(Some([1, 2, 3, 4]));
    bytes.extend(Frame::close(1000, "bye").encode(Some([5, 6, 7, 8])));
    alice.send_bytes(&bytes).await;
    let m = bob.recv().await.expect("MESSAGE");
    assert_eq!(m.body, b"last words", "{m:?}");
}
