//! `/echo` behaviour over real sockets: data echo, fragmentation, control frames,
//! the close handshake and permessage-deflate.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{connect, recv, recv_within, send, send_within};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use parley_tests::raw::{opcode, Frame, RawWebSocket};
use parley_tests::ServerProcess;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as TFrame;
use tokio_tungstenite::tungstenite::Message;

fn echo_server() -> ServerProcess {
    ServerProcess::start(&["--echo"])
}

/// A raw (tungstenite) data frame, masked by tungstenite when sent.
fn data_frame(payload: &[u8], op: Data, fin: bool) -> Message {
    Message::Frame(TFrame::message(
        Bytes::copy_from_slice(payload),
        OpCode::Data(op),
        fin,
    ))
}

#[tokio::test]
async fn text_messages_are_echoed_as_text() {
    let server = echo_server();
    let (mut ws, response) = connect(&server, "/echo").await;
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "server answered with an extension the client never offered: {:?}",
        response.headers()
    );
    for text in ["hello", "", "héllo wörld ✓ 🦀", &"x".repeat(70_000)] {
        send(&mut ws, Message::text(text)).await;
        match recv(&mut ws).await {
            Message::Text(t) => assert_eq!(t.as_str(), text),
            other => panic!(
                "expected a text echo of {} bytes, got {other:?}",
                text.len()
            ),
        }
    }
}

#[tokio::test]
async fn binary_messages_are_echoed_as_binary() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    // Invalid UTF-8 must pass untouched in binary messages.
    for data in [all_bytes, Vec::new(), vec![0xff, 0xfe, 0x00, 0xc3]] {
        send(&mut ws, Message::binary(data.clone())).await;
        match recv(&mut ws).await {
            Message::Binary(b) => assert_eq!(&b[..], &data[..]),
            other => panic!("expected a binary echo of {data:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sixteen_mib_binary_message_is_echoed() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    let len = 16 * 1024 * 1024;
    // A non-periodic pattern so misplaced chunks cannot compare equal.
    let mut state = 0x2545_f491_u32;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let limit = Duration::from_secs(60);
    send_within(&mut ws, Message::binary(data.clone()), limit).await;
    match recv_within(&mut ws, limit).await {
        Message::Binary(b) => {
            assert_eq!(b.len(), len, "echo has the wrong length");
            assert!(b[..] == data[..], "16 MiB echo differs from what was sent");
        }
        other => panic!("expected a 16 MiB binary echo, got {other:?}"),
    }
    // The connection is still usable afterwards.
    common::assert_echo(&mut ws, "after the big one").await;
}

#[tokio::test]
async fn fragmented_text_message_is_reassembled() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    send(&mut ws, data_frame(b"Hel", Data::Text, false)).await;
    send(&mut ws, data_frame(b"lo, ", Data::Continue, false)).await;
    send(&mut ws, data_frame(b"", Data::Continue, false)).await;
    send(&mut ws, data_frame(b"world", Data::Continue, true)).await;
    match recv(&mut ws).await {
        Message::Text(t) => assert_eq!(t.as_str(), "Hello, world"),
        other => panic!("expected the reassembled text, got {other:?}"),
    }
}

#[tokio::test]
async fn fragmented_binary_message_is_reassembled() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let chunks: Vec<&[u8]> = data.chunks(1000).collect();
    send(&mut ws, data_frame(chunks[0], Data::Binary, false)).await;
    send(&mut ws, data_frame(chunks[1], Data::Continue, false)).await;
    send(&mut ws, data_frame(chunks[2], Data::Continue, true)).await;
    match recv(&mut ws).await {
        Message::Binary(b) => assert_eq!(&b[..], &data[..]),
        other => panic!("expected the reassembled binary, got {other:?}"),
    }
}

#[tokio::test]
async fn utf8_split_across_fragments_with_interleaved_ping() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    // "héllo": the two bytes of 'é' (c3 a9) land in different fragments, and a ping
    // (allowed between fragments) arrives mid-message.
    send(&mut ws, data_frame(b"h\xc3", Data::Text, false)).await;
    send(&mut ws, Message::Ping(Bytes::from_static(b"mid"))).await;
    send(&mut ws, data_frame(b"\xa9llo", Data::Continue, true)).await;
    match recv(&mut ws).await {
        Message::Pong(p) => assert_eq!(&p[..], b"mid"),
        other => panic!("expected the pong for the interleaved ping first, got {other:?}"),
    }
    match recv(&mut ws).await {
        Message::Text(t) => assert_eq!(t.as_str(), "héllo"),
        other => panic!("expected the reassembled text, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_gets_pong_with_same_payload() {
    let server = echo_server();
    let (mut ws, _) = connect(&server, "/echo").await;
    let max_control: Vec<u8> = (0..125u8).collect();
    for payload in [b"parley-ping-42".to_vec(), Vec::new(), max_control] {
        send(&mut ws, Message::Ping(Bytes::from(payload.clone()))).await;
        match recv(&mut ws).await {
            Message::Pong(p) => assert_eq!(&p[..], &payload[..]),
            other => panic!("expected Pong({payload:?}), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_close_is_echoed_then_server_closes_tcp() {
    let server = echo_server();
    let (mut ws, _) = RawWebSocket::connect(server.addr(), "/echo", &[]).await;
    ws.send(&Frame::text("before close")).await;
    let echo = ws.expect_frame().await;
    assert_eq!(echo, Frame::text("before close"));

    ws.send(&Frame::close(4000, "done here")).await;
    let reply = ws.expect_frame().await;
    assert_eq!(
        reply.opcode,
        opcode::CLOSE,
        "expected a close reply, got {reply:?}"
    );
    assert!(reply.fin, "close frames cannot be fragmented: {reply:?}");
    assert_eq!(
        reply.close_code(),
        Some(4000),
        "close code not echoed: {reply:?}"
    );
    // The server initiates the TCP close once the close handshake is complete.
    ws.expect_eof(Duration::from_secs(5)).await;
}

// ---- permessage-deflate (RFC 7692), spoken by hand: tungstenite 0.26 has no deflate ----

const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Raw-deflates `data` with a sync flush and strips the trailing 00 00 ff ff.
fn compress_message(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start_in = c.total_in();
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        out.reserve(data.len() + 64);
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        let consumed = (c.total_in() - start_in) as usize;
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(
        out.ends_with(&DEFLATE_TAIL),
        "sync flush must end in 00 00 ff ff"
    );
    out.truncate(out.len() - DEFLATE_TAIL.len());
    out
}

/// Inflates one message payload (the tail is appended as RFC 7692 section 7.2.2 says).
fn decompress_message(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&DEFLATE_TAIL);
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    let start_in = d.total_in();
    loop {
        let consumed = (d.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let status = d
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("server sent an invalid deflate stream");
        let consumed = (d.total_in() - start_in) as usize;
        if status == Status::StreamEnd || (consumed == input.len() && out.len() < out.capacity()) {
            break;
        }
    }
    out
}

/// Reads one (possibly fragmented) data message: `(opcode, compressed?, payload)`.
async fn read_message(ws: &mut RawWebSocket) -> (u8, bool, Vec<u8>) {
    let first = ws.expect_frame().await;
    assert!(
        first.opcode == opcode::TEXT || first.opcode == opcode::BINARY,
        "expected a data frame, got {first:?}"
    );
    let (op, compressed, mut payload) = (first.opcode, first.rsv1, first.payload);
    let mut fin = first.fin;
    while !fin {
        let next = ws.expect_frame().await;
        assert_eq!(
            next.opcode,
            opcode::CONTINUATION,
            "expected a continuation: {next:?}"
        );
        assert!(
            !next.rsv1,
            "RSV1 is only allowed on a message's first frame: {next:?}"
        );
        payload.extend_from_slice(&next.payload);
        fin = next.fin;
    }
    (op, compressed, payload)
}

#[tokio::test]
async fn permessage_deflate_compressed_text_is_echoed_compressed() {
    let server = echo_server();
    let (mut ws, head) = RawWebSocket::connect(
        server.addr(),
        "/echo",
        &[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    .await;
    let ext = head
        .header("sec-websocket-extensions")
        .unwrap_or_else(|| panic!("101 does not accept permessage-deflate: {head:?}"));
    let params: Vec<String> = ext
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    assert_eq!(
        params[0], "permessage-deflate",
        "unexpected extension answer {ext:?}"
    );
    // The offer carried no client_max_window_bits, so the server must not ask for it.
    assert!(
        !params
            .iter()
            .any(|p| p.starts_with("client_max_window_bits")),
        "server sent client_max_window_bits the client did not offer: {ext:?}"
    );
    let client_resets = params.iter().any(|p| p == "client_no_context_takeover");

    let mut compressor = Compress::new(Compression::default(), false);
    // One inflater for the whole connection works whether or not the server keeps context.
    let mut inflater = Decompress::new(false);

    let texts = [
        "Hello, hello, hello, permessage-deflate! ".repeat(30),
        "A second message, which may reuse the compression context. ".repeat(20),
    ];
    for text in &texts {
        if client_resets {
            compressor.reset();
        }
        let compressed = compress_message(&mut compressor, text.as_bytes());
        assert!(
            compressed.len() < text.len() / 4,
            "test data should compress well"
        );
        ws.send(&Frame::new(opcode::TEXT, compressed).with_rsv1(true))
            .await;
        let (op, rsv1, payload) = read_message(&mut ws).await;
        assert_eq!(op, opcode::TEXT, "compressed text not echoed as text");
        assert!(
            rsv1,
            "echo of a highly compressible {}-byte text is not compressed (RSV1 clear)",
            text.len()
        );
        let plain = decompress_message(&mut inflater, &payload);
        assert!(
            plain == text.as_bytes(),
            "echo does not inflate to the sent text"
        );
    }

    // Binary messages are compressed too.
    if client_resets {
        compressor.reset();
    }
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 16) as u8).collect();
    let compressed = compress_message(&mut compressor, &data);
    ws.send(&Frame::new(opcode::BINARY, compressed).with_rsv1(true))
        .await;
    let (op, rsv1, payload) = read_message(&mut ws).await;
    assert_eq!(op, opcode::BINARY, "compressed binary not echoed as binary");
    assert!(
        rsv1,
        "echo of a compressible binary message is not compressed"
    );
    assert_eq!(decompress_message(&mut inflater, &payload), data);
}

#[tokio::test]
async fn permessage_deflate_fragmented_and_uncompressed_messages() {
    let server = echo_server();
    let (mut ws, head) = RawWebSocket::connect(
        server.addr(),
        "/echo",
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await;
    let ext = head
        .header("sec-websocket-extensions")
        .unwrap_or_else(|| panic!("101 does not accept permessage-deflate: {head:?}"))
        .to_ascii_lowercase();
    assert!(
        ext.starts_with("permessage-deflate"),
        "unexpected extension answer {ext:?}"
    );
    // Honour a client window limit if the server chose one (RFC 7692 section 7.1.2.2).
    let client_bits: Option<u8> = ext.split(';').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        (name.trim() == "client_max_window_bits").then(|| {
            value
                .trim()
                .trim_matches('"')
                .parse()
                .unwrap_or_else(|_| panic!("bad client_max_window_bits in {ext:?}"))
        })
    });
    let mut compressor = match client_bits {
        None | Some(15) => Compress::new(Compression::default(), false),
        // zlib cannot make an 8-bit raw window; stored blocks reference nothing.
        Some(8) => Compress::new(Compression::none(), false),
        Some(bits @ 9..=14) => Compress::new_with_window_bits(Compression::default(), false, bits),
        Some(bits) => panic!("client_max_window_bits={bits} is out of range 8..=15"),
    };
    let mut inflater = Decompress::new(false);
    let mut decode = |(op, rsv1, payload): (u8, bool, Vec<u8>)| -> (u8, Vec<u8>) {
        if rsv1 {
            (op, decompress_message(&mut inflater, &payload))
        } else {
            (op, payload)
        }
    };

    // A compressed message split over two frames: RSV1 only on the first.
    let text = "fragmented and compressed; ".repeat(40);
    let compressed = compress_message(&mut compressor, text.as_bytes());
    let (a, b) = compressed.split_at(compressed.len() / 2);
    ws.send(&Frame::new(opcode::TEXT, a).with_fin(false).with_rsv1(true))
        .await;
    ws.send(&Frame::new(opcode::CONTINUATION, b)).await;
    let (op, plain) = decode(read_message(&mut ws).await);
    assert_eq!(op, opcode::TEXT);
    assert!(
        plain == text.as_bytes(),
        "fragmented compressed message echoed wrong"
    );

    // An uncompressed message (RSV1 clear) is still legal on a deflate connection.
    ws.send(&Frame::text("plain, not compressed")).await;
    let (op, plain) = decode(read_message(&mut ws).await);
    assert_eq!(op, opcode::TEXT);
    assert_eq!(plain, b"plain, not compressed");
}
