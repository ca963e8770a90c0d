//! A WebSocket client for the permessage-deflate tests: raw frames (so RSV1 and the bytes on the
//! wire are seen as they are), inflated here with flate2 rather than by the server's own code.
#![allow(dead_code)] // each test file uses a different subset

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use parley_tests::raw::{opcode, Frame, RawWebSocket, ResponseHead};
use parley_tests::stomp::{parse_frame, Frame as StompFrame};
use parley_tests::ServerProcess;
use serde_json::Value;

/// The empty stored block every compressed message ends with, stripped on the wire (RFC 7692
/// §7.2.1) and appended again before inflating (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The offer most clients (browsers, `ws`) send.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// One message as it came: its frame, the bytes it took on the wire and its data inflated.
#[derive(Debug, Clone)]
pub struct Received {
    /// The frame as read (payload as on the wire).
    pub frame: Frame,
    /// Header plus payload: what the message cost on the wire.
    pub wire: usize,
    /// The message's data, inflated when RSV1 says it is compressed.
    pub data: Vec<u8>,
}

impl Received {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).expect("a JSON message")
    }

    /// The data as one STOMP frame.
    pub fn stomp(&self) -> StompFrame {
        parse_frame(&self.data).expect("one whole STOMP frame").0
    }
}

/// A client of `/ws` or `/stomp`, with or without permessage-deflate.
pub struct Client {
    pub ws: RawWebSocket,
    pub head: ResponseHead,
    /// Window the server compresses with, as negotiated (15 if it did not say).
    window: u8,
}

impl Client {
    /// Upgrades to `path` offering `offer` (if any) and any `extra` headers.
    pub async fn open(
        server: &ServerProcess,
        path: &str,
        offer: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Client {
        let mut headers = extra.to_vec();
        if let Some(offer) = offer {
            headers.push(("Sec-WebSocket-Extensions", offer));
        }
        let (ws, head) = RawWebSocket::connect(server.addr(), path, &headers).await;
        let window = extensions(&head)
            .iter()
            .find_map(|p| p.strip_prefix("server_max_window_bits="))
            .map_or(15, |bits| bits.parse().expect("a window size"));
        Client { ws, head, window }
    }

    /// A raw JSON client at `/ws?name=<name>`.
    pub async fn raw(server: &ServerProcess, name: &str, deflate: bool) -> Client {
        let path = format!("/ws?name={name}");
        Client::open(server, &path, deflate.then_some(OFFER), &[]).await
    }

    /// A STOMP 1.2 client at `/stomp`, connected as guest `login`.
    pub async fn stomp(server: &ServerProcess, login: &str, deflate: bool) -> Client {
        let proto = [("Sec-WebSocket-Protocol", "v12.stomp")];
        let mut c = Client::open(server, "/stomp", deflate.then_some(OFFER), &proto).await;
        let connect = format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\n\n\0");
        c.send(connect.as_bytes(), false).await;
        let connected = c.next().await.stomp();
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        c
    }

    /// Whether the server agreed to permessage-deflate.
    pub fn deflate(&self) -> bool {
        !extensions(&self.head).is_empty()
    }

    /// Sends one text message, compressed alone (no context takeover) if `compress`.
    pub async fn send(&mut self, text: &[u8], compress: bool) {
        let frame = if compress {
            let mut c = Compress::new(Compression::default(), false);
            Frame::new(opcode::TEXT, deflate_with(&mut c, text)).with_rsv1(true)
        } else {
            Frame::new(opcode::TEXT, text)
        };
        self.ws.send(&frame).await;
    }

    /// Sends one JSON command, compressed alone if `compress`.
    pub async fn send_json(&mut self, value: &Value, compress: bool) {
        self.send(value.to_string().as_bytes(), compress).await;
    }

    /// Sends a STOMP frame with `headers` and `body`, compressed alone if `compress`.
    pub async fn send_stomp(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        compress: bool,
    ) {
        let out = parley_tests::stomp::encode_frame(command, headers, body);
        self.send(&out, compress).await;
    }

    /// The next data message (pings and pongs skipped); panics on a close or EOF.
    pub async fn next(&mut self) -> Received {
        let got = self.next_any().await;
        assert_ne!(got.frame.opcode, opcode::CLOSE, "closed: {:?}", got.frame);
        got
    }

    /// The next message or close frame (pings and pongs skipped); panics on EOF.
    pub async fn next_any(&mut self) -> Received {
        loop {
            let frame = self.ws.expect_frame().await;
            if matches!(frame.opcode, opcode::PING | opcode::PONG) {
                continue;
            }
            assert!(frame.fin, "the server fragmented a message: {frame:?}");
            let data = if frame.rsv1 {
                inflate(&frame.payload, self.window)
            } else {
                frame.payload.clone()
            };
            let wire = wire_len(frame.payload.len());
            return Received { frame, wire, data };
        }
    }

    /// The next JSON message whose `type` is `kind`, others skipped.
    pub async fn next_of(&mut self, kind: &str) -> Received {
        loop {
            let got = self.next().await;
            if got.json()["type"] == kind {
                return got;
            }
        }
    }

    /// After a `send`: its echo and its ack, which may come in either order (the echo at once,
    /// the ack once the message is stored); other messages skipped.
    pub async fn echo_and_ack(&mut self) -> (Received, Received) {
        let (mut echo, mut ack) = (None, None);
        while echo.is_none() || ack.is_none() {
            let got = self.next().await;
            match got.json()["type"].as_str() {
                Some("message") => echo = Some(got),
                Some("ack") => ack = Some(got),
                _ => {}
            }
        }
        // Both are set: the loop ends only then.
        (echo.unwrap(), ack.unwrap())
    }

    /// The next STOMP frame whose command is `command`, others skipped.
    pub async fn next_frame(&mut self, command: &str) -> Received {
        loop {
            let got = self.next().await;
            if got.stomp().command == command {
                return got;
            }
        }
    }

    /// Joins `room` (raw), waiting for `joined`.
    pub async fn join(&mut self, room: &str) {
        let join = serde_json::json!({"type": "join", "room": room});
        self.send_json(&join, false).await;
        self.next_of("joined").await;
    }

    /// Subscribes `id` to `/topic/<room>` (STOMP), waiting for the receipt.
    pub async fn subscribe(&mut self, id: &str, room: &str) -> Received {
        let destination = format!("/topic/{room}");
        let receipt = format!("r-{id}");
        let headers = [
            ("id", id),
            ("destination", destination.as_str()),
            ("receipt", receipt.as_str()),
        ];
        self.send_stomp("SUBSCRIBE", &headers, b"", false).await;
        let got = self.next_frame("RECEIPT").await;
        assert_eq!(got.stomp().header("receipt-id"), receipt);
        got
    }
}

/// The parameters of the `Sec-WebSocket-Extensions` answer (empty without one), checking it
/// names permessage-deflate and nothing else.
pub fn extensions(head: &ResponseHead) -> Vec<String> {
    let Some(answer) = head.header("sec-websocket-extensions") else {
        return Vec::new();
    };
    let mut parts = answer.split(';').map(|p| p.trim().to_owned());
    assert_eq!(
        parts.next().as_deref(),
        Some("permessage-deflate"),
        "{head:?}"
    );
    parts.collect()
}

/// Header plus payload of an unmasked server frame carrying `payload` bytes.
pub fn wire_len(payload: usize) -> usize {
    let ext = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + payload
}

/// Inflates one message's payload alone, as a client of `server_no_context_takeover` may:
/// a raw deflate stream (no zlib header) with the stripped tail put back.
pub fn inflate(payload: &[u8], window: u8) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, window);
    let input = [payload, &TAIL].concat();
    let mut out = Vec::with_capacity(input.len() * 4 + 256);
    loop {
        let at = d.total_in() as usize;
        d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .unwrap_or_else(|e| panic!("invalid compressed data from the server: {e}"));
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// Compresses one message with `c`, without the tail: a fresh `c` per message is no context
/// takeover, one `c` for several messages is context takeover.
pub fn deflate_with(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let start = c.total_in();
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let at = (c.total_in() - start) as usize;
        c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .expect("compressing into a Vec");
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    assert!(
        out.ends_with(&TAIL),
        "a sync flush ends with the empty block"
    );
    out.truncate(out.len() - TAIL.len());
    out
}

/// Splits a compressed payload into the data of the stored blocks it starts with and the
/// compressed rest. A stored block's first byte is 0 (BFINAL 0, BTYPE 00, padding); compressed
/// blocks start with BTYPE 01 or 10, never with a zero byte.
pub fn split_stored(payload: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut stored = Vec::new();
    let mut at = 0;
    while payload.get(at) == Some(&0) && payload.len() >= at + 5 {
        let len = u16::from_le_bytes([payload[at + 1], payload[at + 2]]);
        let nlen = u16::from_le_bytes([payload[at + 3], payload[at + 4]]);
        assert_eq!(len, !nlen, "a stored block's LEN and NLEN disagree");
        let data = &payload[at + 5..at + 5 + usize::from(len)];
        stored.extend_from_slice(data);
        at += 5 + usize::from(len);
    }
    (stored, &payload[at..])
}
