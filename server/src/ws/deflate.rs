//! permessage-deflate on `/ws` and `/stomp`: every message compressed alone
//! (`server_no_context_takeover`), a shared message compressed once and the same bytes written
//! to every connection that negotiated the shared parameters, small messages left as they are,
//! and no compression state kept per connection.

use bytes::Bytes;
use parley_protocol::deflate::{compress_alone, put_stored, stored_len, DeflateConfig};
use parley_protocol::frame::{self, FrameHeader, OpCode};
use parley_protocol::DeflateParams;
use parley_stomp::{SharedMessage, Version, Wire};

/// Payloads smaller than this go uncompressed: a typing notice or an ack would hardly shrink,
/// and compressing it would cost more than the bytes saved.
pub const MIN_COMPRESSED: usize = 128;

/// zlib level of the shared compression: one compression serves a whole fan-out, so a good
/// ratio is worth its CPU.
const LEVEL: u32 = 6;

/// What `/ws` and `/stomp` accept: no context takeover either way, so a message compresses
/// alone (once for every subscriber) and no connection keeps a window between messages.
pub fn chat_config() -> DeflateConfig {
    let mut cfg = DeflateConfig::default();
    cfg.server_no_context_takeover = true;
    cfg.client_no_context_takeover = true;
    cfg.level = LEVEL;
    cfg
}

/// The parameters shared compressed forms are made with.
const SHARED: DeflateParams = DeflateParams {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
    level: LEVEL,
};

/// Whether a connection can take the shared compressed forms: it negotiated no context
/// takeover and the full window. Others (a client that asked for a smaller window) get their
/// messages compressed one by one.
pub fn shares(params: &DeflateParams) -> bool {
    params.server_no_context_takeover
        && params.server_max_window_bits == SHARED.server_max_window_bits
        && params.level == SHARED.level
}

/// A complete, uncompressed data frame compressed alone with `params`; the frame as it is when
/// it is small, already compressed, fragmented or a control frame.
pub fn compress_frame(frame: &Bytes, params: &DeflateParams) -> Bytes {
    compressed_frame(frame, params).unwrap_or_else(|| frame.clone())
}

/// [`compress_frame`]'s new frame, or `None` when the frame goes as it is.
pub fn compressed_frame(frame: &[u8], params: &DeflateParams) -> Option<Bytes> {
    let Ok(Some((header, header_len))) = FrameHeader::parse(frame) else {
        return None;
    };
    let payload = &frame[header_len..];
    let whole = header.payload_len == payload.len() as u64;
    let data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
    if !whole || !data || !header.fin || header.rsv1 || payload.len() < MIN_COMPRESSED {
        return None;
    }
    Some(frame::encode_compressed(
        header.opcode,
        &compress_alone(payload, params),
    ))
}

/// The raw protocol's frame for a shared message, compressed once for every subscriber with
/// the shared parameters; `plain` is the uncompressed frame, cached on the message too.
pub fn shared_frame(
    message: &SharedMessage,
    plain: impl FnOnce(&SharedMessage) -> Bytes,
) -> &Bytes {
    message.compressed(Wire::Other, |m| {
        compress_frame(m.other_wire(plain), &SHARED)
    })
}

/// A STOMP MESSAGE for one subscriber as a compressed WebSocket message: `prefix` (its own
/// `MESSAGE` line and `subscription`) in stored blocks, then the shared part compressed once for
/// every subscriber. `None` if it is too small to compress.
pub fn stomp_message<'m>(
    prefix: &Bytes,
    message: &'m SharedMessage,
    version: Version,
    head: &mut Vec<u8>,
) -> Option<&'m Bytes> {
    let shared = message.shared(version);
    if prefix.len() + shared.len() < MIN_COMPRESSED {
        return None;
    }
    let compressed = message.compressed(Wire::Stomp(version), |m| {
        Bytes::from(compress_alone(m.shared(version), &SHARED))
    });
    let opcode = if message.body_is_utf8() {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let header = FrameHeader {
        rsv1: true,
        ..FrameHeader::server(opcode, stored_len(prefix.len()) + compressed.len())
    };
    head.reserve(header.encoded_len() + stored_len(prefix.len()));
    header.write(head);
    put_stored(head, prefix);
    Some(compressed)
}

/// One message made of `parts`, compressed alone with `params`; `None` if it is too small.
pub fn compress_parts(parts: &[Bytes], text: bool, params: &DeflateParams) -> Option<Bytes> {
    let len: usize = parts.iter().map(Bytes::len).sum();
    if len < MIN_COMPRESSED {
        return None;
    }
    let whole = parts.concat();
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    Some(frame::encode_compressed(
        opcode,
        &compress_alone(&whole, params),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::deflate::Inflater;

    fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut i = Inflater::new(&SHARED);
        let mut out = Vec::new();
        i.inflate(payload, &mut out, 1 << 20).unwrap();
        i.finish_message(&mut out, 1 << 20).unwrap();
        out
    }

    fn payload(frame: &[u8]) -> (FrameHeader, &[u8]) {
        let (header, len) = FrameHeader::parse(frame).unwrap().unwrap();
        (header, &frame[len..])
    }

    fn chat_json() -> Vec<u8> {
        let body = "a message of a realistic length, saying something about lunch plans ".repeat(2);
        format!(r#"{{"type":"message","room":"general","id":"42","from":"alice","ts":1733400000000,"body":"{body}"}}"#)
            .into_bytes()
    }

    #[test]
    fn small_frames_stay_uncompressed_and_large_ones_shrink() {
        let small = frame::encode(OpCode::Text, b"{\"type\":\"typing\"}");
        assert_eq!(compress_frame(&small, &SHARED), small);
        let json = chat_json();
        let plain = frame::encode(OpCode::Text, &json);
        let compressed = compress_frame(&plain, &SHARED);
        let (header, data) = payload(&compressed);
        assert!(header.rsv1 && header.fin && header.opcode == OpCode::Text);
        assert!(compressed.len() < plain.len());
        assert_eq!(inflate(data), json);
        // Compressing again changes nothing: it is already compressed.
        assert_eq!(compress_frame(&compressed, &SHARED), compressed);
    }

    #[test]
    fn a_shared_message_is_compressed_once_for_every_subscriber() {
        let message = SharedMessage::new(
            vec![("destination".into(), "/topic/general".into())],
            Bytes::from(chat_json()),
        );
        let (mut head_a, mut head_b) = (Vec::new(), Vec::new());
        let a = stomp_message(
            &Bytes::from_static(b"MESSAGE\nsubscription:0\n"),
            &message,
            Version::V1_2,
            &mut head_a,
        )
        .unwrap();
        let b = stomp_message(
            &Bytes::from_static(b"MESSAGE\nsubscription:sub-77\n"),
            &message,
            Version::V1_2,
            &mut head_b,
        )
        .unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same compressed bytes");
        for (head, compressed, sub) in [(head_a, a, "0"), (head_b, b, "sub-77")] {
            let frame = [&head[..], &compressed[..]].concat();
            let (header, data) = payload(&frame);
            assert!(header.rsv1);
            let mut expected = format!("MESSAGE\nsubscription:{sub}\n").into_bytes();
            expected.extend_from_slice(message.shared(Version::V1_2));
            assert_eq!(inflate(data), expected);
        }
        let raw = shared_frame(&message, |m| frame::encode(OpCode::Text, m.body()));
        let again = shared_frame(&message, |_| unreachable!("cached"));
        assert_eq!(raw.as_ptr(), again.as_ptr());
        assert_eq!(inflate(payload(raw).1), chat_json());
    }
}
