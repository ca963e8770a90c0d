//! Nodes given the plain `redis://` URL of one node of a real three-shard Redis Cluster, as an
//! operator would: they find out it is a cluster, and rooms whose channels live on every shard
//! cross nodes. A shard going down makes `/readyz` say the bus is down until it is back.

use std::time::Duration;

use parley_tests::cluster::Cluster;
use parley_tests::http::until_status;
use parley_tests::redis::RedisKind;
use parley_tests::stomp::{Frame, StompClient};

/// Rooms whose channels (`parley:{room}`) fall `per_shard` on each of the cluster's shards.
fn rooms_on_every_shard(cluster: &Cluster, per_shard: usize) -> Vec<(String, usize)> {
    let mut counts = [0; 3];
    let mut rooms = Vec::new();
    for i in 0.. {
        let room = format!("room{i}");
        let shard = cluster.redis.shard_of(&format!("parley:{{{room}}}"));
        if counts[shard] < per_shard {
            counts[shard] += 1;
            rooms.push((room, shard));
        }
        if rooms.len() == 3 * per_shard {
            return rooms;
        }
    }
    unreachable!()
}

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

#[tokio::test]
async fn twelve_rooms_over_three_shards_cross_nodes_given_one_nodes_redis_url() {
    let cluster = Cluster::start_on(RedisKind::Cluster, "rc_rooms", 2, &[]);
    assert!(
        cluster.redis.url().starts_with("redis://"),
        "the operator's URL"
    );
    let rooms = rooms_on_every_shard(&cluster, 4);
    let mut on_a = StompClient::connect(cluster.nodes[0].stomp_addr(), "ann").await;
    let mut on_b = StompClient::connect(cluster.nodes[1].stomp_addr(), "ben").await;
    for (i, (room, _)) in rooms.iter().enumerate() {
        let topic = format!("/topic/{room}");
        on_a.subscribe(&format!("a{i}"), &topic).await;
        on_b.subscribe(&format!("b{i}"), &topic).await;
    }
    // Each node subscribed to each room's channel on the shard that owns it.
    for (room, shard) in &rooms {
        let channel = format!("parley:{{{room}}}");
        let counts = cluster
            .redis
            .cli(*shard, &["pubsub", "shardnumsub", &channel]);
        assert_eq!(
            counts.lines().nth(1),
            Some("2"),
            "{channel} on shard {shard}: {counts}"
        );
    }
    // A message each way in every room.
    for (room, _) in &rooms {
        let topic = format!("/topic/{room}");
        on_a.send(
            "SEND",
            &[("destination", &topic)],
            format!("from a in {room}").as_bytes(),
        )
        .await;
        on_b.send(
            "SEND",
            &[("destination", &topic)],
            format!("from b in {room}").as_bytes(),
        )
        .await;
    }
    for (who, client) in [("ann", &mut on_a), ("ben", &mut on_b)] {
        let mut got = Vec::new();
        for _ in 0..2 * rooms.len() {
            let m = next_message(client).await;
            got.push(String::from_utf8_lossy(&m.body).into_owned());
        }
        got.sort();
        let mut want: Vec<String> = (rooms.iter())
            .flat_map(|(r, _)| [format!("from a in {r}"), format!("from b in {r}")])
            .collect();
        want.sort();
        assert_eq!(got, want, "{who} got every room's messages from both nodes");
    }
}

#[tokio::test]
async fn a_shard_down_makes_readyz_name_the_bus_until_it_is_back() {
    let mut cluster = Cluster::start_on(RedisKind::Cluster, "rc_shard", 2, &[]);
    let rooms = rooms_on_every_shard(&cluster, 1);
    let (room, shard) = rooms[1].clone();
    let topic = format!("/topic/{room}");
    let mut on_a = StompClient::connect(cluster.nodes[0].stomp_addr(), "ann").await;
    let mut on_b = StompClient::connect(cluster.nodes[1].stomp_addr(), "ben").await;
    on_b.subscribe("s", &topic).await;
    let addr = cluster.nodes[0].addr();
    until_status(addr, "/readyz", 200, Duration::from_secs(5)).await;

    cluster.redis.stop_one(shard);
    let down = until_status(addr, "/readyz", 503, Duration::from_secs(5)).await;
    assert!(down.text().starts_with("bus down:"), "{:?}", down.text());

    cluster.redis.restart_one(shard);
    until_status(addr, "/readyz", 200, Duration::from_secs(15)).await;
    on_a.send("SEND", &[("destination", &topic)], b"back").await;
    let m = next_message(&mut on_b).await;
    assert_eq!(
        m.body, b"back",
        "the restarted shard's room crosses nodes again"
    );
}
