//! Buffers a client can fill: STOMP transactions, `/queue/` destinations, and the server-wide
//! memory budget behind them.

use std::time::Duration;

use parley_tests::auth::{Stomp, StompEvent};
use parley_tests::ServerProcess;
use serde_json::json;

use crate::json_client::{next_of, raw, recv, send, Ws};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// How long a raw client waits for an answer.
const WAIT: Duration = Duration::from_secs(10);

async fn guest(server: &ServerProcess, name: &str) -> Stomp {
    Stomp::tcp_connected(server.stomp_addr(), &[("login", name)], name).await
}

/// The next frame other than a MESSAGE, or `None` if the server closed.
async fn answer(s: &mut Stomp) -> Option<parley_tests::stomp::Frame> {
    loop {
        match s.next(Duration::from_secs(10)).await {
            StompEvent::Frame(f) if f.command == "MESSAGE" => continue,
            StompEvent::Frame(f) => return Some(f),
            StompEvent::Closed => return None,
            StompEvent::Timeout => panic!("no answer within 10 s"),
        }
    }
}

/// Item 1: a guest's open transaction holds at most `--stomp-transaction-bytes`; the SEND past
/// it is an ERROR, and the server's memory does not grow with what the client keeps sending.
#[tokio::test]
async fn transaction_bytes_are_capped_per_session() {
    let server = ServerProcess::start(&[]);
    let mut s = guest(&server, "hoarder").await;
    s.send("BEGIN", &[("transaction", "t")], b"").await;
    let body = vec![b'x'; 256 * KIB];
    let before = server.rss_bytes();
    let mut refused_at = None;
    for i in 0..64 {
        let receipt = format!("r{i}");
        s.send(
            "SEND",
            &[
                ("destination", "/user/hoarder/queue/x"),
                ("transaction", "t"),
                ("receipt", &receipt),
            ],
            &body,
        )
        .await;
        match answer(&mut s).await {
            Some(f) if f.command == "RECEIPT" => {}
            Some(f) => {
                assert_eq!(f.command, "ERROR", "{f:?}");
                assert!(
                    f.header("message").contains("transactions hold more than"),
                    "{f:?}"
                );
                refused_at = Some(i);
                break;
            }
            None => panic!("closed without an ERROR"),
        }
    }
    let refused_at = refused_at.expect("64 x 256 KiB in one transaction were all accepted");
    assert!(
        refused_at <= 4,
        "1 MiB by default: refused at SEND #{refused_at}"
    );
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(grown < 16 * MIB, "RSS grew by {grown} bytes");
}

/// Item 1: a SEND inside a transaction is checked when it arrives — the room body limit, the
/// rules of private rooms and the rate limit — not only at COMMIT.
#[tokio::test]
async fn transaction_sends_are_checked_on_arrival() {
    let server = ServerProcess::start(&["--max-body", "100"]);
    let mut s = guest(&server, "sneaky").await;
    s.send("BEGIN", &[("transaction", "t")], b"").await;
    s.send(
        "SEND",
        &[
            ("destination", "/topic/lobby"),
            ("transaction", "t"),
            ("receipt", "big"),
        ],
        &[b'x'; 101],
    )
    .await;
    let f = answer(&mut s).await.expect("an answer");
    assert_eq!(
        f.command, "ERROR",
        "an oversized room body in a transaction: {f:?}"
    );
    assert!(f.header("message").contains("100 bytes"), "{f:?}");

    let limited = ServerProcess::start(&["--rate-limit", "5"]);
    let mut r = guest(&limited, "rusher").await;
    r.send("BEGIN", &[("transaction", "t")], b"").await;
    for _ in 0..40 {
        r.send(
            "SEND",
            &[("destination", "/topic/lobby"), ("transaction", "t")],
            b"hi",
        )
        .await;
    }
    let f = answer(&mut r).await.expect("an answer");
    assert_eq!(
        f.command, "ERROR",
        "40 SENDs at once past 5/s, in a transaction: {f:?}"
    );
    assert!(f.header("message").contains("rate limited"), "{f:?}");
}

/// Item 1: COMMIT applies every frame or none: a transaction whose queue SENDs together
/// overflow the queue publishes nothing, not even its room message.
#[tokio::test]
async fn commit_is_all_or_nothing() {
    let server = ServerProcess::start(&["--guest-queues", "--queue-max-bytes", "1000"]);
    let mut watcher = guest(&server, "watcher").await;
    watcher.subscribe_ok("w", "/topic/atomic").await;
    let mut s = guest(&server, "committer").await;
    s.send("BEGIN", &[("transaction", "t")], b"").await;
    s.send(
        "SEND",
        &[("destination", "/topic/atomic"), ("transaction", "t")],
        b"first",
    )
    .await;
    for _ in 0..2 {
        // Each fits the queue alone; together they do not.
        s.send(
            "SEND",
            &[("destination", "/queue/small"), ("transaction", "t")],
            &[b'q'; 600],
        )
        .await;
    }
    s.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], b"")
        .await;
    let f = answer(&mut s).await.expect("an answer to COMMIT");
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(f.header("message").contains("full"), "{f:?}");
    match watcher.next(Duration::from_millis(700)).await {
        StompEvent::Timeout => {}
        other => panic!("the room message of a failed COMMIT was published: {other:?}"),
    }
}

/// Item 2: guests cannot use queues (a guest name proves nothing, so any guest could read any
/// queue); accounts can, unless the operator lets guests in.
#[tokio::test]
async fn guests_cannot_use_queues_by_default() {
    let server = ServerProcess::start(&[]);
    let mut g = guest(&server, "peeker").await;
    let f = g.subscribe("q", "/queue/payroll", &[]).await;
    assert_eq!(f.command, "ERROR", "a guest subscribing to a queue: {f:?}");
    assert!(f.header("message").contains("forbidden"), "{f:?}");
    let mut g = guest(&server, "dropper").await;
    let f = g
        .send_receipt(&[("destination", "/queue/payroll")], b"x")
        .await;
    assert_eq!(f.command, "ERROR", "a guest sending to a queue: {f:?}");

    let open = ServerProcess::start(&["--guest-queues"]);
    let mut g = guest(&open, "worker").await;
    g.subscribe_ok("q", "/queue/jobs").await;
}

/// Item 2: a queue nobody consumes holds at most `--queue-max-bytes`, all queues together
/// `--queues-max-bytes`, and one user creates at most `--queues-per-user` queues: each refusal
/// is an ERROR naming the limit, and memory stays flat.
#[tokio::test]
async fn queues_are_bounded_in_bytes_and_count() {
    let server = ServerProcess::start(&[
        "--guest-queues",
        "--queue-max-bytes",
        "1048576",
        "--queues-max-bytes",
        "3145728",
        "--queues-per-user",
        "5",
    ]);
    let before = server.rss_bytes();
    let body = vec![b'z'; 256 * KIB];
    let mut s = guest(&server, "filler").await;
    for i in 0..4 {
        let f = s.send_receipt(&[("destination", "/queue/a")], &body).await;
        assert_eq!(f.command, "RECEIPT", "message {i} of 1 MiB: {f:?}");
    }
    let f = s.send_receipt(&[("destination", "/queue/a")], &body).await;
    assert_eq!(f.command, "ERROR", "past 1 MiB in one queue: {f:?}");
    assert!(f.header("message").contains("queue a is full"), "{f:?}");

    let mut s = guest(&server, "filler").await;
    let mut total_refused = false;
    for q in ["b", "c", "d"] {
        for _ in 0..4 {
            let f = s
                .send_receipt(&[("destination", &format!("/queue/{q}"))], &body)
                .await;
            if f.command == "ERROR" {
                assert!(f.header("message").contains("queues are full"), "{f:?}");
                total_refused = true;
                break;
            }
        }
        if total_refused {
            break;
        }
    }
    assert!(total_refused, "3 MiB across queues was not enforced");
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(
        grown < 24 * MIB,
        "RSS grew by {grown} bytes for 3 MiB of queues"
    );

    let mut s = guest(&server, "collector").await;
    for i in 0..5 {
        s.subscribe_ok(&format!("s{i}"), &format!("/queue/mine{i}"))
            .await;
    }
    let f = s.subscribe("s5", "/queue/mine5", &[]).await;
    assert_eq!(f.command, "ERROR", "a sixth queue: {f:?}");
    assert!(f.header("message").contains("more than 5 queues"), "{f:?}");
}

/// Item 2: messages nobody takes expire after `--queue-ttl` (and stop counting against the
/// limits); a consumer arriving later gets only what is fresh.
#[tokio::test]
async fn queued_messages_expire() {
    let server = ServerProcess::start(&["--guest-queues", "--queue-ttl", "1s"]);
    let mut s = guest(&server, "sender").await;
    let f = s
        .send_receipt(&[("destination", "/queue/stale")], b"old")
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    // The sweep runs every 5 s: wait for a TTL and a sweep.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let f = s
        .send_receipt(&[("destination", "/queue/stale")], b"new")
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    let mut c = guest(&server, "latecomer").await;
    c.subscribe_ok("q", "/queue/stale").await;
    let StompEvent::Frame(m) = c.next(Duration::from_secs(5)).await else {
        panic!("the fresh message did not arrive");
    };
    assert_eq!(m.body, b"new", "an expired message was delivered: {m:?}");
    match c.next(Duration::from_millis(500)).await {
        StompEvent::Timeout => {}
        other => panic!("more than the fresh message: {other:?}"),
    }
}

/// Item 3: the server-wide memory budget. Many sessions each filling a transaction to its
/// per-session limit would hold 48 MiB; with `--memory-budget 8MiB` the frames past it are
/// refused as "server busy", RSS stays under the budget plus a margin, and sessions that were
/// there before keep working: a STOMP subscriber and a raw client stay connected and keep
/// answering while it is spent (a raw send is told `busy`, not closed), both receive the
/// room's messages before and after, and once the hoarders leave new work is accepted again.
#[tokio::test]
async fn memory_budget_refuses_new_work_and_keeps_others_working() {
    let server = ServerProcess::start(&["--memory-budget", "8388608"]);
    let mut bystander = guest(&server, "bystander").await;
    bystander.subscribe_ok("b", "/topic/calm").await;
    let mut watcher = raw(&server, "watcher").await;
    send(&mut watcher, json!({"type": "join", "room": "calm"})).await;
    assert!(next_of(&mut watcher, "joined", WAIT).await.is_some());
    let mut publisher = guest(&server, "publisher").await;
    publish_and_see(&mut publisher, &mut bystander, &mut watcher, "before").await;

    let before = server.rss_bytes();
    let body = vec![b'm'; 200 * KIB];
    let mut hoarders = Vec::new();
    let mut busy = 0;
    for i in 0..48 {
        let name = format!("hoarder{i}");
        let mut h = guest(&server, &name).await;
        h.send("BEGIN", &[("transaction", "t")], b"").await;
        for j in 0..5 {
            let receipt = format!("r{j}");
            let dest = format!("/user/{name}/queue/x");
            h.send(
                "SEND",
                &[
                    ("destination", &dest),
                    ("transaction", "t"),
                    ("receipt", &receipt),
                ],
                &body,
            )
            .await;
            let f = answer(&mut h).await.expect("an answer");
            if f.command == "ERROR" {
                assert!(f.header("message").contains("server busy"), "{f:?}");
                busy += 1;
                break;
            }
        }
        hoarders.push(h);
    }
    assert!(
        busy >= 30,
        "only {busy} of 48 sessions were refused past an 8 MiB budget"
    );
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(
        grown < 8 * MIB + 24 * MIB,
        "RSS grew by {grown} bytes past an 8 MiB budget"
    );

    // Meanwhile the raw client's send is answered — acknowledged if the few bytes left under
    // the budget take it, else `busy` — and the connection stays; the STOMP subscriber still
    // has its frames answered.
    send(
        &mut watcher,
        json!({"type": "send", "room": "calm", "body": "x", "ref": "w1"}),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let v = recv(&mut watcher).await;
            if v["ref"] == "w1" {
                return v;
            }
        }
    })
    .await
    .expect("the raw send was answered");
    assert!(
        answer["type"] == "ack" || answer["code"] == "busy",
        "{answer}"
    );
    send(&mut watcher, json!({"type": "ping"})).await;
    assert!(
        next_of(&mut watcher, "pong", WAIT).await.is_some(),
        "raw client dropped"
    );
    bystander.subscribe_ok("b2", "/topic/calm-too").await;

    drop(hoarders);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The budget came back: the sessions that lived through it receive again.
    publish_and_see(&mut publisher, &mut bystander, &mut watcher, "after").await;
}

/// `publisher` sends `body` to room `calm`; it is acknowledged, and both the STOMP `stomp` and
/// the raw `ws` subscriber receive it.
async fn publish_and_see(publisher: &mut Stomp, stomp: &mut Stomp, ws: &mut Ws, body: &str) {
    let f = publisher
        .send_receipt(&[("destination", "/topic/calm")], body.as_bytes())
        .await;
    assert_eq!(f.command, "RECEIPT", "{body}: {f:?}");
    loop {
        match stomp.next(Duration::from_secs(10)).await {
            StompEvent::Frame(f) if f.command == "MESSAGE" && f.body == body.as_bytes() => break,
            StompEvent::Frame(_) => continue,
            other => panic!("the STOMP subscriber did not get {body:?}: {other:?}"),
        }
    }
    loop {
        let m = next_of(ws, "message", WAIT).await;
        let m = m.unwrap_or_else(|| panic!("the raw client did not get {body:?}"));
        if m["body"] == body {
            break;
        }
    }
}
