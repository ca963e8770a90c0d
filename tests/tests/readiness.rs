//! `/readyz` tells the truth: it answers 503, naming the part that is down, while a node
//! cannot use the cluster bus (its Redis killed) or reach storage (PostgreSQL behind a relay the
//! test cuts), and 200 again once they are back — with cross-node delivery and storage working
//! again. `/healthz` (liveness) stays 200 throughout.

use std::net::SocketAddr;
use std::time::Duration;

use parley_tests::cluster::{Cluster, SharedDatabase};
use parley_tests::http::{get, until_status};
use parley_tests::redis::RedisKind;
use parley_tests::relay::Relay;
use parley_tests::stomp::{Frame, StompClient};
use parley_tests::ServerProcess;

/// The next MESSAGE on `client`, skipping receipts.
async fn next_message(client: &mut StompClient) -> Frame {
    loop {
        let frame = client.recv().await.expect("connection open");
        if frame.command == "MESSAGE" {
            return frame;
        }
        assert_eq!(frame.command, "RECEIPT", "{frame:?}");
    }
}

/// Sends `body` to `room` and waits for its receipt (the message is stored).
async fn send_stored(client: &mut StompClient, room: &str, body: &str) {
    let receipt = format!("r-{body}");
    client
        .send(
            "SEND",
            &[("destination", room), ("receipt", &receipt)],
            body.as_bytes(),
        )
        .await;
    loop {
        let frame = client.recv().await.expect("a receipt");
        if frame.command == "RECEIPT" {
            assert_eq!(frame.header("receipt-id"), receipt);
            return;
        }
        assert_eq!(frame.command, "MESSAGE", "{frame:?}");
    }
}

#[tokio::test]
async fn readyz_says_the_bus_is_down_while_redis_is_and_delivery_resumes_after() {
    let mut cluster = Cluster::start_on(RedisKind::Standalone, "ready_bus", 2, &[]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let mut writer = StompClient::connect(cluster.nodes[0].stomp_addr(), "writer").await;
    let mut reader = StompClient::connect(cluster.nodes[1].stomp_addr(), "reader").await;
    reader.subscribe("s", "/topic/ready").await;
    until_status(a, "/readyz", 200, Duration::from_secs(5)).await;

    cluster.redis.stop();
    for node in [a, b] {
        let down = until_status(node, "/readyz", 503, Duration::from_secs(5)).await;
        assert!(down.text().starts_with("bus down:"), "{:?}", down.text());
        get(node, "/healthz", &[])
            .await
            .assert_status(200, "liveness does not depend on Redis");
    }
    // Storage still numbers and keeps messages meanwhile.
    send_stored(&mut writer, "/topic/ready", "during").await;

    cluster.redis.restart();
    for node in [a, b] {
        let up = until_status(node, "/readyz", 200, Duration::from_secs(10)).await;
        assert_eq!(up.text(), "ready\n");
    }
    send_stored(&mut writer, "/topic/ready", "after").await;
    let (during, after) = (
        next_message(&mut reader).await,
        next_message(&mut reader).await,
    );
    assert_eq!(
        (during.body.as_slice(), after.body.as_slice()),
        (&b"during"[..], &b"after"[..]),
        "the other node delivers what was sent while Redis was down, then live again"
    );
}

/// `url` with its `host:port` replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("user@host in the URL");
    let (_, path) = rest.split_once('/').expect("a database in the URL");
    format!("{scheme_user}@{addr}/{path}")
}

/// The `host:port` of a PostgreSQL URL.
fn server_of(url: &str) -> SocketAddr {
    let host = url.split_once('@').and_then(|(_, r)| r.split('/').next());
    let host = host.expect("user@host:port/db");
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("resolving {host}"))
}

#[tokio::test]
async fn readyz_says_storage_is_down_while_postgresql_is_unreachable() {
    let database = SharedDatabase::create("ready_storage");
    let relay = Relay::start(server_of(&database.url));
    let node = ServerProcess::start(&["--database", &through(&database.url, relay.addr())]);
    let addr = node.addr();
    until_status(addr, "/readyz", 200, Duration::from_secs(5)).await;
    let mut client = StompClient::connect(node.stomp_addr(), "keeper").await;
    client.subscribe("s", "/topic/kept").await;
    send_stored(&mut client, "/topic/kept", "before").await;

    relay.cut();
    let down = until_status(addr, "/readyz", 503, Duration::from_secs(6)).await;
    assert!(
        down.text().starts_with("storage down:"),
        "{:?}",
        down.text()
    );
    get(addr, "/healthz", &[])
        .await
        .assert_status(200, "liveness does not depend on storage");

    relay.restore();
    let up = until_status(addr, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(up.text(), "ready\n");
    // Storage works again: a message is stored and acknowledged.
    send_stored(&mut client, "/topic/kept", "after").await;
}
