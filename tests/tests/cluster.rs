//! Several nodes behind one Redis and one PostgreSQL: rooms, side channels and direct messages
//! reach clients on every node, each room in one id order, nothing lost or repeated, also
//! across a Redis restart.

mod json_client;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parley_tests::cluster::Cluster;
use parley_tests::stomp::{Frame, StompClient};
use serde_json::json;

use json_client::{raw, recv, send};

/// Reads frames until `want` MESSAGEs arrived (RECEIPTs of own SENDs are counted too).
async fn collect(client: &mut StompClient, want: usize) -> (Vec<Frame>, usize) {
    let mut messages = Vec::new();
    let mut receipts = 0;
    while messages.len() < want {
        let frame = client.recv().await.expect("connection open");
        match frame.command.as_str() {
            "MESSAGE" => messages.push(frame),
            "RECEIPT" => receipts += 1,
            other => panic!("unexpected {other}: {frame:?}"),
        }
    }
    (messages, receipts)
}

/// The ids of `messages` must be consecutive and ascending from `first`, each body once.
fn assert_in_order_once(who: &str, messages: &[Frame], first: u64) {
    let ids: Vec<u64> = messages
        .iter()
        .map(|m| m.header("message-id").parse().expect("numeric id"))
        .collect();
    let expected: Vec<u64> = (first..first + messages.len() as u64).collect();
    assert_eq!(ids, expected, "{who}: ids not consecutive and in order");
    let mut bodies: HashMap<&[u8], usize> = HashMap::new();
    for m in messages {
        *bodies.entry(&m.body).or_default() += 1;
    }
    assert!(
        bodies.values().all(|&n| n == 1),
        "{who}: a message arrived twice"
    );
}

#[tokio::test]
async fn every_client_on_every_node_gets_every_message_once_in_id_order() {
    let cluster = Cluster::start("order", 3, &[]);
    const PER_CLIENT: usize = 25;
    let mut clients = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for c in 0..2 {
            let mut client = StompClient::connect(node.stomp_addr(), &format!("u{n}x{c}")).await;
            client.subscribe("s", "/topic/lobby").await;
            clients.push(client);
        }
    }
    // Everyone sends at once, on all three nodes.
    for round in 0..PER_CLIENT {
        for (i, client) in clients.iter_mut().enumerate() {
            let body = format!("c{i}-m{round}");
            let receipt = format!("r{round}");
            client
                .send(
                    "SEND",
                    &[("destination", "/topic/lobby"), ("receipt", &receipt)],
                    body.as_bytes(),
                )
                .await;
        }
    }
    let total = PER_CLIENT * clients.len();
    let mut first_seen = None;
    for (i, client) in clients.iter_mut().enumerate() {
        let (messages, _) = collect(client, total).await;
        assert_in_order_once(&format!("client {i}"), &messages, 1);
        // Every client saw the same sequence: same id, same body, same sender.
        let seen: Vec<(String, Vec<u8>, String)> = messages
            .iter()
            .map(|m| {
                (
                    m.header("message-id").to_owned(),
                    m.body.clone(),
                    m.header("sender").to_owned(),
                )
            })
            .collect();
        match &first_seen {
            None => first_seen = Some(seen),
            Some(first) => assert_eq!(&seen, first, "client {i} saw another order"),
        }
        // Each sender's own messages keep the order it sent them in.
        let mut per_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &messages {
            per_sender
                .entry(m.header("sender").to_owned())
                .or_default()
                .push(String::from_utf8_lossy(&m.body).into_owned());
        }
        for (sender, bodies) in per_sender {
            let rounds: Vec<usize> = bodies
                .iter()
                .map(|b| b.rsplit_once("-m").unwrap().1.parse().unwrap())
                .collect();
            assert_eq!(
                rounds,
                (0..PER_CLIENT).collect::<Vec<_>>(),
                "{sender}'s order"
            );
        }
    }
}

#[tokio::test]
async fn raw_and_stomp_clients_on_different_nodes_share_rooms_typing_presence_and_dms() {
    let cluster = Cluster::start("mixed", 2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut watcher = StompClient::connect(b.stomp_addr(), "bob").await;
    watcher.subscribe("m", "/topic/hall").await;
    watcher.subscribe("p", "/topic/hall.presence").await;
    watcher.subscribe("t", "/topic/hall.typing").await;
    watcher.subscribe("dm", "/user/queue/messages").await;

    let mut alice = raw(a, "alice").await;
    send(&mut alice, json!({"type": "join", "room": "hall"})).await;
    let joined = recv(&mut alice).await;
    assert_eq!(joined["type"], "joined", "{joined}");

    // Presence crosses nodes.
    let presence = watcher.recv().await.expect("presence");
    assert_eq!(
        (presence.header("user"), presence.header("event")),
        ("alice", "join"),
        "{presence:?}"
    );
    // Typing crosses nodes.
    send(&mut alice, json!({"type": "typing", "room": "hall"})).await;
    let typing = watcher.recv().await.expect("typing");
    assert_eq!(typing.header("destination"), "/topic/hall.typing");
    // A room message from node A (raw) reaches node B (STOMP) with the id A acknowledged.
    send(
        &mut alice,
        json!({"type": "send", "room": "hall", "body": "hi from A", "ref": "x"}),
    )
    .await;
    let mut ack = None;
    let mut own = None;
    while ack.is_none() || own.is_none() {
        let v = recv(&mut alice).await;
        match v["type"].as_str() {
            Some("ack") => ack = Some(v),
            Some("message") => own = Some(v),
            _ => {}
        }
    }
    let message = watcher.recv().await.expect("message");
    assert_eq!(message.body, b"hi from A");
    assert_eq!(message.header("sender"), "alice");
    let id: u64 = ack.unwrap()["id"]
        .as_str()
        .expect("ack id")
        .parse()
        .unwrap();
    assert_eq!(message.header("message-id"), id.to_string());
    // And back: STOMP on B to raw on A.
    watcher
        .send("SEND", &[("destination", "/topic/hall")], b"hi from B")
        .await;
    let back = loop {
        let v = recv(&mut alice).await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(
        (back["body"].as_str(), back["from"].as_str()),
        (Some("hi from B"), Some("bob"))
    );
    assert_eq!(back["id"].as_str(), Some((id + 1).to_string().as_str()));
    // A direct message from A reaches bob's session on B.
    send(
        &mut alice,
        json!({"type": "send", "to": "bob", "body": "psst", "ref": "d"}),
    )
    .await;
    let dm = loop {
        let f = watcher.recv().await.expect("dm");
        if f.header("destination").starts_with("/user/") {
            break f;
        }
    };
    assert_eq!(
        (dm.body.as_slice(), dm.header("sender")),
        (&b"psst"[..], "alice")
    );
}

#[tokio::test]
async fn history_written_on_one_node_is_caught_up_on_another() {
    let cluster = Cluster::start("history", 2, &[]);
    let mut writer = StompClient::connect(cluster.nodes[0].stomp_addr(), "writer").await;
    for i in 1..=5 {
        let receipt = format!("w{i}");
        writer
            .send(
                "SEND",
                &[("destination", "/topic/archive"), ("receipt", &receipt)],
                format!("old {i}").as_bytes(),
            )
            .await;
        assert_eq!(writer.recv().await.expect("receipt").command, "RECEIPT");
    }
    let mut reader = StompClient::connect(cluster.nodes[1].stomp_addr(), "reader").await;
    reader
        .send(
            "SUBSCRIBE",
            &[
                ("id", "s"),
                ("destination", "/topic/archive"),
                ("since", "2"),
                ("receipt", "sub"),
            ],
            b"",
        )
        .await;
    let (messages, _) = collect(&mut reader, 3).await;
    assert_in_order_once("reader", &messages, 3);
    assert_eq!(messages[0].body, b"old 3");
    // Live after the catch-up, from the other node, continuing the numbering.
    writer
        .send("SEND", &[("destination", "/topic/archive")], b"new")
        .await;
    let (live, _) = collect(&mut reader, 1).await;
    assert_eq!(
        (live[0].header("message-id"), live[0].body.as_slice()),
        ("6", &b"new"[..])
    );
}

#[tokio::test]
async fn a_redis_restart_loses_nothing_and_needs_no_reconnect() {
    let mut cluster = Cluster::start("redis_restart", 2, &[]);
    let mut on_a = StompClient::connect(cluster.nodes[0].stomp_addr(), "ann").await;
    let mut on_b = StompClient::connect(cluster.nodes[1].stomp_addr(), "ben").await;
    on_a.subscribe("s", "/topic/ops").await;
    on_b.subscribe("s", "/topic/ops").await;
    on_a.send("SEND", &[("destination", "/topic/ops")], b"before")
        .await;
    assert_eq!(collect(&mut on_b, 1).await.0[0].body, b"before");
    assert_eq!(collect(&mut on_a, 1).await.0[0].body, b"before");

    cluster.redis.stop();
    // Storage still numbers and keeps them: the senders get their receipts.
    for i in 0..3 {
        let receipt = format!("down{i}");
        on_a.send(
            "SEND",
            &[("destination", "/topic/ops"), ("receipt", &receipt)],
            format!("during {i}").as_bytes(),
        )
        .await;
    }
    on_b.send(
        "SEND",
        &[("destination", "/topic/ops"), ("receipt", "b-down")],
        b"during b",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.restart();

    // Each side gets all five in id order (2..=5), its own at once and the other's once
    // Redis is back, on the same connection.
    for (who, client) in [("ann", &mut on_a), ("ben", &mut on_b)] {
        let (messages, _) = collect(client, 4).await;
        assert_in_order_once(who, &messages, 2);
    }
    // And the bus works again.
    on_b.send("SEND", &[("destination", "/topic/ops")], b"after")
        .await;
    let (after, _) = collect(&mut on_a, 1).await;
    assert_eq!(
        (after[0].header("message-id"), after[0].body.as_slice()),
        ("6", &b"after"[..])
    );
}

#[tokio::test]
async fn a_room_made_private_on_one_node_is_private_on_every_node() {
    use parley_tests::auth::{account, post_as};

    let cluster = Cluster::start("acl", 2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // A guest on node B listens on the name's side channel while the room does not exist…
    let mut squatter = StompClient::connect(b.stomp_addr(), "squatter").await;
    squatter.subscribe("s", "/topic/secret.typing").await;
    // …then an account on node A creates the room, private.
    let alice = account(a.addr(), "alice").await;
    post_as(
        a.addr(),
        "/api/rooms",
        &alice,
        &json!({"name": "secret", "private": true}),
    )
    .await
    .assert_status(201, "creating the private room on node A");
    let ended = squatter.recv().await.expect("an ERROR, not silence");
    assert_eq!(ended.command, "ERROR", "{ended:?}");
    // Newcomers on node B are refused too.
    let mut late = StompClient::connect(b.stomp_addr(), "late").await;
    late.send(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/topic/secret"),
            ("receipt", "r"),
        ],
        b"",
    )
    .await;
    let refused = late.recv().await.expect("an answer");
    assert_eq!(refused.command, "ERROR", "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.body).contains("private")
            || refused.header("message").contains("forbidden"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn presence_spans_nodes_and_a_dead_nodes_users_leave_within_the_ttl() {
    let mut cluster = Cluster::start("presence", 2, &["--presence-ttl", "2s"]);
    let mut ann = raw(&cluster.nodes[0], "ann").await;
    send(&mut ann, json!({"type": "join", "room": "lounge"})).await;
    assert_eq!(recv(&mut ann).await["type"], "joined");
    let mut ben = raw(&cluster.nodes[1], "ben").await;
    send(&mut ben, json!({"type": "join", "room": "lounge"})).await;
    let joined = recv(&mut ben).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(
        joined["members"],
        json!(["ann", "ben"]),
        "who is present on any node"
    );
    let seen = recv(&mut ann).await;
    assert_eq!(
        (&seen["type"], &seen["user"], &seen["event"]),
        (&json!("presence"), &json!("ben"), &json!("join")),
        "{seen}"
    );

    // ann's node dies without a word: her entry expires and ben's node announces her leaving.
    cluster.nodes[0].kill();
    let started = std::time::Instant::now();
    let left = loop {
        let v = recv(&mut ben).await;
        if v["type"] == "presence" {
            break v;
        }
    };
    assert_eq!(
        (&left["user"], &left["event"]),
        (&json!("ann"), &json!("leave")),
        "{left}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?} with a 2 s TTL",
        started.elapsed()
    );
}

#[tokio::test]
async fn queues_are_node_local() {
    // Documented in docs/deploy.md: a /queue/ destination's producers and consumers must use
    // the same node.
    let cluster = Cluster::start("queues", 2, &["--guest-queues"]);
    let mut on_a = StompClient::connect(cluster.nodes[0].stomp_addr(), "worker-a").await;
    let mut on_b = StompClient::connect(cluster.nodes[1].stomp_addr(), "worker-b").await;
    on_a.subscribe("q", "/queue/jobs").await;
    on_b.subscribe("q", "/queue/jobs").await;
    let mut producer = StompClient::connect(cluster.nodes[0].stomp_addr(), "boss").await;
    for i in 0..4 {
        producer
            .send(
                "SEND",
                &[("destination", "/queue/jobs")],
                format!("job {i}").as_bytes(),
            )
            .await;
    }
    let (jobs, _) = collect(&mut on_a, 4).await;
    assert_eq!(
        jobs.len(),
        4,
        "the consumer on the producer's node gets every job"
    );
    assert!(
        on_b.try_recv(Duration::from_millis(500)).await.is_none(),
        "the other node's consumer gets none"
    );
}

#[tokio::test]
async fn joining_a_room_on_another_node_never_makes_you_its_owner() {
    use parley_tests::auth::{account, post_as};

    let cluster = Cluster::start("owner", 2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let bob = account(b.addr(), "bob").await;
    let eve = account(a.addr(), "eve").await;
    account(a.addr(), "mallory").await;
    // bob's join on node B creates the room: storage records him as its owner.
    let mut bob_on_b = StompClient::connect_as(b.stomp_addr(), "bob", &bob).await;
    bob_on_b.subscribe("s", "/topic/garden").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // eve joins the same room on node A, which had never heard of it.
    let mut eve_on_a = StompClient::connect_as(a.stomp_addr(), "eve", &eve).await;
    eve_on_a.subscribe("s", "/topic/garden").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_as(
        a.addr(),
        "/api/rooms/garden/members",
        &eve,
        &json!({"user": "mallory"}),
    )
    .await
    .assert_status(403, "eve is no owner of bob's room, on any node");
    post_as(
        a.addr(),
        "/api/rooms/garden/members",
        &bob,
        &json!({"user": "mallory"}),
    )
    .await
    .assert_status(204, "bob owns it, on node A too");
}

#[tokio::test]
async fn presence_is_rebuilt_by_the_nodes_after_a_redis_restart() {
    let mut cluster = Cluster::start("presence_rebuild", 2, &["--presence-ttl", "2s"]);
    let mut ann = raw(&cluster.nodes[0], "ann").await;
    send(&mut ann, json!({"type": "join", "room": "den"})).await;
    assert_eq!(recv(&mut ann).await["type"], "joined");
    cluster.redis.restart(); // empty: nothing survives
                             // Each node writes its entries again within a quarter of the TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut cat = raw(&cluster.nodes[1], "cat").await;
    send(&mut cat, json!({"type": "join", "room": "den"})).await;
    let joined = recv(&mut cat).await;
    assert_eq!(joined["members"], json!(["ann", "cat"]), "{joined}");
}
