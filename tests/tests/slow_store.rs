//! A slow store never stalls the server: while PostgreSQL holds a table locked, the requests
//! that must read it wait, and every other connection's traffic flows on. (Storage calls run
//! off the async runtime; one blocking a runtime worker would stall every connection on it.)

mod json_client;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use parley_tests::cluster::Cluster;
use serde_json::{json, Value};
use tokio::time::timeout;

use json_client::{raw, recv, send, Ws};

/// More joins waiting on storage than the server has runtime workers (one per core).
const BLOCKED_JOINS: usize = 8;

/// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` on `url` until dropped (at most a
/// minute): every read of the table waits meanwhile.
struct TableLock {
    release: mpsc::Sender<()>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl TableLock {
    fn take(url: &str, table: &'static str) -> TableLock {
        let (locked_tx, locked) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let url = url.to_owned();
        let holder = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("PostgreSQL");
            let mut tx = client.transaction().expect("BEGIN");
            tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                .expect("LOCK TABLE");
            locked_tx.send(()).expect("test waiting");
            let _ = released.recv_timeout(Duration::from_secs(60));
            let _ = tx.rollback();
        });
        locked.recv().expect("the lock was taken");
        TableLock {
            release,
            holder: Some(holder),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// Sends DMs from `from` to `to` until one arrives: the DM channel is live on the bus.
async fn until_dms_flow(from: &mut Ws, to: &mut Ws) {
    for n in 0..50 {
        let body = format!("warm-up {n}");
        send(from, json!({"type": "send", "to": "bob", "body": body})).await;
        if let Ok(v) = timeout(Duration::from_millis(200), recv(to)).await {
            if v["type"] == "message" {
                return;
            }
        }
    }
    panic!("DMs never started to flow");
}

/// The next `message` on `ws`, skipping acks and anything else.
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == "message" {
            return v;
        }
    }
}

#[tokio::test]
async fn a_locked_table_stalls_only_the_requests_that_read_it() {
    let cluster = Cluster::start("slowstore", 1, &[]);
    let node = &cluster.nodes[0];
    let mut alice = raw(node, "alice").await;
    let mut bob = raw(node, "bob").await;
    until_dms_flow(&mut alice, &mut bob).await;

    // Joining a room this node does not receive yet reads the room's last id from `rooms`.
    let lock = TableLock::take(&cluster.database.url, "rooms");
    let mut joiners = Vec::new();
    for i in 0..BLOCKED_JOINS {
        let mut ws = raw(node, &format!("joiner{i}")).await;
        send(
            &mut ws,
            json!({"type": "join", "room": format!("fresh{i}")}),
        )
        .await;
        joiners.push(ws);
    }
    // Direct messages between guests need no storage: they keep flowing, promptly, while the
    // joins wait.
    for n in 0..20 {
        let sent = Instant::now();
        let body = format!("dm {n}");
        send(
            &mut alice,
            json!({"type": "send", "to": "bob", "body": body}),
        )
        .await;
        let got = timeout(Duration::from_secs(5), next_message(&mut bob))
            .await
            .unwrap_or_else(|_| panic!("DM {n} stalled behind the locked table"));
        assert_eq!(got["body"], json!(body));
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "DM {n} took {:?}",
            sent.elapsed()
        );
    }
    // The premise: the joins really were waiting on the lock all along.
    for (i, ws) in joiners.iter_mut().enumerate() {
        let early = timeout(Duration::from_millis(100), recv(ws)).await;
        assert!(
            early.is_err(),
            "join {i} answered while its table was locked: {early:?}"
        );
    }
    drop(lock);
    for (i, ws) in joiners.iter_mut().enumerate() {
        let answer = recv(ws).await;
        assert_eq!(answer["type"], json!("joined"), "join {i}: {answer}");
        assert_eq!(answer["room"], json!(format!("fresh{i}")));
    }
}
