//! Graceful shutdown: SIGTERM/SIGINT close every WebSocket with 1001 (going away),
//! wait for the closes up to the grace period, then exit 0.

mod common;

use std::time::{Duration, Instant};

use common::{connect, drain_to_end, recv};
use parley_tests::raw::{opcode, Frame, RawWebSocket};
use parley_tests::ServerProcess;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Slack on top of the grace period for process exit and scheduling.
const MARGIN: Duration = Duration::from_secs(3);

async fn expect_going_away(ws: &mut common::Ws, which: &str) {
    match recv(ws).await {
        Message::Close(Some(frame)) => assert_eq!(
            frame.code,
            CloseCode::Away,
            "{which}: expected close code 1001, got {frame:?}"
        ),
        other => panic!("{which}: expected Close(1001), got {other:?}"),
    }
    // Polling on flushes tungstenite's close reply and then sees the server close TCP.
    drain_to_end(ws, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_zero() {
    let grace = Duration::from_secs(5);
    let mut server = ServerProcess::start(&["--echo", "--shutdown-grace", "5s"]);
    let (mut a, _) = connect(&server, "/echo").await;
    let (mut b, _) = connect(&server, "/echo").await;
    common::assert_echo(&mut a, "a").await;
    common::assert_echo(&mut b, "b").await;

    let signalled = Instant::now();
    server.terminate();
    expect_going_away(&mut a, "client a").await;
    expect_going_away(&mut b, "client b").await;

    let status = server.wait_exit(grace + MARGIN);
    let took = signalled.elapsed();
    assert!(status.success(), "parley exited with {status}, expected 0");
    assert!(
        took < grace,
        "both clients answered the close at once, yet exit took {took:?} (grace {grace:?})"
    );
}

#[tokio::test]
async fn sigint_also_shuts_down_gracefully() {
    let mut server = ServerProcess::start(&["--echo", "--shutdown-grace", "2s"]);
    let (mut ws, _) = connect(&server, "/echo").await;
    common::assert_echo(&mut ws, "hi").await;
    server.interrupt();
    expect_going_away(&mut ws, "client").await;
    let status = server.wait_exit(Duration::from_secs(2) + MARGIN);
    assert!(
        status.success(),
        "parley exited with {status} after SIGINT, expected 0"
    );
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_zero() {
    // The listening line announces readiness, so a signal sent the moment it appears must
    // already be handled gracefully. Several rounds, since the failure mode is a race.
    for round in 1..=8 {
        let mut server = ServerProcess::start(&["--echo", "--shutdown-grace", "10s"]);
        let signalled = Instant::now();
        server.terminate();
        let status = server.wait_exit(Duration::from_secs(5));
        assert!(
            status.success(),
            "round {round}: SIGTERM sent right after the listening line; parley exited with \
             {status}, expected 0 (signal handler not installed yet?)"
        );
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "round {round}: no connections to wait for, yet exit took {:?}",
            signalled.elapsed()
        );
    }
}

#[tokio::test]
async fn unanswered_close_is_abandoned_after_the_grace_period() {
    let grace = Duration::from_secs(2);
    let mut server = ServerProcess::start(&["--echo", "--shutdown-grace", "2s"]);
    let (mut ws, _) = RawWebSocket::connect(server.addr(), "/echo", &[]).await;
    ws.send(&Frame::text("ping?")).await;
    assert_eq!(ws.expect_frame().await, Frame::text("ping?"));

    let signalled = Instant::now();
    server.terminate();
    let close = ws.expect_frame().await;
    assert_eq!(
        close.opcode,
        opcode::CLOSE,
        "expected a close frame, got {close:?}"
    );
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    // This client never answers the close: the server waits for it up to the grace period.
    let status = server.wait_exit(grace + MARGIN);
    let took = signalled.elapsed();
    assert!(status.success(), "parley exited with {status}, expected 0");
    assert!(
        took >= grace.mul_f32(0.8),
        "exited after {took:?}, without waiting the {grace:?} grace period for the close reply"
    );
    ws.expect_eof(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn drain_turns_readyz_503_refuses_new_clients_then_closes_with_1001() {
    use parley_tests::http::get;

    let drain = Duration::from_secs(2);
    let mut server = ServerProcess::start(&["--echo", "--drain-delay", "2s"]);
    get(server.addr(), "/readyz", &[])
        .await
        .assert_status(200, "/readyz before the signal");
    let (mut ws, _) = connect(&server, "/echo").await;

    let signalled = Instant::now();
    server.terminate();
    // The balancer's health check sees the drain at once…
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let ready = get(server.addr(), "/readyz", &[]).await;
        if ready.status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} after SIGTERM",
            ready.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get(server.addr(), "/healthz", &[])
        .await
        .assert_status(200, "/healthz while draining: the process is alive");
    // …a client that still lands here is sent elsewhere…
    let refused = get(server.addr(), "/echo", &[("Upgrade", "websocket")]).await;
    refused.assert_status(503, "a WebSocket upgrade while draining");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // …and the ones already here keep being served until the delay ends.
    common::assert_echo(&mut ws, "still here").await;
    expect_going_away(&mut ws, "client").await;
    assert!(
        signalled.elapsed() >= drain - Duration::from_millis(100),
        "closed after {:?}, before the {drain:?} drain delay",
        signalled.elapsed()
    );
    let status = server.wait_exit(Duration::from_secs(5) + MARGIN);
    assert!(status.success(), "parley exited with {status}, expected 0");
}
