//! STOMP on the wire: a 1.0 subscriber never gets a header line it would read differently from
//! what was meant.

use parley_tests::stomp::{StompClient, WAIT};
use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

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
