//! Feeds arbitrary client bytes to the STOMP frame `Decoder`, under small limits, for every
//! version.
//!
//! Input layout (so hand-made seeds stay meaningful):
//!
//! | bytes | meaning                                                                  |
//! |-------|--------------------------------------------------------------------------|
//! | 0..2  | big-endian u16: where the wire bytes are split, modulo their length + 1 |
//! | 2..   | the wire bytes the client sends                                          |
//!
//! Each input is decoded six times: for each of 1.0, 1.1 and 1.2, fed in one read and in two
//! reads split at the chosen point. Beyond "never panic", it checks that:
//!
//! - the outcome (frames decoded, then the error or the need for more bytes) does not depend on
//!   where the split is: a sans-IO decoder must not care where the socket's reads ended (the
//!   `size` of `BodyTooLarge`, "at least" that many bytes, is not compared);
//! - every decoded frame respects the limits: at most `MAX_HEADERS` headers, a body of at most
//!   `MAX_BODY` bytes, and a body of exactly `content-length` bytes when that header is present.
//!
//! Set `PARLEY_FUZZ_PANICS_ONLY=1` to check only for panics (useful to keep fuzzing for crashes
//! while a known split or limit bug is unfixed).
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use parley_stomp::{Decoder, Frame, Limits, StompError, Version};

/// Small limits so that inputs of a few hundred bytes reach every limit check.
const MAX_HEADER_LINE: usize = 32;
const MAX_HEADERS: usize = 4;
const MAX_BODY: usize = 64;
const MAX_FRAME: usize = 256;

/// What decoding produced; two runs over the same bytes must produce equal outcomes.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<StompError>,
}

fuzz_target!(|data: &[u8]| {
    let [split_hi, split_lo, wire @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([*split_hi, *split_lo])) % (wire.len() + 1);
    let strict = !panics_only();
    for version in Version::ALL {
        let whole = run(version, &[wire], strict);
        let pieces = run(version, &[&wire[..split], &wire[split..]], strict);
        if strict {
            assert_eq!(
                whole, pieces,
                "{version:?}: outcome depends on the read split at {split}"
            );
        }
    }
});

fn panics_only() -> bool {
    static PANICS_ONLY: OnceLock<bool> = OnceLock::new();
    *PANICS_ONLY
        .get_or_init(|| std::env::var_os("PARLEY_FUZZ_PANICS_ONLY").is_some_and(|v| v != "0"))
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_header_line = MAX_HEADER_LINE;
    limits.max_headers = MAX_HEADERS;
    limits.max_body = MAX_BODY;
    limits.max_frame = MAX_FRAME;
    limits
}

fn run(version: Version, reads: &[&[u8]], strict: bool) -> Outcome {
    let mut decoder = Decoder::new(limits());
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if strict {
                        check_frame(&frame);
                    }
                    frames.push(frame);
                }
                Ok(None) => break,
                // The session answers any error with ERROR and a close: nothing follows.
                Err(error) => {
                    return Outcome {
                        frames,
                        error: Some(normalize(error)),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

/// `BodyTooLarge` for a body without `content-length` reports the size seen so far ("at
/// least"), which legitimately depends on how much had arrived: compare errors without it.
fn normalize(error: StompError) -> StompError {
    match error {
        StompError::BodyTooLarge { max, .. } => StompError::BodyTooLarge { size: 0, max },
        other => other,
    }
}

fn check_frame(frame: &Frame) {
    assert!(
        frame.headers.len() <= MAX_HEADERS,
        "{} headers, limit {MAX_HEADERS}",
        frame.headers.len()
    );
    assert!(
        frame.body.len() <= MAX_BODY,
        "body of {} bytes, limit {MAX_BODY}",
        frame.body.len()
    );
    if let Some(len) = frame.get("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(frame.body.len()),
            "content-length"
        );
    }
}
