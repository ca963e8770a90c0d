//! Request smuggling: ambiguous message framing is refused or answered once, and a request
//! hidden in a body is never answered as a request of its own.

use std::time::Duration;

use parley_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Writes `raw` and reads until the server closes or is quiet for a second; returns the status
/// lines of the responses it sent.
async fn statuses(server: &ServerProcess, raw: &[u8]) -> Vec<String> {
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match timeout(Duration::from_secs(1), stream.read(&mut chunk)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .map(str::to_owned)
        .collect()
}

/// The framing attacks of RFC 9112 §6.3 and §11.2, each with a second request hidden where a
/// proxy and the server could disagree about where the first one ends.
#[tokio::test]
async fn ambiguous_framing_is_refused_and_hidden_requests_are_never_answered() {
    let server = ServerProcess::start(&[]);
    let hidden = "GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
                 Content-Length: 45\r\n\r\nabcd{hidden}"
            ),
        ),
        (
            "an unknown transfer coding",
            format!(
                "POST /api/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n\
                 0\r\n\r\n{hidden}"
            ),
        ),
        (
            "whitespace before the colon",
            format!("POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length : 45\r\n\r\n{hidden}"),
        ),
        (
            "a folded header line",
            format!(
                "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-A: a\r\n \
                 Content-Length: 45\r\n\r\n{hidden}"
            ),
        ),
        (
            "a signed Content-Length",
            format!(
                "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd{hidden}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /api/login HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 0\r\n\r\n{hidden}"
            ),
        ),
    ];
    for (what, raw) in cases {
        let seen = statuses(&server, raw.as_bytes()).await;
        assert_eq!(seen.len(), 1, "{what}: expected one answer, got {seen:?}");
        assert!(seen[0].contains(" 400 "), "{what}: {seen:?}");
    }
}
