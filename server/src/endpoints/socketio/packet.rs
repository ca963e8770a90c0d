//! Engine.IO 4 and Socket.IO 5 packets: the long-polling payload (packets joined by `\x1e`,
//! binary ones as `b<base64>`), and Socket.IO's packet text (`<type>[<n>-][<nsp>,][<ack>]<json>`).
//!
//! Inside a session every Engine.IO packet travels in its long-polling form, the WebSocket
//! transport turning `b…` packets into binary messages and back.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// Separates packets in a long-polling payload.
pub const SEPARATOR: u8 = 0x1e;
/// Engine.IO `close`.
pub const CLOSE: &[u8] = b"1";
/// Engine.IO `ping` (server → client).
pub const PING: &[u8] = b"2";
/// Engine.IO `noop`: ends a long-poll during an upgrade.
pub const NOOP: &[u8] = b"6";

/// One Engine.IO packet from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// `1`.
    Close,
    /// `2…` (a client pings only while probing a WebSocket).
    Ping(&'a [u8]),
    /// `3…`.
    Pong,
    /// `4…`: a text message.
    Text(&'a [u8]),
    /// `b…` (base64 decoded): a binary message.
    Binary(Vec<u8>),
    /// `5`.
    Upgrade,
    /// `6`.
    Noop,
}

/// Not an Engine.IO packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses one packet in its long-polling form.
pub fn engine_packet(packet: &[u8]) -> Result<EnginePacket<'_>, Malformed> {
    let (&kind, rest) = packet.split_first().ok_or(Malformed)?;
    Ok(match kind {
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping(rest),
        b'3' => EnginePacket::Pong,
        b'4' => EnginePacket::Text(rest),
        b'5' => EnginePacket::Upgrade,
        b'6' => EnginePacket::Noop,
        b'b' => EnginePacket::Binary(STANDARD.decode(rest).map_err(|_| Malformed)?),
        _ => return Err(Malformed),
    })
}

/// The packets of a long-polling POST body, each in its long-polling form (`Err` for an empty
/// packet or an unknown type).
pub fn split_payload(body: &Bytes) -> Result<Vec<Bytes>, Malformed> {
    let mut packets = Vec::new();
    let mut start = 0;
    for end in memchr_all(body).chain(std::iter::once(body.len())) {
        let packet = body.slice(start..end);
        engine_packet(&packet)?;
        packets.push(packet);
        start = end + 1;
    }
    Ok(packets)
}

fn memchr_all(body: &[u8]) -> impl Iterator<Item = usize> + '_ {
    body.iter()
        .enumerate()
        .filter(|(_, &b)| b == SEPARATOR)
        .map(|(i, _)| i)
}

/// A long-polling answer: `packets` joined by the separator.
pub fn join_payload(packets: &[Bytes]) -> Bytes {
    let len = packets.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        out.extend_from_slice(packet);
    }
    out.freeze()
}

/// A binary message in its long-polling form.
pub fn binary(data: &[u8]) -> Bytes {
    let mut out = String::with_capacity(1 + data.len().div_ceil(3) * 4);
    out.push('b');
    STANDARD.encode_string(data, &mut out);
    Bytes::from(out)
}

/// A text message (`4` + text).
pub fn text(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + body.len());
    out.put_u8(b'4');
    out.extend_from_slice(body);
    out.freeze()
}

/// The `open` packet.
pub fn open(
    sid: &str,
    upgrades: bool,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> Bytes {
    let upgrades: &[&str] = if upgrades { &["websocket"] } else { &[] };
    let open = serde_json::json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    let mut out = b"0".to_vec();
    out.extend_from_slice(open.to_string().as_bytes());
    Bytes::from(out)
}

/// Socket.IO packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `0`.
    Connect,
    /// `1`.
    Disconnect,
    /// `2`.
    Event,
    /// `3`.
    Ack,
    /// `4`.
    ConnectError,
    /// `5`.
    BinaryEvent,
    /// `6`.
    BinaryAck,
}

/// One Socket.IO packet, its binary attachments not yet joined to it.
#[derive(Debug, PartialEq)]
pub struct Packet {
    /// Its type.
    pub kind: Kind,
    /// Binary attachments that follow (binary types only).
    pub attachments: usize,
    /// Its namespace (`/` when the packet names none).
    pub nsp: String,
    /// Its acknowledgement id.
    pub ack: Option<u64>,
    /// Its data, placeholders for attachments included.
    pub data: Option<Value>,
}

/// Most attachments one packet may announce.
const MAX_ATTACHMENTS: usize = 64;

/// Parses a Socket.IO packet's text; `Err` for anything the reference parser refuses.
pub fn parse(text: &[u8]) -> Result<Packet, Malformed> {
    let (&kind, mut rest) = text.split_first().ok_or(Malformed)?;
    let kind = match kind {
        b'0' => Kind::Connect,
        b'1' => Kind::Disconnect,
        b'2' => Kind::Event,
        b'3' => Kind::Ack,
        b'4' => Kind::ConnectError,
        b'5' => Kind::BinaryEvent,
        b'6' => Kind::BinaryAck,
        _ => return Err(Malformed),
    };
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let dash = rest.iter().position(|&b| b == b'-').ok_or(Malformed)?;
        attachments = number(&rest[..dash]).ok_or(Malformed)?;
        if attachments > MAX_ATTACHMENTS as u64 {
            return Err(Malformed);
        }
        rest = &rest[dash + 1..];
    }
    let mut nsp = "/".to_owned();
    if rest.first() == Some(&b'/') {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        nsp = std::str::from_utf8(&rest[..end])
            .map_err(|_| Malformed)?
            .to_owned();
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let ack = if digits > 0 {
        Some(number(&rest[..digits]).ok_or(Malformed)?)
    } else {
        None
    };
    rest = &rest[digits..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_slice::<Value>(rest).map_err(|_| Malformed)?)
    };
    let packet = Packet {
        kind,
        attachments: attachments as usize,
        nsp,
        ack,
        data,
    };
    packet.valid().then_some(packet).ok_or(Malformed)
}

impl Packet {
    /// The reference parser's payload rules.
    fn valid(&self) -> bool {
        match self.kind {
            Kind::Connect => matches!(self.data, None | Some(Value::Object(_))),
            Kind::Disconnect => self.data.is_none(),
            Kind::ConnectError => matches!(self.data, Some(Value::Object(_) | Value::String(_))),
            Kind::Event | Kind::BinaryEvent => match &self.data {
                Some(Value::Array(args)) => matches!(args.first(), Some(Value::String(_))),
                _ => false,
            },
            Kind::Ack | Kind::BinaryAck => matches!(self.data, Some(Value::Array(_))),
        }
    }
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A Socket.IO packet's text, as an Engine.IO message (`4…`): `head` is the type (with its
/// attachment count), then the namespace, the ack id and `data`.
pub fn encode(head: &str, nsp: &str, ack: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(head.len() + nsp.len() + data.len() + 24);
    out.put_u8(b'4');
    out.extend_from_slice(head.as_bytes());
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.put_u8(b',');
    }
    if let Some(ack) = ack {
        out.extend_from_slice(ack.to_string().as_bytes());
    }
    out.extend_from_slice(data);
    out.freeze()
}

/// `EVENT` `[name, …args]` of namespace `nsp`, as an Engine.IO message.
pub fn event(nsp: &str, args: &Value) -> Bytes {
    encode("2", nsp, None, args.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_and_join() {
        let body = Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e3");
        let packets = split_payload(&body).unwrap();
        assert_eq!(packets.len(), 3);
        assert_eq!(
            engine_packet(&packets[1]).unwrap(),
            EnginePacket::Binary(vec![1, 2, 3, 4])
        );
        assert_eq!(join_payload(&packets), body);
        assert_eq!(binary(&[1, 2, 3, 4]), Bytes::from_static(b"bAQIDBA=="));
        assert!(split_payload(&Bytes::from_static(b"abc")).is_err());
        assert!(
            split_payload(&Bytes::from_static(b"4a\x1e\x1e4b")).is_err(),
            "empty packet"
        );
        assert!(
            split_payload(&Bytes::from_static(b"b!!")).is_err(),
            "bad base64"
        );
    }

    #[test]
    fn socketio_packets_parse_as_the_reference_parser_does() {
        let p = parse(br#"2/admin,12["hello",1]"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.ack),
            (Kind::Event, "/admin", Some(12))
        );
        let p = parse(br#"52-789["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.ack),
            (Kind::BinaryEvent, 2, Some(789))
        );
        let p = parse(b"0/custom,").unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.data),
            (Kind::Connect, "/custom", None)
        );
        assert_eq!(parse(b"0/random").unwrap().nsp, "/random");
        assert_eq!(
            parse(br#"0{"token":"1"}"#).unwrap().data.unwrap()["token"],
            "1"
        );
        for bad in [
            &b"abc"[..],
            b"2{}",
            br#"2abc["m"]"#,
            b"2[]",
            b"2[1]",
            b"1{}",
            b"0[1]",
            b"5[\"m\"]",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn packets_encode() {
        assert_eq!(
            encode("3", "/", Some(7), b"[1]"),
            Bytes::from_static(b"437[1]")
        );
        assert_eq!(
            encode("0", "/custom", None, b"{}"),
            Bytes::from_static(b"40/custom,{}")
        );
        let e = event("/", &serde_json::json!(["auth", {}]));
        assert_eq!(e, Bytes::from_static(br#"42["auth",{}]"#));
        assert_eq!(text(b"x"), Bytes::from_static(b"4x"));
    }
}
