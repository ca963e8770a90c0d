//! Feeds arbitrary client messages to the raw JSON endpoint (`/ws`): a `RawClient` over the real
//! hub, auth and a temporary SQLite store, driven as the WebSocket driver drives it, without
//! sockets.
//!
//! Input layout (so hand-made seeds stay meaningful):
//!
//! | bytes | meaning                                                               |
//! |-------|-----------------------------------------------------------------------|
//! | 0     | who the client is: `n % 3` = 0 `alice`, 1 `bob`, 2 a guest            |
//! | 1..   | the messages, one per line; an empty line ends one read (one batch)   |
//!
//! A message that is UTF-8 goes as a text message, any other as binary. `$ALICE`, `$BOB` and
//! `$REFRESH` become real tokens (for `{"type":"auth"}`). Beyond "never panic", it checks that
//! everything the server writes is a stream of unmasked, unfragmented server frames: text frames
//! holding a JSON object with a known `type` (errors with a `code` and a `message`, acks with a
//! numeric id), and at most one close frame, last, with 1008 (too many errors in a row).
#![no_main]


use libfuzzer_sys::fuzz_target;
use parley_protocol::close::CloseFrame;
use parley_protocol::frame::{FrameHeader, OpCode};
use parley_protocol::CloseCode;
use parley_server::fuzzing::{Harness, Who};
use serde_json::Value;

/// Every `type` the server sends raw clients (docs/protocol.md).
const TYPES: &[&str] = &[
    "pong", "joined", "ack", "error", "message", "typing", "presence", "deleted", "history",
    "authed",
];

fuzz_target!(|data: &[u8]| {
    let [who, messages @ ..] = data else {
        return;
    };
    let who = match who % 3 {
        0 => Who::Alice,
        1 => Who::Bob,
        _ => Who::Guest,
    };
    let mut reads: Vec<Vec<&[u8]>> = vec![Vec::new()];
    for line in messages.split(|&b| b == b'\n') {
        match reads.last_mut() {
            Some(read) if line.is_empty() => {
                if !read.is_empty() {
                    reads.push(Vec::new());
                }
            }
            Some(read) => read.push(line),
            None => unreachable!("reads starts with one"),
        }
    }
    let (runtime, harness) = Harness::shared();
    let outcome = runtime.block_on(harness.raw(who, &reads));
    assert_eq!(outcome.closed, None, "the hub closed a fresh session");
    check_written(&outcome.written);
});

/// Parses what the server wrote as server frames and checks each one.
fn check_written(mut out: &[u8]) {
    let mut closed = false;
    while !out.is_empty() {
        assert!(!closed, "bytes written after the close frame");
        let (header, header_len) = match FrameHeader::parse(out) {
            Ok(Some(parsed)) => parsed,
            other => panic!("server wrote an unparsable frame header: {other:?}"),
        };
        assert!(header.fin && header.mask.is_none() && !header.rsv1);
        let len = usize::try_from(header.payload_len).expect("payload length fits usize");
        let payload = out
            .get(header_len..header_len + len)
            .expect("server wrote a truncated frame");
        match header.opcode {
            OpCode::Text => check_json(payload),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)
                    .expect("valid close payload")
                    .expect("close with a code");
                assert_eq!(frame.code, CloseCode::POLICY_VIOLATION);
                closed = true;
            }
            other => panic!("the raw endpoint wrote a {other:?} frame"),
        }
        out = &out[header_len + len..];
    }
}

fn check_json(payload: &[u8]) {
    let value: Value = serde_json::from_slice(payload).expect("server sent invalid JSON");
    let kind = value["type"].as_str().expect("every message has a type");
    assert!(TYPES.contains(&kind), "unknown type {kind:?} in {value}");
    match kind {
        "error" => {
            assert!(value["code"].is_string(), "error without a code: {value}");
            assert!(
                value["message"].is_string(),
                "error without a message: {value}"
            );
        }
        "ack" => {
            let id = value["id"].as_str().expect("ack ids are strings");
            assert!(id.parse::<u64>().is_ok(), "ack id {id:?} is not a number");
        }
        _ => {}
    }
}
