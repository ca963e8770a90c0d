//! Conversations across nodes (docs/deploy.md, docs/protocol.md): with two nodes sharing Redis
//! and PostgreSQL, a direct message reaches both people's sessions on every node with one id
//! and is caught up on either; edits, deletions and reactions made on one node reach the other
//! in their place in the room's sequence; a retried send on the same node is one message. The
//! nodes share a three-shard Redis Cluster (user and room channels on different shards).

use parley_tests::auth::*;
use parley_tests::cluster::Cluster;
use parley_tests::redis::RedisKind;
use serde_json::{json, Value};

/// The answer (`ack` or `error`) to `command` sent with `ref`.
async fn answer(ws: &mut Ws, mut command: Value, reference: &str) -> Value {
    command["ref"] = json!(reference);
    ws_send(ws, &command).await;
    ws_recv_until(ws, |v| {
        (v["type"] == "ack" || v["type"] == "error") && v["ref"] == reference
    })
    .await
}

#[tokio::test]
async fn dms_edits_and_reactions_cross_nodes() {
    let cluster = Cluster::start_on(RedisKind::Cluster, "conversations", 2, &[]);
    let (one, two) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let alice = account(one, "alice").await;
    let bob = account(one, "bob").await;
    let mut a1 = ws_bearer(one, &alice).await;
    let mut a2 = ws_bearer(two, &alice).await;
    let mut b2 = ws_bearer(two, &bob).await;
    ws_ping(&mut a2).await;
    ws_ping(&mut b2).await;

    // A DM from node one reaches bob and alice's other session on node two, with one id.
    let ack = answer(
        &mut a1,
        json!({"type": "send", "to": "bob", "body": "psst"}),
        "d1",
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let got = ws_recv_until(&mut b2, |v| v["type"] == "message").await;
    let copy = ws_recv_until(&mut a2, |v| v["type"] == "message").await;
    assert_eq!(
        (&got["from"], &got["to"], &got["body"]),
        (&json!("alice"), &json!("bob"), &json!("psst")),
        "{got}"
    );
    assert_eq!(
        id_string(&got["id"]),
        id_string(&copy["id"]),
        "{got} {copy}"
    );
    assert_eq!(id_string(&got["id"]), "1", "{got}");
    // Bob answers on node two; catch-up on node one replays both in order.
    let ack = answer(
        &mut b2,
        json!({"type": "send", "to": "alice", "body": "yes?"}),
        "d2",
    )
    .await;
    assert_eq!(id_string(&ack["id"]), "2", "{ack}");
    let mut late = ws_bearer(one, &bob).await;
    ws_send(
        &mut late,
        &json!({"type": "catch_up", "with": "alice", "since": "0"}),
    )
    .await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let v = ws_recv(&mut late).await;
        if v["type"] == "message" {
            ids.push(id_string(&v["id"]));
        }
    }
    assert_eq!(ids, ["1", "2"]);

    // Edits and reactions made on node one reach node two as events of the room's sequence.
    ws_join_ok(&mut a1, "general").await;
    ws_join_ok(&mut b2, "general").await;
    let first = ws_post(&mut a1, "general", "helo").await;
    let edit = answer(
        &mut a1,
        json!({"type": "edit", "room": "general", "id": first, "body": "hello"}),
        "e1",
    )
    .await;
    assert_eq!(edit["type"], "ack", "{edit}");
    let e = ws_recv_until(&mut b2, |v| v["type"] == "edit").await;
    assert_eq!(
        (id_string(&e["target"]), &e["body"]),
        (first.clone(), &json!("hello")),
        "{e}"
    );
    let react = answer(
        &mut b2,
        json!({"type": "react", "room": "general", "id": first, "emoji": "🎉"}),
        "r1",
    )
    .await;
    assert_eq!(react["type"], "ack", "{react}");
    let r = ws_recv_until(&mut a1, |v| v["type"] == "reaction").await;
    assert_eq!(
        (&r["from"], &r["op"]),
        (&json!("bob"), &json!("add")),
        "{r}"
    );
    let event_ids = [id_string(&e["id"]), id_string(&r["id"])];
    assert_eq!(
        event_ids
            .iter()
            .map(|i| i.parse::<u64>().unwrap())
            .collect::<Vec<_>>(),
        [
            first.parse::<u64>().unwrap() + 1,
            first.parse::<u64>().unwrap() + 2
        ],
        "one sequence across nodes"
    );
    // History on node two shows the state.
    let page = get_as(two, "/api/rooms/general/messages", &bob)
        .await
        .json();
    let m = &page["messages"][0];
    assert_eq!(
        (&m["body"], &m["edited"]),
        (&json!("hello"), &json!(true)),
        "{page}"
    );
    assert_eq!(
        m["reactions"],
        json!([{"emoji": "🎉", "users": ["bob"]}]),
        "{page}"
    );

    // A retried send is one message: on the same node, and after reconnecting to the other
    // node (a balancer sends a reconnect anywhere), over raw and STOMP.
    let send = json!({"type": "send", "room": "general", "body": "once", "client_id": "k1"});
    let x = answer(&mut a1, send.clone(), "s1").await;
    let y = answer(&mut a1, send.clone(), "s2").await;
    assert_eq!(id_string(&x["id"]), id_string(&y["id"]), "{x} {y}");
    drop(a1);
    let mut again = ws_bearer(two, &alice).await;
    ws_join_ok(&mut again, "general").await;
    let z = answer(&mut again, send, "s3").await;
    assert_eq!(id_string(&x["id"]), id_string(&z["id"]), "{x} {z}");
    let mut s = Stomp::with_token(cluster.nodes[1].stomp_addr(), &alice, "alice").await;
    let r = s
        .send_receipt(
            &[("destination", "/topic/general"), ("client-id", "k1")],
            b"once",
        )
        .await;
    assert_eq!(r.command, "RECEIPT", "{r:?}");
    let dm = json!({"type": "send", "to": "bob", "body": "once more", "client_id": "k2"});
    let first = answer(&mut again, dm.clone(), "s4").await;
    let mut three = ws_bearer(one, &alice).await;
    let second = answer(&mut three, dm, "s5").await;
    assert_eq!(
        id_string(&first["id"]),
        id_string(&second["id"]),
        "{first} {second}"
    );
    // Bob saw "once" and "once more" once each.
    let page = get_as(one, "/api/rooms/general/messages", &bob)
        .await
        .json();
    let onces = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"] == "once")
        .count();
    assert_eq!(onces, 1, "{page}");
    let dms = get_as(one, "/api/dms/alice/messages", &bob).await.json();
    assert_eq!(dms["messages"].as_array().map(Vec::len), Some(3), "{dms}");
}
