//! SockJS behind the shipped balancers (deploy/nginx.conf, deploy/haproxy.cfg) in front of three
//! nodes: a session lives on the node that opened it, and the balancers route its requests by
//! session id, so STOMP over `xhr` polling and `xhr_streaming` chats with plain WebSocket
//! clients with no "404 unknown session"; a session whose node is killed opens afresh on
//! another node, and the client catches up from the last id it saw.

mod json_client;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use parley_tests::cluster::{Cluster, Haproxy, Nginx};
use parley_tests::http::get;
use parley_tests::sockjs::{Event, SockJsStomp, SockJsUrl, Transport};
use parley_tests::stomp::Frame;
use serde_json::{json, Value};
use tokio::time::{sleep, timeout, Instant};

use json_client::{raw_at, recv, send, Ws};

/// Every wait for one answer or message.
const WAIT: Duration = Duration::from_secs(10);

/// Three nodes; a 1 s SockJS heartbeat so that an idle long poll ends quickly (the shipped
/// balancers' read timeouts are far above any heartbeat).
fn cluster(test: &str) -> Cluster {
    Cluster::start(test, 3, &["--rate-limit", "0", "--sockjs-heartbeat", "1s"])
}

/// The node holding `url`'s session, asked directly: only that node takes a send (a STOMP
/// heart-beat, harmless) for it; every other answers 404.
async fn holder(cluster: &Cluster, url: &SockJsUrl) -> usize {
    let mut holders = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if url.at(node.addr()).send(&["\n"]).await.is_ok() {
            holders.push(i);
        }
    }
    assert_eq!(holders.len(), 1, "{url:?} held by nodes {holders:?}");
    holders[0]
}

/// STOMP frames until a MESSAGE; RECEIPTs are skipped, anything else fails the test.
async fn next_message(client: &mut SockJsStomp) -> Frame {
    loop {
        let frame = client.frame(WAIT).await;
        match frame.command.as_str() {
            "MESSAGE" => return frame,
            "RECEIPT" => {}
            _ => panic!("{:?}: unexpected {frame:?}", client.url),
        }
    }
}

/// The id of a raw `message`, and its body.
fn raw_message(v: &Value) -> (u64, String) {
    let id = v["id"].as_str().expect("id").parse().expect("numeric id");
    (id, v["body"].as_str().expect("body").to_owned())
}

/// Raw JSON messages until a room message.
async fn next_raw_message(ws: &mut Ws) -> (u64, String) {
    loop {
        let v = recv(ws).await;
        if v["type"] == "message" {
            return raw_message(&v);
        }
    }
}

/// A plain WebSocket client through `balancer`, in `room`.
async fn ws_member(balancer: SocketAddr, name: &str, room: &str) -> Ws {
    let mut ws = raw_at(balancer, name).await;
    send(&mut ws, json!({"type": "join", "room": room})).await;
    loop {
        let v = recv(&mut ws).await;
        if v["type"] == "joined" {
            return ws;
        }
    }
}

/// SockJS STOMP clients through `balancer`, polling and streaming by turns, each subscribed
/// to `room`: at least three of each, and more until their sessions sit on all three nodes
/// (session ids hash to nodes by chance; 24 of them all missing a node is about 1 in 10^4).
async fn spread_sessions(
    cluster: &Cluster,
    balancer: SocketAddr,
    room: &str,
) -> Vec<(String, SockJsStomp)> {
    let mut clients = Vec::new();
    let mut nodes = BTreeSet::new();
    let topic = format!("/topic/{room}");
    for n in 0..24 {
        if n >= 6 && nodes.len() == cluster.nodes.len() {
            break;
        }
        let (transport, kind) = match n % 2 {
            0 => (Transport::Xhr, "poll"),
            _ => (Transport::XhrStreaming, "stream"),
        };
        let name = format!("{kind}{n}");
        let id = format!("{name}-{}", std::process::id());
        let url = SockJsUrl::new(balancer, "/stomp", &id);
        let mut client = SockJsStomp::connect(url, transport, &name).await;
        client.subscribe(&topic, None).await;
        nodes.insert(holder(cluster, &client.url).await);
        clients.push((name, client));
    }
    assert_eq!(
        nodes.len(),
        cluster.nodes.len(),
        "{} sessions never reached every node: {nodes:?}",
        clients.len()
    );
    clients
}

/// SockJS STOMP clients (spread over the nodes) and plain WebSocket clients, all through
/// `balancer`, send in rounds; every client gets every message once, in id order.
async fn chat_through(cluster: &Cluster, balancer: SocketAddr) {
    const ROOM: &str = "sjhall";
    const ROUNDS: usize = 4;
    let mut sockjs = spread_sessions(cluster, balancer, ROOM).await;
    let mut plain = Vec::new();
    for i in 0..3 {
        let name = format!("ws{i}");
        plain.push((name.clone(), ws_member(balancer, &name, ROOM).await));
    }
    let per_round = sockjs.len() + plain.len();
    for round in 0..ROUNDS {
        let mut bodies = BTreeSet::new();
        for (name, client) in &sockjs {
            let body = format!("{name}:{round}");
            client
                .send("SEND", &[("destination", "/topic/sjhall")], &body)
                .await;
            bodies.insert(body);
        }
        for (name, ws) in &mut plain {
            let body = format!("{name}:{round}");
            send(ws, json!({"type": "send", "room": ROOM, "body": body})).await;
            bodies.insert(body);
        }
        // Requests without a session are balanced as before, between the sessions' own.
        get(balancer, "/stomp/info", &[])
            .await
            .assert_status(200, "SockJS info through the balancer");
        let first = (round * per_round) as u64 + 1;
        let ids: Vec<u64> = (first..first + per_round as u64).collect();
        for (name, client) in &mut sockjs {
            let mut got = Vec::new();
            let mut seen = BTreeSet::new();
            for _ in 0..per_round {
                let m = next_message(client).await;
                got.push(m.header("message-id").parse::<u64>().expect("numeric id"));
                seen.insert(String::from_utf8_lossy(&m.body).into_owned());
            }
            assert_eq!(got, ids, "{name}, round {round}: ids");
            assert_eq!(seen, bodies, "{name}, round {round}: bodies");
        }
        for (name, ws) in &mut plain {
            let mut got = Vec::new();
            let mut seen = BTreeSet::new();
            for _ in 0..per_round {
                let (id, body) = next_raw_message(ws).await;
                got.push(id);
                seen.insert(body);
            }
            assert_eq!(got, ids, "{name}, round {round}: ids");
            assert_eq!(seen, bodies, "{name}, round {round}: bodies");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockjs_sessions_behind_nginx_stay_on_their_node_and_chat_with_websockets() {
    let cluster = cluster("sj_nginx");
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    timeout(Duration::from_secs(50), chat_through(&cluster, nginx.http))
        .await
        .expect("the chat through nginx took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockjs_sessions_behind_haproxy_stay_on_their_node_and_chat_with_websockets() {
    let cluster = cluster("sj_haproxy");
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let haproxy = Haproxy::start(&nodes);
    wait_ready(haproxy.http).await;
    timeout(
        Duration::from_secs(50),
        chat_through(&cluster, haproxy.http),
    )
    .await
    .expect("the chat through haproxy took too long");
}

/// Until haproxy's health checks have every node in (a node not yet checked takes no
/// requests, which would move sessions while the test runs).
async fn wait_ready(balancer: SocketAddr) {
    // Checked every second, in after two successes.
    sleep(Duration::from_millis(2500)).await;
    get(balancer, "/readyz", &[])
        .await
        .assert_status(200, "through haproxy");
}

/// A raw JSON send acknowledged by the node: its id.
async fn say(ws: &mut Ws, room: &str, body: &str) -> u64 {
    send(
        ws,
        json!({"type": "send", "room": room, "body": body, "ref": body}),
    )
    .await;
    loop {
        let v = recv(ws).await;
        if v["type"] == "ack" && v["ref"] == body {
            return v["id"].as_str().expect("id").parse().expect("numeric id");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sockjs_session_reopens_on_another_node_behind_nginx_and_catches_up() {
    let mut cluster = cluster("sj_kill_nginx");
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    timeout(
        Duration::from_secs(50),
        survive_kill(&mut cluster, nginx.http),
    )
    .await
    .expect("took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sockjs_session_reopens_on_another_node_behind_haproxy_and_catches_up() {
    let mut cluster = cluster("sj_kill_haproxy");
    let nodes: Vec<&_> = cluster.nodes.iter().collect();
    let haproxy = Haproxy::start(&nodes);
    wait_ready(haproxy.http).await;
    timeout(
        Duration::from_secs(50),
        survive_kill(&mut cluster, haproxy.http),
    )
    .await
    .expect("took too long");
}

/// A STOMP client on one SockJS session (xhr polling) through `balancer`; the node holding
/// the session is killed while messages keep coming; the client's next request opens the
/// session afresh on another node, and its catch-up leaves no gap.
async fn survive_kill(cluster: &mut Cluster, balancer: SocketAddr) {
    const ROOM: &str = "sjfail";
    let url = SockJsUrl::new(
        balancer,
        "/stomp",
        &format!("victim-{}", std::process::id()),
    );
    let mut client = SockJsStomp::connect(url, Transport::Xhr, "victim").await;
    client.subscribe("/topic/sjfail", None).await;
    let dead = holder(cluster, &client.url).await;
    // The sender talks to a surviving node directly: only the session is under test.
    let survivor = (dead + 1) % 3;
    let mut sender = ws_member(cluster.nodes[survivor].addr(), "sender", ROOM).await;
    for i in 1..=3 {
        assert_eq!(say(&mut sender, ROOM, &format!("before {i}")).await, i);
    }
    let mut last = 0;
    for _ in 0..3 {
        last = next_message(&mut client)
            .await
            .header("message-id")
            .parse()
            .unwrap();
    }
    assert_eq!(last, 3);

    // SIGKILL while the client's long poll waits on that node.
    cluster.nodes[dead].kill();
    for i in 4..=6 {
        assert_eq!(say(&mut sender, ROOM, &format!("away {i}")).await, i);
    }
    // The cut poll is reported; the next request reaches another node, which knows no such
    // session and opens it afresh.
    let deadline = Instant::now() + WAIT;
    let mut lost = 0;
    loop {
        match client.next(deadline - Instant::now()).await {
            Some(Event::Lost(_)) => lost += 1,
            Some(Event::Open) => break,
            other => panic!("expected the session to open again, got {other:?} after {lost} lost"),
        }
    }
    let now = holder(cluster, &client.url).await;
    assert_ne!(now, dead, "the session reopened on the dead node?");

    // A new STOMP session on it: CONNECT, then SUBSCRIBE catching up after the last id seen.
    client.stomp_connect("victim").await;
    let mut replayed = client.subscribe("/topic/sjfail", Some(last)).await;
    assert_eq!(say(&mut sender, ROOM, "back 7").await, 7);
    while replayed.len() < 4 {
        replayed.push(next_message(&mut client).await);
    }
    let got: Vec<(u64, String)> = replayed
        .iter()
        .map(|m| {
            let id = m.header("message-id").parse().expect("numeric id");
            (id, String::from_utf8_lossy(&m.body).into_owned())
        })
        .collect();
    let want: Vec<(u64, String)> = vec![
        (4, "away 4".into()),
        (5, "away 5".into()),
        (6, "away 6".into()),
        (7, "back 7".into()),
    ];
    assert_eq!(got, want, "no gap, no repeat across the node's death");
}
