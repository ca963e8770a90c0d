//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use crate::error::ProtocolError;

/// A close status code that may appear on the wire.
///
/// Built only through the associated constants or [`CloseCode::from_wire`], so a value of this
/// type is always one an endpoint may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going down or the client navigates away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: data inconsistent with the message type (e.g. bad UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message is too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Accepts a code received in a close frame if an endpoint may send it: 1000-1003,
    /// 1007-1011, or the application/library range 3000-4999.
    pub const fn from_wire(code: u16) -> Option<Self> {
        match code {
            1000..=1003 | 1007..=1011 | 3000..=4999 => Some(Self(code)),
            _ => None,
        }
    }

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

// Defined here rather than in `error`, so that `error` needs nothing from this module.
impl ProtocolError {
    /// The close code that tells the peer which rule it broke.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The code and reason carried by a close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// Why the connection closes.
    pub code: CloseCode,
    /// Human-readable detail, at most 123 bytes of UTF-8.
    pub reason: String,
}

/// Most bytes of reason that fit a control frame after the 2-byte code.
pub const MAX_CLOSE_REASON: usize = 123;

impl CloseFrame {
    /// Parses a received close payload: empty means "no status" (`None`).
    pub fn parse(payload: &[u8]) -> Result<Option<Self>, ProtocolError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ProtocolError::InvalidClosePayload),
            [hi, lo, reason @ ..] => {
                let raw = u16::from_be_bytes([*hi, *lo]);
                let code = CloseCode::from_wire(raw).ok_or(ProtocolError::InvalidCloseCode(raw))?;
                let reason = simdutf8::basic::from_utf8(reason)
                    .map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(Some(Self {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// The wire payload: code then reason, the reason cut at a character boundary to fit.
    pub fn payload(&self) -> Vec<u8> {
        let mut end = self.reason.len().min(MAX_CLOSE_REASON);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = Vec::with_capacity(2 + end);
        out.extend_from_slice(&self.code.0.to_be_bytes());
        out.extend_from_slice(&self.reason.as_bytes()[..end]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_are_exactly_the_sendable_ranges() {
        for code in 0..=u16::MAX {
            let ok = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            assert_eq!(CloseCode::from_wire(code).is_some(), ok, "code {code}");
        }
    }

    #[test]
    fn empty_payload_has_no_status() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[3]),
            Err(ProtocolError::InvalidClosePayload)
        );
    }

    #[test]
    fn reserved_code_is_rejected() {
        let err = CloseFrame::parse(&1005u16.to_be_bytes()).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCloseCode(1005));
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn invalid_utf8_reason_is_a_protocol_error() {
        let err = CloseFrame::parse(&[0x03, 0xe8, 0xff]).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCloseReason);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn code_and_reason_round_trip() {
        let frame = CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "bye".into(),
        };
        assert_eq!(CloseFrame::parse(&frame.payload()), Ok(Some(frame)));
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let frame = CloseFrame {
            code: CloseCode::NORMAL,
            reason: "é".repeat(100),
        };
        let payload = frame.payload();
        assert!(payload.len() <= 125);
        assert!(CloseFrame::parse(&payload).is_ok());
    }
}
