//! Three nodes behind nginx (the shipped deploy/nginx.conf): clients that reconnect through
//! nginx and resume from the last id they saw end up with every acknowledged message exactly
//! once, in order — when a node is killed with SIGKILL mid-traffic, and across a rolling
//! restart of every node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parley_tests::cluster::{Cluster, Nginx};
use parley_tests::stomp::StompClient;
use tokio::sync::Barrier;
use tokio::time::{sleep, timeout, Instant};

const ROOM: &str = "/topic/failover";
const END: &[u8] = b"the end";

/// A reader that reconnects (through `addr`) whenever its connection ends and resubscribes
/// with `since` = the last id it saw. Returns every (id, body) received, in order, once it
/// has the message `END`, and how many times it had to reconnect.
async fn resuming_reader(
    addr: SocketAddr,
    name: String,
    ready: Arc<Barrier>,
) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut signalled = false;
    let mut connections = 0;
    loop {
        let Some(mut client) = StompClient::try_connect(addr, &name).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        connections += 1;
        let last = got.last().map_or(0, |m| m.0);
        let subscribe =
            format!("SUBSCRIBE\nid:s\ndestination:{ROOM}\nsince:{last}\nreceipt:sub\n\n\0");
        if !client.try_send_raw(subscribe.as_bytes()).await {
            continue;
        }
        while let Some(frame) = client.try_recv(Duration::from_secs(20)).await {
            match frame.command.as_str() {
                "RECEIPT" if !signalled => {
                    signalled = true;
                    ready.wait().await;
                }
                "MESSAGE" => {
                    let id = frame.header("message-id").parse().expect("numeric id");
                    got.push((id, frame.body.clone()));
                    if frame.body == END {
                        return (got, connections - 1);
                    }
                }
                "ERROR" => break,
                _ => {}
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// A sender that sends numbered messages one at a time, each waiting for its RECEIPT, and
/// reconnects when its connection ends. Returns the bodies that were acknowledged.
async fn resuming_sender(addr: SocketAddr, name: String, stop: Arc<AtomicBool>) -> Vec<Vec<u8>> {
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut client) = StompClient::try_connect(addr, &name).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let body = format!("{name}-{n}");
            let frame = format!(
                "SEND\ndestination:{ROOM}\nreceipt:{n}\ncontent-length:{}\n\n{body}\0",
                body.len()
            );
            if !client.try_send_raw(frame.as_bytes()).await {
                break;
            }
            match client.try_recv(Duration::from_secs(10)).await {
                Some(f) if f.command == "RECEIPT" && f.header("receipt-id") == n.to_string() => {
                    acked.push(body.into_bytes());
                }
                _ => break, // gone: this one may or may not have been stored; not acknowledged
            }
            sleep(Duration::from_millis(5)).await;
        }
    }
    acked
}

/// What happens to the cluster while the clients talk.
enum Disruption {
    /// SIGKILL of node 1.
    Kill,
    /// SIGTERM, wait for the exit, start again on the same addresses: each node in turn.
    RollingRestart,
}

/// Runs readers and senders through nginx during `disruption`, then checks that every reader
/// has every acknowledged message exactly once, ids consecutive from 1.
async fn survive(cluster: &mut Cluster, nginx: &Nginx, disruption: Disruption) {
    const READERS: usize = 6;
    let ready = Arc::new(Barrier::new(READERS + 1));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            tokio::spawn(resuming_reader(
                nginx.stomp,
                format!("reader{i}"),
                ready.clone(),
            ))
        })
        .collect();
    timeout(Duration::from_secs(20), ready.wait())
        .await
        .expect("every reader subscribed");
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(resuming_sender(
                nginx.stomp,
                format!("sender{i}"),
                stop.clone(),
            ))
        })
        .collect();
    sleep(Duration::from_millis(800)).await;
    match &disruption {
        Disruption::Kill => cluster.nodes[1].kill(),
        Disruption::RollingRestart => {
            for i in 0..3 {
                cluster.nodes[i].terminate();
                let deadline = Instant::now() + Duration::from_secs(15);
                while cluster.nodes[i].try_exit_status().is_none() {
                    assert!(Instant::now() < deadline, "node {i} did not drain and exit");
                    sleep(Duration::from_millis(20)).await;
                }
                cluster.restart(i);
                sleep(Duration::from_millis(300)).await;
            }
        }
    }
    sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await.expect("sender"));
    }
    assert!(
        acked.len() > 20,
        "too little traffic to show anything: {}",
        acked.len()
    );
    // The last word, acknowledged, so every reader knows when it has everything. A client like
    // the others: it retries until a node acknowledges it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no node acknowledged the last message"
        );
        let Some(mut closer) = StompClient::try_connect(nginx.stomp, "closer").await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let frame = format!(
            "SEND\ndestination:{ROOM}\nreceipt:end\ncontent-length:{}\n\n",
            END.len()
        );
        let mut bytes = frame.into_bytes();
        bytes.extend_from_slice(END);
        bytes.push(0);
        if closer.try_send_raw(&bytes).await {
            if let Some(f) = closer.try_recv(Duration::from_secs(10)).await {
                if f.command == "RECEIPT" {
                    break;
                }
            }
        }
        sleep(Duration::from_millis(100)).await;
    }

    let mut reconnects = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (got, reconnected) = timeout(Duration::from_secs(60), reader)
            .await
            .unwrap_or_else(|_| panic!("reader {i} never got everything"))
            .expect("reader");
        reconnects.push(reconnected);
        let ids: Vec<u64> = got.iter().map(|m| m.0).collect();
        let expected: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(
            ids, expected,
            "reader {i}: ids must run 1, 2, 3… with no gap or repeat"
        );
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for (_, body) in &got {
            *seen.entry(body).or_default() += 1;
        }
        for body in &acked {
            assert_eq!(
                seen.get(body.as_slice()).copied(),
                Some(1),
                "reader {i}: acknowledged {:?} must arrive exactly once",
                String::from_utf8_lossy(body)
            );
        }
    }
    // The disruption must have hit clients, or this proved nothing.
    match disruption {
        Disruption::Kill => assert!(
            reconnects.iter().sum::<usize>() >= 1,
            "no reader was on the killed node: {reconnects:?}"
        ),
        Disruption::RollingRestart => assert!(
            reconnects.iter().all(|&n| n >= 1),
            "every reader's node restarted, so every reader reconnected: {reconnects:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start("kill", 3, &["--rate-limit", "0"]);
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    survive(&mut cluster, &nginx, Disruption::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(
        "rolling",
        3,
        &["--rate-limit", "0", "--drain-delay", "300ms"],
    );
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    survive(&mut cluster, &nginx, Disruption::RollingRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_behind_haproxy_gets_no_new_clients_and_its_own_move_on() {
    use parley_tests::cluster::Haproxy;
    use parley_tests::http::get;

    let cluster = Cluster::start("drain", 2, &["--drain-delay", "4s"]);
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let haproxy = Haproxy::start(&nodes);
    // Wait for haproxy's checks to see both nodes up.
    sleep(Duration::from_millis(2500)).await;
    let mut early = Vec::new();
    for i in 0..10 {
        let mut client = StompClient::connect(haproxy.stomp, &format!("early{i}")).await;
        client.subscribe("s", "/topic/stay").await;
        early.push(client);
    }
    cluster.nodes[0].terminate();
    // haproxy checks /readyz every second and takes a node out after two failures; until the
    // drain delay ends the node still serves its own clients.
    sleep(Duration::from_millis(2600)).await;
    for i in 0..10 {
        // leastconn would send some of these to node 0 were it still in: it would refuse them.
        let client = StompClient::try_connect(haproxy.stomp, &format!("late{i}")).await;
        assert!(client.is_some(), "connection {i} reached the draining node");
        get(haproxy.http, "/readyz", &[])
            .await
            .assert_status(200, "through haproxy while one node drains");
    }
    // After the drain the node's own clients are closed; coming back through haproxy works.
    sleep(Duration::from_secs(3)).await;
    let mut back = StompClient::try_connect(haproxy.stomp, "back")
        .await
        .expect("reconnected through haproxy");
    back.subscribe("s", "/topic/stay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_three_nodes_behind_nginx_see_everyone_and_every_message() {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    let cluster = Cluster::start("spread", 3, &[]);
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    async fn next(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Value {
        loop {
            match timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
                Ok(Some(Ok(_))) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
    const CLIENTS: usize = 6;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let url = format!("ws://{}/ws?name=user{i}", nginx.http);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("through nginx");
        ws.send(Message::text(
            json!({"type": "join", "room": "plaza"}).to_string(),
        ))
        .await
        .expect("join");
        let joined = loop {
            let v = next(&mut ws).await;
            if v["type"] == "joined" {
                break v;
            }
        };
        if i == CLIENTS - 1 {
            let mut members: Vec<String> = joined["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m.as_str().unwrap_or_default().to_owned())
                .collect();
            members.sort();
            let everyone: Vec<String> = (0..CLIENTS).map(|n| format!("user{n}")).collect();
            assert_eq!(members, everyone, "presence spans the nodes");
        }
        clients.push(ws);
    }
    for round in 0..5 {
        for (i, ws) in clients.iter_mut().enumerate() {
            let body = format!("{i}:{round}");
            ws.send(Message::text(
                json!({"type": "send", "room": "plaza", "body": body}).to_string(),
            ))
            .await
            .expect("send");
        }
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        let mut ids = Vec::new();
        while ids.len() < CLIENTS * 5 {
            let v = next(ws).await;
            if v["type"] == "message" {
                ids.push(
                    v["id"]
                        .as_str()
                        .expect("id")
                        .parse::<u64>()
                        .expect("numeric"),
                );
            }
        }
        let expected: Vec<u64> = (1..=(CLIENTS * 5) as u64).collect();
        assert_eq!(ids, expected, "client {i}: every message once, in id order");
    }
}
