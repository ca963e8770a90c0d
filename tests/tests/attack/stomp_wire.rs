//! STOMP on the wire: sessions that never speak (before or after CONNECT) are closed, and a
//! 1.0 subscriber never gets a header line it would read differently from what was meant.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::common;

/// Opens a STOMP TCP connection and sends `connect` (a whole CONNECT frame); returns the stream
/// once CONNECTED arrived.
async fn connected(server: &ServerProcess, connect: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.stomp_addr()).await.unwrap();
    stream.write_all(connect.as_bytes()).await.unwrap();
    let head = read_frame(&mut stream).await;
    assert!(head.starts_with("CONNECTED\n"), "{head:?}");
    stream
}

/// Reads one frame (up to its NUL) as text, heart-beat EOLs before it skipped.
async fn read_frame(stream: &mut TcpStream) -> String {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("no frame within the wait")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-frame after {:?}",
            String::from_utf8_lossy(&frame)
        );
        match byte[0] {
            0 => return String::from_utf8(frame).unwrap(),
            b'\n' if frame.is_empty() => {}
            b => frame.push(b),
        }
    }
}

/// Everything until the server closes (bounded), and how long after `since` that was.
async fn until_closed(
    stream: &mut TcpStream,
    limit: Duration,
    since: Instant,
) -> (String, Duration) {
    let mut all = Vec::new();
    timeout(limit, stream.read_to_end(&mut all))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still open after {limit:?}: {:?}",
                String::from_utf8_lossy(&all)
            )
        })
        .unwrap();
    (String::from_utf8_lossy(&all).into_owned(), since.elapsed())
}

/// Item 10: `heart-beat:0,0` over TCP used to mean a session could stay silent for ever (and a
/// client promising beats once an hour, nearly so). Now a session that sends nothing for
/// `--stomp-idle-timeout` is told so and closed; one that keeps talking stays.
#[tokio::test]
async fn a_silent_stomp_session_is_closed_at_the_idle_limit_whatever_its_heart_beat() {
    let server = ServerProcess::start(&["--stomp-idle-timeout", "2s"]);
    let mut no_beats = connected(
        &server,
        "CONNECT\naccept-version:1.2\nhost:/\nlogin:quiet\nheart-beat:0,0\n\n\0",
    )
    .await;
    let no_beats_since = Instant::now();
    let mut rare_beats = connected(
        &server,
        "CONNECT\naccept-version:1.2\nhost:/\nlogin:rare\nheart-beat:3600000,0\n\n\0",
    )
    .await;
    let rare_beats_since = Instant::now();
    let mut chatty = connected(
        &server,
        "CONNECT\naccept-version:1.2\nhost:/\nlogin:chatty\nheart-beat:0,0\n\n\0",
    )
    .await;
    let talking = async {
        // EOLs are heart-beats: they count as the client being alive.
        for _ in 0..14 {
            sleep(Duration::from_millis(300)).await;
            chatty.write_all(b"\n").await.unwrap();
        }
        chatty
            .write_all(b"SUBSCRIBE\nid:0\ndestination:/topic/idle\nreceipt:still-here\n\n\0")
            .await
            .unwrap();
        read_frame(&mut chatty).await
    };
    let limit = Duration::from_secs(20);
    let (no_beats, rare_beats, receipt) = tokio::join!(
        until_closed(&mut no_beats, limit, no_beats_since),
        until_closed(&mut rare_beats, limit, rare_beats_since),
        talking
    );
    for (name, (said, after)) in [
        ("heart-beat:0,0", no_beats),
        ("heart-beat:3600000,0", rare_beats),
    ] {
        assert!(
            said.starts_with("ERROR\n") && said.contains("message:idle timeout"),
            "{name}: {said:?}"
        );
        // The limit counts from the CONNECT the server read, a little before CONNECTED came.
        assert!(
            after >= Duration::from_millis(1_500),
            "{name}: closed after {after:?}"
        );
    }
    assert!(
        receipt.starts_with("RECEIPT\nreceipt-id:still-here"),
        "a client that keeps sending stays connected: {receipt:?}"
    );
}

/// Item 10, before CONNECT: a TCP client trickling a CONNECT that never ends, and a WebSocket
/// that upgrades to `/stomp` and says nothing, are both closed at the handshake timeout.
#[tokio::test]
async fn a_connection_that_never_completes_connect_is_closed_at_the_handshake_timeout() {
    let server = ServerProcess::start(&["--handshake-timeout", "1s"]);
    let tcp = async {
        let mut stream = TcpStream::connect(server.stomp_addr()).await.unwrap();
        let started = Instant::now();
        let mut said = Vec::new();
        // One byte of a header every 200 ms: always busy, never done.
        for b in b"CONNECT\naccept-version:1.2\nlogin:slowloris-slowloris-slowloris"
            .iter()
            .cycle()
        {
            if started.elapsed() > Duration::from_secs(15) {
                panic!("a trickled CONNECT kept the connection open for 15 s");
            }
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            let mut chunk = [0u8; 512];
            match timeout(Duration::from_millis(200), stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => said.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        let _ = timeout(WAIT, stream.read_to_end(&mut said)).await;
        (
            String::from_utf8_lossy(&said).into_owned(),
            started.elapsed(),
        )
    };
    let ws = async {
        let (mut ws, _) = common::connect(&server, "/stomp").await;
        let started = Instant::now();
        let mut said = String::new();
        loop {
            match timeout(Duration::from_secs(15), ws.next()).await {
                Err(_) => panic!("a silent /stomp WebSocket stayed open for 15 s"),
                Ok(Some(Ok(Message::Text(t)))) => said.push_str(&t),
                Ok(Some(Ok(Message::Binary(b)))) => said.push_str(&String::from_utf8_lossy(&b)),
                Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
        (said, started.elapsed())
    };
    let ((tcp_said, tcp_after), (ws_said, ws_after)) = tokio::join!(tcp, ws);
    for (name, said, after) in [
        ("TCP", tcp_said, tcp_after),
        ("WebSocket", ws_said, ws_after),
    ] {
        assert!(
            said.starts_with("ERROR\n") && said.contains("no CONNECT frame in time"),
            "{name}: {said:?}"
        );
        assert!(
            after >= Duration::from_millis(500),
            "{name}: closed after {after:?}"
        );
    }
}

/// Item 14: a 1.1/1.2 client may name a header `sender\c` (`sender:` once unescaped). 1.0 has
/// no escapes, so that header used to reach a 1.0 subscriber as the line `sender::admin` —
/// `sender` = `:admin` to a 1.0 parser where the last header wins. Headers 1.0 cannot carry
/// (a colon in the name, a line break anywhere) are now left out of 1.0 frames; 1.1/1.2
/// subscribers still get them, escaped.
#[tokio::test]
async fn a_1_0_subscriber_never_gets_a_header_line_it_would_misread() {
    let server = ServerProcess::start(&[]);
    let mut old = connected(&server, "CONNECT\nlogin:old\n\n\0").await;
    old.write_all(b"SUBSCRIBE\ndestination:/topic/wire\nreceipt:r\n\n\0")
        .await
        .unwrap();
    let receipt = read_frame(&mut old).await;
    assert!(receipt.starts_with("RECEIPT\n"), "{receipt:?}");
    let mut new = StompClient::connect(server.stomp_addr(), "new").await;
    new.subscribe("0", "/topic/wire").await;

    let mut eve = StompClient::connect(server.stomp_addr(), "eve").await;
    eve.send(
        "SEND",
        &[
            ("destination", "/topic/wire"),
            ("sender\\c", "admin"),
            ("x-a\\cb", "c"),
            ("x-lf", "1\\nforged:yes"),
            ("x-ok", "a:b"),
        ],
        b"hello",
    )
    .await;

    let frame = read_frame(&mut old).await;
    let (head, body) = frame.split_once("\n\n").expect("a header block");
    assert_eq!(body, "hello");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("MESSAGE"));
    // How a 1.0 client reads each line: the name up to the first colon, the value after it.
    let headers: Vec<(&str, &str)> = lines
        .map(|l| l.split_once(':').unwrap_or((l, "")))
        .collect();
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(values("sender"), ["eve"], "{frame:?}");
    assert_eq!(values("x-a"), Vec::<&str>::new(), "{frame:?}");
    assert_eq!(values("x-lf"), Vec::<&str>::new(), "{frame:?}");
    assert_eq!(values("forged"), Vec::<&str>::new(), "{frame:?}");
    assert_eq!(values("x-ok"), ["a:b"], "{frame:?}");

    let m = new.recv().await.expect("MESSAGE for the 1.2 subscriber");
    assert_eq!(m.header("sender"), "eve");
    assert_eq!(m.header("sender:"), "admin");
    assert_eq!(m.header("x-a:b"), "c");
    assert_eq!(m.header("x-lf"), "1\nforged:yes");
}
