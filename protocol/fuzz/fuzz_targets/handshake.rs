//! Feeds arbitrary bytes to `handshake::parse_request`, then `handshake::accept`.
//!
//! The config has everything that parses client input switched on: subprotocols, an origin
//! allow-list and permessage-deflate with a reduced client window. Beyond "never panic", it checks
//! that:
//!
//! - a complete head parses the same from just its own `len` bytes;
//! - a refusal builds its HTTP answer with the status it claims;
//! - an acceptance carries a well-formed `Sec-WebSocket-Accept`, a subprotocol the server
//!   offered, and an extensions answer exactly when deflate was agreed;
//! - the agreed deflate parameters work: a `Connection` built from them compresses a message the
//!   client can inflate and inflates a message the client compressed.
#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use parley_protocol::deflate::{DeflateConfig, DeflateParams, Deflater, Inflater};
use parley_protocol::frame::{encode_into, FrameHeader, OpCode};
use parley_protocol::handshake::{accept, parse_request, Accepted};
use parley_protocol::{Connection, Event, HandshakeConfig, Limits, Message, OriginPolicy};

static CONFIG: LazyLock<HandshakeConfig> = LazyLock::new(|| {
    // `DeflateConfig` is non-exhaustive, so it is built by mutating the default.
    let mut deflate = DeflateConfig::default();
    deflate.client_max_window_bits = 12;
    HandshakeConfig::default()
        .with_origin(OriginPolicy::AllowList(vec!["https://chat.example".into()]))
        .with_subprotocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .with_deflate(Some(deflate))
});

const SAMPLE: &str = "SEND\ndestination:/topic/room\n\nhello hello hello\0";

fuzz_target!(|data: &[u8]| {
    let Ok(Some((request, len))) = parse_request(data) else {
        return;
    };
    assert!(len <= data.len());
    match parse_request(&data[..len]) {
        Ok(Some((again, again_len))) => {
            assert_eq!(again_len, len);
            assert_eq!(again.method(), request.method());
            assert_eq!(again.uri(), request.uri());
            assert_eq!(again.version(), request.version());
            assert_eq!(again.headers(), request.headers());
        }
        other => panic!("head of {len} bytes did not parse on its own: {other:?}"),
    }
    match accept(&request, &CONFIG) {
        Ok(accepted) => check_accepted(&accepted),
        Err(refusal) => {
            let response = refusal.response();
            assert_eq!(response.status(), refusal.status());
            assert!(response.status().is_client_error());
        }
    }
});

fn check_accepted(accepted: &Accepted) {
    // Base64 of a 20-byte SHA-1.
    assert_eq!(accepted.accept.len(), 28);
    if let Some(protocol) = &accepted.subprotocol {
        assert!(CONFIG.subprotocols.contains(protocol));
    }
    assert_eq!(accepted.deflate.is_some(), accepted.extensions.is_some());
    let response = accepted.response();
    assert_eq!(response.status().as_u16(), 101);
    assert!(response.headers().contains_key("sec-websocket-accept"));
    assert_eq!(
        response.headers().contains_key("sec-websocket-extensions"),
        accepted.extensions.is_some()
    );
    if let Some(params) = accepted.deflate {
        check_deflate_round_trip(params);
    }
}

/// Plays the client's side of the agreed parameters against a server `Connection`, twice, so
/// context takeover (or its absence) is exercised in both directions.
fn check_deflate_round_trip(params: DeflateParams) {
    let mut server = Connection::new(Limits::default(), Some(params));
    // The client inflates with the server's window and compresses with its own; zlib cannot
    // compress with an 8-bit window, and 9 is what the server's inflater uses for 8 anyway.
    let mut client_inflater = Inflater::new(&DeflateParams {
        client_max_window_bits: params.server_max_window_bits,
        client_no_context_takeover: params.server_no_context_takeover,
        ..params
    });
    let mut client_deflater = Deflater::new(&DeflateParams {
        server_max_window_bits: params.client_max_window_bits.max(9),
        server_no_context_takeover: params.client_no_context_takeover,
        ..params
    });
    for _ in 0..2 {
        server
            .send_text(SAMPLE)
            .expect("a fresh connection is open");
        let mut written = Vec::new();
        while let Some(bytes) = server.poll_transmit() {
            written.extend_from_slice(&bytes);
        }
        let (header, header_len) = FrameHeader::parse(&written)
            .expect("server frame header is valid")
            .expect("server frame header is complete");
        assert!(
            header.rsv1,
            "deflate agreed but the message was not compressed"
        );
        let mut inflated = Vec::new();
        client_inflater
            .inflate(&written[header_len..], &mut inflated, 1 << 20)
            .and_then(|()| client_inflater.finish_message(&mut inflated, 1 << 20))
            .expect("the client can inflate what the server compressed");
        assert_eq!(inflated, SAMPLE.as_bytes());

        let compressed = client_deflater.compress(SAMPLE.as_bytes());
        let header = FrameHeader {
            rsv1: true,
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::server(OpCode::Text, compressed.len())
        };
        let mut wire = BytesMut::new();
        encode_into(&mut wire, &header, &compressed);
        match server.read(&mut wire) {
            Ok(Some(Event::Message(Message::Text(text)))) => assert_eq!(text, SAMPLE.as_bytes()),
            other => panic!("the server did not inflate the client's message: {other:?}"),
        }
    }
}
