//! Decode throughput of the server-side frame layer.
//!
//! Every decode benchmark feeds `Connection::read` a buffer of pre-encoded, masked client frames
//! and drains it, so the figure covers header parsing, unmasking, UTF-8 checking (text only),
//! payload hand-off and event construction. Throughput is counted in payload bytes, the bytes the
//! application receives; frames/s follows from the frames per iteration printed with each id.

use bytes::BytesMut;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use parley_protocol::frame::{encode_into, FrameHeader, OpCode};
use parley_protocol::mask::apply_mask;
use parley_protocol::{Connection, Event, Limits, Message};

/// A fixed, non-trivial key: unmasking cost does not depend on the key value.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Payload bytes decoded per iteration: enough frames that criterion's per-iteration overhead
/// vanishes, small enough to stay in L2/L3 on most machines.
const BYTES_PER_ITER: usize = 1 << 20;

const KIB: usize = 1024;

fn limits() -> Limits {
    Limits::new(1 << 20, 1 << 20)
}

/// `count` final, masked frames of `opcode`, each carrying `payload`, back to back.
fn encode_frames(opcode: OpCode, payload: &[u8], count: usize) -> BytesMut {
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(MASK),
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::with_capacity(count * (header.encoded_len() + payload.len()));
    for _ in 0..count {
        encode_into(&mut out, &header, payload);
    }
    out
}

/// Exactly `len` bytes of mixed ASCII and multi-byte UTF-8, so the validator cannot take its
/// all-ASCII fast path for the whole buffer.
fn utf8_text(len: usize) -> Vec<u8> {
    const PATTERN: &str = "SEND destination:/topic/chat héllo wörld — κόσμε ✓ 🎉\n";
    let mut text = PATTERN.repeat(len / PATTERN.len() + 1);
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    // Pad with ASCII so every size is exact and the frame still ends on a char boundary.
    while text.len() < len {
        text.push('.');
    }
    text.into_bytes()
}

/// Decodes every frame in `buf` and returns how many messages came out.
fn decode_all(conn: &mut Connection, buf: &mut BytesMut) -> usize {
    let mut messages = 0;
    // A decode error here means the benchmark input is broken: fail loudly rather than time it.
    while let Some(event) = conn.read(buf).expect("benchmark frames are valid") {
        if let Event::Message(m) = event {
            black_box(m.payload());
            messages += 1;
        }
    }
    messages
}

/// Decodes `encoded` once, untimed, and checks every message is `payload` unmasked, so a fast
/// figure cannot come from frames that were skipped or left masked.
fn check_round_trip(opcode: OpCode, payload: &[u8], encoded: &BytesMut, frames: usize) {
    let mut conn = Connection::new(limits(), None);
    let mut buf = encoded.clone();
    let mut seen = 0;
    while let Some(event) = conn.read(&mut buf).expect("benchmark frames are valid") {
        match event {
            Event::Message(m) => {
                assert_eq!(m.payload().as_ref(), payload);
                assert_eq!(matches!(m, Message::Text(_)), opcode == OpCode::Text);
                seen += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, frames);
    assert!(buf.is_empty());
}

fn bench_decode(c: &mut Criterion, group_name: &str, opcode: OpCode, sizes: &[usize]) {
    let mut group = c.benchmark_group(group_name);
    for &size in sizes {
        let payload = match opcode {
            OpCode::Text => utf8_text(size),
            _ => vec![0xa5; size],
        };
        let frames = BYTES_PER_ITER / size;
        let encoded = encode_frames(opcode, &payload, frames);
        check_round_trip(opcode, &payload, &encoded, frames);
        group.throughput(Throughput::Bytes((frames * size) as u64));
        let id = BenchmarkId::new(human(size), format!("{frames}_frames"));
        group.bench_with_input(id, &encoded, |b, encoded| {
            // Unmasking works in place, so each iteration needs its own copy of the wire bytes;
            // the copy and the connection are made in the untimed setup.
            b.iter_batched(
                || (Connection::new(limits(), None), encoded.clone()),
                |(mut conn, mut buf)| {
                    let messages = decode_all(&mut conn, &mut buf);
                    assert_eq!(messages, frames);
                    // Returned so the payloads (which may share `buf`) are dropped untimed.
                    (conn, buf)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn decode_binary(c: &mut Criterion) {
    bench_decode(c, "decode_binary", OpCode::Binary, &[16, KIB, 64 * KIB]);
}

fn decode_text(c: &mut Criterion) {
    bench_decode(c, "decode_text", OpCode::Text, &[KIB, 64 * KIB]);
}

fn mask_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for size in [16, KIB, 64 * KIB] {
        let mut buf = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(human(size), |b| {
            // Masking twice restores the data, so the same buffer serves every iteration.
            b.iter(|| apply_mask(black_box(&mut buf), black_box(MASK), 0));
        });
    }
    group.finish();
}

fn human(size: usize) -> String {
    if size >= KIB {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}

criterion_group!(benches, decode_binary, decode_text, mask_only);
criterion_main!(benches);
