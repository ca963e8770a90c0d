//! The SSE room feed behind the shipped nginx (deploy/nginx.conf) in front of three nodes: a
//! feed whose node is killed reconnects through the balancer with `Last-Event-ID`, lands on
//! another node and misses nothing sent meanwhile — the resume an `EventSource` does by itself.
//! The nodes share a three-shard Redis Cluster.

mod json_client;

use std::net::SocketAddr;
use std::time::Duration;

use parley_tests::cluster::{Cluster, Nginx};
use parley_tests::http::get;
use parley_tests::redis::RedisKind;
use parley_tests::sse::Sse;
use serde_json::{json, Value};
use tokio::time::timeout;

use json_client::{raw_at, recv, send, Ws};

const ROOM: &str = "ssefail";

/// Every node's open hub sessions (`/stats`).
async fn sessions(cluster: &Cluster) -> Vec<u64> {
    let mut counts = Vec::new();
    for node in &cluster.nodes {
        let stats: Value = get(node.addr(), "/stats", &[]).await.json();
        counts.push(stats["sessions"].as_u64().expect("sessions"));
    }
    counts
}

/// A raw guest on `addr`, joined to the room (creating it).
async fn member(addr: SocketAddr, name: &str) -> Ws {
    let mut ws = raw_at(addr, name).await;
    send(&mut ws, json!({"type": "join", "room": ROOM})).await;
    while recv(&mut ws).await["type"] != "joined" {}
    ws
}

/// Sends `body` and waits for its durable ack: its id.
async fn say(ws: &mut Ws, body: &str) -> u64 {
    send(
        ws,
        json!({"type": "send", "room": ROOM, "body": body, "ref": body}),
    )
    .await;
    loop {
        let v = recv(ws).await;
        if v["type"] == "ack" && v["ref"] == body {
            return v["id"].as_str().expect("id").parse().expect("numeric id");
        }
    }
}

/// A guest's feed of the room through `balancer`, checked open.
async fn feed(balancer: SocketAddr, last_id: Option<u64>) -> Sse {
    let last = last_id.map(|id| id.to_string());
    let mut headers = Vec::new();
    if let Some(last) = &last {
        headers.push(("Last-Event-ID", last.as_str()));
    }
    let path = format!("/api/rooms/{ROOM}/events");
    let mut sse = Sse::open(balancer, &path, &headers).await;
    assert_eq!(sse.resp.status, 200, "{:?}", sse.resp.headers);
    let first = sse.next().await.expect("the feed opens");
    assert_eq!(first.comment.as_deref(), Some("ok"));
    sse
}

/// The ids of the next `count` room messages on `sse`.
async fn ids(sse: &mut Sse, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let event = sse.next_event().await;
        if event.event.is_none() && event.json()["type"] == "message" {
            ids.push(event.id());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sse_feed_resumes_on_another_node_with_last_event_id() {
    let extra = ["--rate-limit", "0", "--public-stats"];
    let mut cluster = Cluster::start_on(RedisKind::Cluster, "sse_kill", 3, &extra);
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    timeout(
        Duration::from_secs(50),
        survive_kill(&mut cluster, nginx.http),
    )
    .await
    .expect("took too long");
}

async fn survive_kill(cluster: &mut Cluster, balancer: SocketAddr) {
    // The room exists before the feed (a feed creates no room).
    let mut first = member(cluster.nodes[0].addr(), "maker").await;
    say(&mut first, "hello").await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sessions(cluster).await;
    let mut sse = feed(balancer, Some(1)).await;
    let after = sessions(cluster).await;
    let grew: Vec<usize> = (0..3).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(grew.len(), 1, "sessions {before:?} → {after:?}");
    let dead = grew[0];
    let survivor = (dead + 1) % 3;
    let mut sender = member(cluster.nodes[survivor].addr(), "sender").await;
    for i in 2..=4 {
        assert_eq!(say(&mut sender, &format!("before {i}")).await, i);
    }
    assert_eq!(ids(&mut sse, 3).await, [2, 3, 4]);

    cluster.nodes[dead].kill();
    for i in 5..=7 {
        assert_eq!(say(&mut sender, &format!("away {i}")).await, i);
    }
    // The feed's connection is cut (nginx answers the client's stream with its end).
    while sse.next_within(Duration::from_secs(10)).await.is_some() {}

    // What EventSource does: the same URL again, with the last id it saw.
    let mut resumed = feed(balancer, Some(4)).await;
    assert_eq!(ids(&mut resumed, 3).await, [5, 6, 7], "the catch-up");
    assert_eq!(say(&mut sender, "live 8").await, 8);
    assert_eq!(ids(&mut resumed, 1).await, [8], "then live, no duplicate");
}
