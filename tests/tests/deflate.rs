//! permessage-deflate on `/ws` and `/stomp` against the real binary: what is negotiated where,
//! that a room message is compressed once (raw frames byte-identical across subscribers, STOMP
//! frames differing only in their stored prefix), what it saves, that small frames go as they
//! are, compressed messages from clients, and that a connection keeps no compression memory.

mod deflate_client;

use deflate_client::{extensions, split_stored, Client, Received, OFFER};
use flate2::{Compress, Compression};
use futures_util::future::join_all;
use parley_tests::raw::{opcode, Frame, RawWebSocket};
use parley_tests::ServerProcess;
use serde_json::json;

/// What a client that offered no window sizes gets on `/ws` and `/stomp`.
const NO_TAKEOVER: [&str; 2] = ["server_no_context_takeover", "client_no_context_takeover"];

/// Chat lines of the lengths people write (the `send` commands are 150-300 bytes).
const LINES: [&str; 8] = [
    "Morning all! The deploy of the new search service went out at 9:40 and so far the error \
     rate looks flat. I will keep an eye on the dashboards until lunch.",
    "Could someone review my pull request for the billing export? It only touches the CSV \
     writer and the tests, should take ten minutes at most.",
    "Heads up: the staging database will be restarted at 3pm for the minor version upgrade, \
     expect about five minutes of downtime for anything that depends on it.",
    "I looked at the flaky test again. It waits for the websocket to close but the server \
     sends a ping first, so the assertion sees the pong. Fix incoming.",
    "Lunch at the Thai place around the corner? They have the green curry back on the menu \
     and it is sunny enough to sit outside for once.",
    "Reminder that the quarterly planning doc needs everyone's estimates by Friday. Please \
     add them to your team's section rather than in the comments.",
    "The customer from yesterday's call confirmed they can reproduce the timeout only behind \
     their corporate proxy, so it is probably the proxy closing idle connections.",
    "Thanks for the quick turnaround on the incident report! I added the timeline from the \
     pager alerts and linked the follow-up tickets at the bottom.",
];

/// The `Sec-WebSocket-Extensions` parameters `path` answers `offer` with (empty: none).
async fn answer(server: &ServerProcess, path: &str, offer: &str) -> Vec<String> {
    let proto = [("Sec-WebSocket-Protocol", "v12.stomp")];
    let extra: &[(&str, &str)] = if path.starts_with("/stomp") {
        &proto
    } else {
        &[]
    };
    let mut headers = extra.to_vec();
    headers.push(("Sec-WebSocket-Extensions", offer));
    let (_ws, head) = RawWebSocket::connect(server.addr(), path, &headers).await;
    extensions(&head)
}

#[tokio::test]
async fn negotiated_on_ws_and_stomp_without_context_takeover() {
    let server = ServerProcess::start(&[]);
    let window_10 = [NO_TAKEOVER[0], NO_TAKEOVER[1], "server_max_window_bits=10"];
    for path in ["/ws?name=neg", "/stomp"] {
        for offer in ["permessage-deflate", OFFER] {
            assert_eq!(
                answer(&server, path, offer).await,
                NO_TAKEOVER,
                "{path} {offer}"
            );
        }
        let smaller = "permessage-deflate; server_max_window_bits=10";
        assert_eq!(answer(&server, path, smaller).await, window_10, "{path}");
        // An offer that already asks for no context takeover is answered the same.
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(answer(&server, path, both).await, NO_TAKEOVER, "{path}");
    }
    // SockJS and Engine.IO carry frames of their own in their WebSocket messages: never.
    let never = [
        "/ws/042/deflate1/websocket?name=sj".to_owned(),
        "/stomp/042/deflate2/websocket".to_owned(),
        "/socket.io/?EIO=4&transport=websocket".to_owned(),
    ];
    for path in &never {
        assert!(answer(&server, path, OFFER).await.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn declined_everywhere_with_deflate_false() {
    let server = ServerProcess::start(&["--deflate", "false", "--echo"]);
    for path in ["/ws?name=off", "/stomp", "/echo"] {
        assert!(answer(&server, path, OFFER).await.is_empty(), "{path}");
    }
    // Declined means plain frames: RSV1 never set.
    let mut alice = Client::raw(&server, "alice", true).await;
    assert!(!alice.deflate());
    alice.join("plain").await;
    let send = json!({"type": "send", "room": "plain", "body": LINES[0], "ref": "1"});
    alice.send_json(&send, false).await;
    assert!(!alice.next_of("message").await.frame.rsv1);
}

#[tokio::test]
async fn a_smaller_server_window_is_honoured() {
    let server = ServerProcess::start(&[]);
    let offer = Some("permessage-deflate; server_max_window_bits=10");
    let mut small = Client::open(&server, "/ws?name=small", offer, &[]).await;
    small.join("windows").await;
    let mut sender = Client::raw(&server, "sender", false).await;
    sender.join("windows").await;
    let body = LINES.concat();
    let send = json!({"type": "send", "room": "windows", "body": body, "ref": "w"});
    sender.send_json(&send, false).await;
    // Inflated with a 10-bit window: a reference further back would fail here.
    let got = small.next_of("message").await;
    assert!(got.frame.rsv1);
    assert_eq!(got.json()["body"], body.as_str());
}

/// The subscription prefix the server writes before a MESSAGE's shared part.
fn prefix(sub: &str) -> Vec<u8> {
    format!("MESSAGE\nsubscription:{sub}\n").into_bytes()
}

#[tokio::test]
async fn room_messages_are_compressed_once_for_every_subscriber() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let room = "lounge";
    let mut raws = Vec::new();
    for (name, deflate) in [("ra", true), ("rb", true), ("rp", false)] {
        let mut c = Client::raw(&server, name, deflate).await;
        assert_eq!(c.deflate(), deflate);
        c.join(room).await;
        raws.push(c);
    }
    let mut stomps = Vec::new();
    for (login, sub, deflate) in [
        ("sa", "s-1", true),
        ("sb", "sub-long-77", true),
        ("sp", "s-1", false),
    ] {
        let mut c = Client::stomp(&server, login, deflate).await;
        c.subscribe(sub, room).await;
        stomps.push(c);
    }
    let mut sender = Client::raw(&server, "sender", false).await;
    sender.join(room).await;

    let (mut compressed, mut plain) = ([0usize; 2], [0usize; 2]);
    for (i, line) in LINES.iter().enumerate() {
        let send = json!({"type": "send", "room": room, "body": line, "ref": i.to_string()});
        let len = send.to_string().len();
        assert!((150..=300).contains(&len), "send command of {len} bytes");
        sender.send_json(&send, false).await;
        let mut raw: Vec<Received> = Vec::new();
        for c in &mut raws {
            raw.push(until_body(c, line, |r| r.json()["body"] == *line).await);
        }
        let mut stomp: Vec<Received> = Vec::new();
        for c in &mut stomps {
            stomp.push(until_body(c, line, |r| r.stomp().body == line.as_bytes()).await);
        }
        let (ra, rb, rp) = (&raw[0], &raw[1], &raw[2]);
        assert!(ra.frame.rsv1 && rb.frame.rsv1 && !rp.frame.rsv1);
        assert_eq!(ra.data, rp.data, "inflates to what a plain client gets");
        assert_eq!(
            ra.frame, rb.frame,
            "one compression for every raw subscriber"
        );
        compressed[0] += ra.wire;
        plain[0] += rp.wire;

        let (sa, sb, sp) = (&stomp[0], &stomp[1], &stomp[2]);
        assert!(sa.frame.rsv1 && sb.frame.rsv1 && !sp.frame.rsv1);
        assert_eq!(sa.data, sp.data, "inflates to what a plain client gets");
        let shared = sp
            .data
            .strip_prefix(&prefix("s-1")[..])
            .expect("prefix first");
        assert_eq!(sb.data, [&prefix("sub-long-77")[..], shared].concat());
        let (stored_a, rest_a) = split_stored(&sa.frame.payload);
        let (stored_b, rest_b) = split_stored(&sb.frame.payload);
        assert_eq!((stored_a, stored_b), (prefix("s-1"), prefix("sub-long-77")));
        assert_eq!(rest_a, rest_b, "the shared part is compressed once");
        compressed[1] += sa.wire;
        plain[1] += sp.wire;
    }
    for (kind, i) in [("raw", 0), ("STOMP", 1)] {
        let ratio = compressed[i] as f64 / plain[i] as f64;
        println!(
            "{kind} chat messages: {} / {} wire bytes = {ratio:.3}",
            compressed[i], plain[i]
        );
        assert!(ratio <= 0.80, "{kind}: compressed/plain = {ratio:.3}");
    }
}

/// The next message `pred` matches (presence and other events skipped).
async fn until_body(c: &mut Client, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
    for _ in 0..100 {
        let got = c.next().await;
        let is_message = got.data.starts_with(b"MESSAGE\n") || got.data.starts_with(b"{");
        if is_message && pred(&got) {
            return got;
        }
    }
    panic!("no message {what:?} in 100");
}

#[tokio::test]
async fn a_history_page_shrinks_to_under_a_third() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let mut sender = Client::raw(&server, "writer", false).await;
    sender.join("archive").await;
    for i in 0..50 {
        let body = LINES[i % LINES.len()];
        let send = json!({"type": "send", "room": "archive", "body": body, "ref": i.to_string()});
        sender.send_json(&send, false).await;
    }
    for _ in 0..50 {
        sender.next_of("ack").await;
    }
    let ask = json!({"type": "history", "room": "archive", "limit": 50});
    let mut pages = Vec::new();
    for (name, deflate) in [("hd", true), ("hp", false)] {
        let mut c = Client::raw(&server, name, deflate).await;
        c.send_json(&ask, false).await;
        pages.push(c.next_of("history").await);
    }
    let (compressed, plain) = (&pages[0], &pages[1]);
    assert!(compressed.frame.rsv1 && !plain.frame.rsv1);
    assert_eq!(compressed.data, plain.data);
    assert_eq!(plain.json()["messages"].as_array().map(Vec::len), Some(50));
    let ratio = compressed.wire as f64 / plain.wire as f64;
    println!(
        "history of 50: {} / {} wire bytes = {ratio:.3}",
        compressed.wire, plain.wire
    );
    assert!(ratio <= 0.30, "history compressed/plain = {ratio:.3}");
}

#[tokio::test]
async fn small_frames_go_uncompressed() {
    let server = ServerProcess::start(&[]);
    let mut d = Client::raw(&server, "d", true).await;
    d.join("small").await;
    let mut p = Client::raw(&server, "p", false).await;
    p.join("small").await;
    p.send_json(&json!({"type": "typing", "room": "small"}), false)
        .await;
    let typing = d.next_of("typing").await;
    assert!(!typing.frame.rsv1, "{typing:?}");
    let send = json!({"type": "send", "room": "small", "body": "ok", "ref": "s"});
    d.send_json(&send, false).await;
    let (echo, ack) = d.echo_and_ack().await;
    for got in [echo, ack] {
        assert!(got.data.len() < 128 && !got.frame.rsv1, "{got:?}");
    }
    let mut s = Client::stomp(&server, "st", true).await;
    assert!(s.deflate());
    let receipt = s.subscribe("0", "small").await;
    assert!(!receipt.frame.rsv1, "{receipt:?}");
}

#[tokio::test]
async fn compressed_messages_from_clients_are_accepted() {
    let server = ServerProcess::start(&[]);
    let mut observer = Client::raw(&server, "observer", false).await;
    observer.join("inbox").await;
    let mut z = Client::raw(&server, "z", true).await;
    z.join("inbox").await;
    let send = json!({"type": "send", "room": "inbox", "body": LINES[1], "ref": "z1"});
    z.send_json(&send, true).await;
    assert_eq!(z.echo_and_ack().await.1.json()["ref"], "z1");
    assert_eq!(observer.next_of("message").await.json()["body"], LINES[1]);

    let mut s = Client::stomp(&server, "s", true).await;
    let headers = [("destination", "/topic/inbox"), ("receipt", "sent")];
    s.send_stomp("SEND", &headers, LINES[2].as_bytes(), true)
        .await;
    assert_eq!(
        s.next_frame("RECEIPT").await.stomp().header("receipt-id"),
        "sent"
    );
    assert_eq!(observer.next_of("message").await.json()["body"], LINES[2]);
}

/// A client that agreed to `client_no_context_takeover` must compress each message alone (RFC
/// 7692 §7.1.1.2); one that refers back to an earlier message anyway sends data that does not
/// inflate on its own: an invalid message, so the server fails that connection with 1007
/// (invalid payload data, RFC 6455 §7.4.1) and everyone else carries on.
#[tokio::test]
async fn context_takeover_against_the_agreement_closes_that_connection_only() {
    let server = ServerProcess::start(&[]);
    let mut observer = Client::raw(&server, "observer", false).await;
    observer.join("inbox").await;
    let mut v = Client::raw(&server, "violator", true).await;
    v.join("inbox").await;
    let first = json!({"type": "send", "room": "inbox", "body": LINES[3], "ref": "v1"});
    let again = format!("{} Same again.", LINES[3]);
    let second = json!({"type": "send", "room": "inbox", "body": again, "ref": "v2"});
    // One compressor for both: the second message is mostly a reference into the first.
    let mut c = Compress::new(Compression::default(), false);
    for msg in [&first, &second] {
        let payload = deflate_client::deflate_with(&mut c, msg.to_string().as_bytes());
        v.ws.send(&Frame::new(opcode::TEXT, payload).with_rsv1(true))
            .await;
    }
    let close = loop {
        let got = v.next_any().await;
        if got.frame.opcode == opcode::CLOSE {
            break got.frame;
        }
        assert_ne!(
            got.json()["ref"],
            "v2",
            "the second message was taken: {got:?}"
        );
    };
    assert_eq!(close.close_code(), Some(1007), "{close:?}");

    let mut other = Client::raw(&server, "other", true).await;
    other.join("inbox").await;
    let marker = json!({"type": "send", "room": "inbox", "body": LINES[4], "ref": "o"});
    other.send_json(&marker, true).await;
    let seen = loop {
        let m = observer.next_of("message").await.json();
        assert_ne!(
            m["body"],
            again.as_str(),
            "the violating message was delivered"
        );
        if m["body"] == LINES[4] {
            break m;
        }
    };
    assert_eq!(seen["from"], "other");
}

/// Messages the memory test has in flight at once.
const IN_FLIGHT: usize = 10;

/// A connection of the memory test: joined to a room of its own.
async fn member(server: &ServerProcess, i: usize, deflate: bool) -> Client {
    let name = format!("m{i}");
    let mut c = Client::raw(server, &name, deflate).await;
    assert_eq!(c.deflate(), deflate);
    c.join(&name).await;
    c
}

/// `c` (member `i`) sends a message to its room (compressed if it negotiated deflate) and
/// receives it back as a room message (compressed likewise), and its ack.
async fn chat(c: &mut Client, i: usize) {
    let body = LINES[i % LINES.len()];
    let send = json!({"type": "send", "room": format!("m{i}"), "body": body, "ref": "m"});
    let deflate = c.deflate();
    c.send_json(&send, deflate).await;
    let (echo, _) = c.echo_and_ack().await;
    assert_eq!(
        (echo.frame.rsv1, echo.json()["body"].as_str()),
        (deflate, Some(body))
    );
}

/// RSS growth of a fresh server while `count` open connections each send and receive a message,
/// after a warm-up (so the workers' per-thread compressors, made once, are not counted).
///
/// Measured once the connections are open, with [`IN_FLIGHT`] messages at a time: what is
/// kept per connection. Across the connections' opening, or with all 1,000 sending at once,
/// the figure swings by several KiB per connection from run to run (where the allocator puts
/// each message's transient inflate buffers among the connections' own allocations); a second
/// round of messages on the same connections adds nothing either way.
async fn rss_growth(count: usize, deflate: bool) -> usize {
    let server = ServerProcess::start(&["--rate-limit", "0", "--max-connections-per-ip", "0"]);
    let mut clients = Vec::with_capacity(count + 64);
    let ids: Vec<usize> = (0..count + 64).collect();
    for batch in ids.chunks(100) {
        clients.extend(join_all(batch.iter().map(|&i| member(&server, i, deflate))).await);
    }
    let (warm, busy) = clients.split_at_mut(64);
    join_all(warm.iter_mut().enumerate().map(|(i, c)| chat(c, i))).await;
    let before = server.rss_bytes();
    for (n, batch) in busy.chunks_mut(IN_FLIGHT).enumerate() {
        let first = 64 + n * IN_FLIGHT;
        join_all(
            batch
                .iter_mut()
                .enumerate()
                .map(|(i, c)| chat(c, first + i)),
        )
        .await;
    }
    let after = server.rss_bytes();
    after.saturating_sub(before)
}

/// No compression memory per connection: 1,000 connections that negotiated deflate, each
/// sending a compressed message and receiving a compressed room message, cost about what
/// 1,000 plain ones doing the same do. A zlib compressor kept per connection would be ~256
/// KiB each, an inflater kept ~40 KiB; one allocated per message (as before the thread's
/// inflater served whole messages) left the heap fragmented by 2-9 KiB per connection here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_costs_no_memory_per_connection() {
    const COUNT: usize = 1000;
    let plain = rss_growth(COUNT, false).await;
    let compressed = rss_growth(COUNT, true).await;
    let per_conn = (compressed as f64 - plain as f64) / COUNT as f64;
    println!(
        "RSS growth while {COUNT} connections chat: plain {plain} B, deflate {compressed} B, \
         difference {per_conn:.0} B per connection"
    );
    assert!(
        per_conn < 2048.0,
        "deflate costs {per_conn:.0} B more per connection"
    );
}
