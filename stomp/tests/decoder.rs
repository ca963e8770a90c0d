//! Decoder limits and read-split independence, with regressions for what `stomp/fuzz` found.

use bytes::BytesMut;
use parley_stomp::{Decoder, Frame, Limits, StompError, Version};

fn limits(max_header_line: usize, max_body: usize, max_frame: usize) -> Limits {
    let mut limits = Limits::default();
    limits.max_header_line = max_header_line;
    limits.max_headers = 4;
    limits.max_body = max_body;
    limits.max_frame = max_frame;
    limits
}

/// Decodes `wire` delivered in reads ending at `cuts`; stops at the first error.
fn decode(limits: &Limits, wire: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, StompError> {
    let mut decoder = Decoder::new(limits.clone());
    decoder.set_version(Version::V1_2);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&wire.len()]) {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

/// The result of decoding `wire` in one read, after checking every two-read split gives the
/// same.
fn decode_any_split(limits: &Limits, wire: &[u8]) -> Result<Vec<Frame>, StompError> {
    let whole = decode(limits, wire, &[]);
    for cut in 0..=wire.len() {
        assert_eq!(
            decode(limits, wire, &[cut]),
            whole,
            "split at {cut} of {:?}",
            String::from_utf8_lossy(wire)
        );
    }
    whole
}

#[test]
fn ordinary_frames_decode_the_same_however_the_reads_split() {
    let wire = b"\n\r\nSEND\r\ndestination:/queue/a\r\nx:a\\cb\r\n\r\nhello\0\nACK\nid:1\ncontent-length:3\n\na\0b\0";
    let frames = decode_any_split(&Limits::default(), wire).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].get("x"), Some("a:b"));
    assert_eq!(&frames[1].body[..], b"a\0b");
}

#[test]
fn limits_hold_whatever_the_reads() {
    let l = limits(16, 8, 128);
    // Line of 17 bytes, still unfinished: refused early.
    assert_eq!(
        decode(&l, b"SEND\nk:xxxxxxxxxxxxxxxxxxxxxxx", &[]),
        Err(StompError::HeaderLineTooLong { max: 16 })
    );
    // content-length over the limit: refused before the body arrives.
    assert_eq!(
        decode_any_split(&l, b"SEND\ncontent-length:9\n\n"),
        Err(StompError::BodyTooLarge { size: 9, max: 8 })
    );
    // A body of exactly the limit is fine.
    let frames = decode_any_split(&l, b"SEND\n\n12345678\0").unwrap();
    assert_eq!(&frames[0].body[..], b"12345678");
}

/// `max_header_line` 16: a 16-byte header line ending in CRLF is within the limit, but when a
/// read ends between its `\r` and `\n` the unfinished line (17 bytes, CR included) is refused.
#[test]
fn a_crlf_line_at_the_limit_is_accepted_however_the_reads_split() {
    let l = limits(16, 8, 128);
    let wire = b"SEND\r\nk:xxxxxxxxxxxxxx\r\n\r\n\0";
    let frames = decode_any_split(&l, wire).unwrap();
    assert_eq!(frames[0].get("k"), Some("xxxxxxxxxxxxxx"));
}

/// `max_header_line` 16: a complete 17-byte line (no CR) is accepted when its `\n` is in the
/// same read (the complete-line check allows `max + 1`), but refused when a read ends before
/// the `\n` (the unfinished-line check allows `max`).
#[test]
fn a_line_over_the_limit_is_refused_however_the_reads_split() {
    let l = limits(16, 8, 128);
    let wire = b"SEND\nk:xxxxxxxxxxxxxxx\n\n\0";
    assert_eq!(
        decode_any_split(&l, wire),
        Err(StompError::HeaderLineTooLong { max: 16 })
    );
}

/// Without `content-length`, the body and frame limits are only checked while the NUL is still
/// missing: a frame whose NUL is already in the buffer is accepted whatever its size.
#[test]
fn body_and_frame_limits_hold_when_the_whole_frame_is_in_one_read() {
    let l = limits(16, 8, 128);
    let wire = b"SEND\n\n0123456789abcdefghij\0";
    let result = decode(&l, wire, &[]);
    assert!(
        matches!(result, Err(StompError::BodyTooLarge { max: 8, .. })),
        "{result:?}"
    );
    // Split anywhere in the body, the limit does apply.
    assert!(matches!(
        decode(&l, wire, &[12]),
        Err(StompError::BodyTooLarge { max: 8, .. })
    ));

    // Same for the frame limit: a 19-byte head, 7 bytes of body and the NUL against max_frame 20.
    let l = limits(16, 8, 20);
    let wire = b"SEND\nk:0123456789\n\n1234567\0";
    let result = decode(&l, wire, &[]);
    assert_eq!(result, Err(StompError::FrameTooLarge { max: 20 }));
}
