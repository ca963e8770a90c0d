//! Errors a peer can provoke by breaking the framing rules, each mapped to its close code.

/// A rule of RFC 6455 / RFC 7692 the peer broke, or a configured limit it exceeded.
///
/// The connection is failed: [`ProtocolError::close_code`] is the code to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set without an extension that defines them (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBitsSet,
    /// Opcodes 3-7 and 0xB-0xF are reserved (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Every frame from a client must be masked (§5.1).
    #[error("frame from the client is not masked")]
    UnmaskedFrameFromClient,
    /// A 64-bit length must have its most significant bit clear (§5.2).
    #[error("64-bit payload length has its most significant bit set")]
    InvalidPayloadLength,
    /// Control frames carry at most 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooBig(u64),
    /// Control frames must not be fragmented (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame arrived with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text/binary frame arrived inside a fragmented message (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A text message is not valid UTF-8 (§8.1).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close payload must be empty or hold at least a 2-byte code (§5.5.1).
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// The close code is not one an endpoint may send (§7.4).
    #[error("close code {0} may not be sent on the wire")]
    InvalidCloseCode(u16),
    /// The close reason is not valid UTF-8 (§5.5.1).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A frame's payload exceeds the configured limit.
    #[error("frame payload of {size} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// Announced payload length.
        size: u64,
        /// Configured maximum.
        max: usize,
    },
    /// A message (after reassembly and inflation) exceeds the configured limit.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooBig {
        /// Size reached when the limit was crossed.
        size: u64,
        /// Configured maximum.
        max: usize,
    },
    /// A compressed message could not be inflated (RFC 7692 §6.2).
    #[error("compressed message is not valid DEFLATE data")]
    InvalidCompressedData,
}
