//! Frame headers (RFC 6455 §5.2) and frame encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::mask::apply_mask;

/// Longest possible frame header: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// Largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode; the reserved values are rejected when parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: a later fragment of a message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode field.
    pub fn from_bits(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit opcode field.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The fixed part of a frame, before its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of a message.
    pub fin: bool,
    /// RSV1: "compressed" under permessage-deflate.
    pub rsv1: bool,
    /// RSV2, defined by no extension we support.
    pub rsv2: bool,
    /// RSV3, defined by no extension we support.
    pub rsv3: bool,
    /// What the frame is.
    pub opcode: OpCode,
    /// The masking key; clients must send one, servers must not.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// An unmasked, final frame header as a server sends it.
    pub fn server(opcode: OpCode, payload_len: usize) -> Self {
        Self {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len: payload_len as u64,
        }
    }

    /// Parses a header at the start of `buf`.
    ///
    /// Returns `Ok(None)` until the whole header is there, then the header and its length.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::from_bits(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(ext);
                let n = u64::from_be_bytes(bytes);
                if n >> 63 != 0 {
                    return Err(ProtocolError::InvalidPayloadLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(len..len + 4) else {
                return Ok(None);
            };
            len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = Self {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// Bytes [`FrameHeader::write`] produces.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header to `out`, choosing the shortest length encoding (§5.2 requires it).
    pub fn write(&self, out: &mut impl BufMut) {
        let b0 = u8::from(self.fin) << 7
            | u8::from(self.rsv1) << 6
            | u8::from(self.rsv2) << 5
            | u8::from(self.rsv3) << 4
            | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(b0);
        match self.payload_len {
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.put_u8(mask_bit | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.put_u64(n);
            }
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }
}

/// Encodes a whole frame (header then payload, masked if the header has a key) into `out`.
pub fn encode_into(out: &mut BytesMut, header: &FrameHeader, payload: &[u8]) {
    out.reserve(header.encoded_len() + payload.len());
    header.write(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Encodes one unmasked, final server frame into a single `Bytes`.
///
/// The result can be cloned cheaply and written to any number of connections: this is how a
/// message is encoded once for a whole fan-out.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(
        &mut out,
        &FrameHeader::server(opcode, payload.len()),
        payload,
    );
    out.freeze()
}

/// Encodes one unmasked, final server frame whose payload is compressed (RSV1 set: RFC 7692
/// §6), for as many connections as negotiated the parameters it was compressed with.
pub fn encode_compressed(opcode: OpCode, compressed: &[u8]) -> Bytes {
    let header = FrameHeader {
        rsv1: true,
        ..FrameHeader::server(opcode, compressed.len())
    };
    let mut out = BytesMut::new();
    encode_into(&mut out, &header, compressed);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(buf).unwrap().unwrap()
    }

    #[test]
    fn parses_rfc_single_frame_masked_text() {
        let buf = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, len) = parse_all(&buf);
        assert_eq!(len, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn parses_16_and_64_bit_lengths() {
        let (h, len) = parse_all(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.payload_len, len), (256, 4));
        let (h, len) = parse_all(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, len), (65536, 10));
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let buf = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            FrameHeader::parse(&buf),
            Err(ProtocolError::InvalidPayloadLength)
        );
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0x80]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn partial_headers_need_more() {
        let buf = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for end in 0..buf.len() {
            assert_eq!(FrameHeader::parse(&buf[..end]), Ok(None), "prefix {end}");
        }
        assert!(FrameHeader::parse(&buf).unwrap().is_some());
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = parse_all(&[0xf1, 0x80, 0, 0, 0, 0]);
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
    }

    #[test]
    fn encode_uses_shortest_length_and_round_trips() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let bytes = encode(OpCode::Binary, &payload);
            let (h, hlen) = parse_all(&bytes);
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(hlen, h.encoded_len());
            assert_eq!(
                hlen,
                match len {
                    0..=125 => 2,
                    126..=65535 => 4,
                    _ => 10,
                }
            );
            assert_eq!(&bytes[hlen..], &payload[..]);
        }
    }
}
