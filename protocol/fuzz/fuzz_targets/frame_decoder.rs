//! Feeds arbitrary client bytes to `Connection::read`, with and without permessage-deflate.
//!
//! Input layout (so hand-made seeds stay meaningful):
//!
//! | bytes | meaning                                                                   |
//! |-------|---------------------------------------------------------------------------|
//! | 0..2  | big-endian u16: where the wire bytes are split, modulo their length + 1  |
//! | 2     | deflate parameters (see [`deflate_params`])                               |
//! | 3..   | the wire bytes the client sends                                           |
//!
//! Each input is decoded four times: without and with deflate, each fed whole and in two reads
//! split at the chosen point. Beyond "never panic", it checks that:
//!
//! - the outcome (events, error, bytes written back) does not depend on how the input was split,
//!   since a sans-IO decoder must not care where the socket's reads happened to end;
//! - events keep their promises: text is UTF-8, control payloads fit 125 bytes, messages fit
//!   the limit;
//! - after an error the connection reports closed and ignores further input;
//! - everything written back is a well-formed server frame stream that ends at most once with a
//!   valid close frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use parley_protocol::close::{CloseFrame, MAX_CLOSE_REASON};
use parley_protocol::deflate::DeflateParams;
use parley_protocol::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use parley_protocol::{Connection, Event, Limits, Message, ProtocolError};

/// Small limits keep each run fast while still letting inputs reach both size checks.
const MAX_FRAME: usize = 1 << 16;
const MAX_MESSAGE: usize = 1 << 18;

/// What one decoding run produced; two runs over the same bytes must produce equal outcomes.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<ProtocolError>,
    written: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let [split_hi, split_lo, params, wire @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([*split_hi, *split_lo])) % (wire.len() + 1);
    for deflate in [None, Some(deflate_params(*params))] {
        let whole = run(deflate, &[wire]);
        let pieces = run(deflate, &[&wire[..split], &wire[split..]]);
        assert_eq!(
            whole, pieces,
            "outcome depends on the read split at {split}"
        );
    }
});

/// Parameters the handshake could have negotiated: bit 0 server_no_context_takeover, bit 1
/// client_no_context_takeover, bits 2-4 client window 8-15, bits 5-7 server window 9-15.
///
/// Out-of-range window bits are not generated: the connection trusts its caller there (the
/// handshake clamps them) and flate2 panics on them.
fn deflate_params(bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: bits & 1 != 0,
        client_no_context_takeover: bits & 2 != 0,
        client_max_window_bits: 8 + (bits >> 2 & 7),
        server_max_window_bits: 9 + (bits >> 5) % 7,
        // Fast compression keeps echoing large inflated messages cheap.
        level: 1,
    }
}

fn run(deflate: Option<DeflateParams>, reads: &[&[u8]]) -> Outcome {
    let mut conn = Connection::new(Limits::new(MAX_FRAME, MAX_MESSAGE), deflate);
    let mut buf = BytesMut::new();
    let mut outcome = Outcome {
        events: Vec::new(),
        error: None,
        written: Vec::new(),
    };
    for read in reads {
        buf.extend_from_slice(read);
        if outcome.error.is_some() {
            // A failed connection must swallow whatever still arrives.
            assert_eq!(conn.read(&mut buf), Ok(None));
            assert!(buf.is_empty(), "input kept after failure");
            continue;
        }
        loop {
            match conn.read(&mut buf) {
                Ok(Some(event)) => {
                    check_event(&event);
                    if let Event::Message(message) = &event {
                        // Echo like the chat server does, which also exercises the deflater.
                        let sent = conn.send(message);
                        assert_eq!(sent.is_err(), conn.is_closed() || conn.is_closing());
                    }
                    outcome.events.push(event);
                }
                Ok(None) => {
                    if conn.is_closed() {
                        assert!(buf.is_empty(), "input kept after the close handshake");
                    }
                    break;
                }
                Err(error) => {
                    assert!(conn.is_closed(), "{error} did not close the connection");
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        while let Some(bytes) = conn.poll_transmit() {
            outcome.written.extend_from_slice(&bytes);
        }
        assert_eq!(conn.buffered_output(), 0);
    }
    check_written(&outcome.written, deflate.is_some());
    outcome
}

fn check_event(event: &Event) {
    match event {
        Event::Message(message) => {
            assert!(
                message.payload().len() <= MAX_MESSAGE,
                "message over the limit"
            );
            if let Message::Text(text) = message {
                assert!(
                    std::str::from_utf8(text).is_ok(),
                    "text message is not UTF-8"
                );
            }
        }
        Event::Ping(payload) | Event::Pong(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        }
        Event::Close(frame) => {
            if let Some(frame) = frame {
                assert!(frame.reason.len() <= MAX_CLOSE_REASON);
            }
        }
    }
}

/// Parses what the server wrote back as a stream of server frames.
fn check_written(mut out: &[u8], deflate: bool) {
    let mut closed = false;
    while !out.is_empty() {
        assert!(!closed, "bytes written after the close frame");
        let (header, header_len) = match FrameHeader::parse(out) {
            Ok(Some(parsed)) => parsed,
            other => panic!("server wrote an unparsable frame header: {other:?}"),
        };
        assert!(header.fin && header.mask.is_none() && !header.rsv2 && !header.rsv3);
        let is_data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        assert!(!header.rsv1 || (deflate && is_data), "RSV1 on {header:?}");
        let payload_len = usize::try_from(header.payload_len).expect("payload length fits usize");
        let payload = out
            .get(header_len..header_len + payload_len)
            .expect("server wrote a truncated frame");
        match header.opcode {
            OpCode::Close => {
                assert!(payload_len <= MAX_CONTROL_PAYLOAD);
                // The server's own close frames must pass the checks it applies to the peer's.
                assert!(
                    CloseFrame::parse(payload).is_ok(),
                    "invalid close payload {payload:?}"
                );
                closed = true;
            }
            OpCode::Ping | OpCode::Pong => assert!(payload_len <= MAX_CONTROL_PAYLOAD),
            OpCode::Text if !header.rsv1 => assert!(std::str::from_utf8(payload).is_ok()),
            OpCode::Text | OpCode::Binary => {}
            OpCode::Continuation => panic!("the server never fragments"),
        }
        out = &out[header_len + payload_len..];
    }
}
