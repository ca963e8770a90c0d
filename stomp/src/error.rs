//! Ways a peer's bytes can break the STOMP frame grammar or our limits.

/// A malformed or oversized frame. The session answers with an ERROR frame and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StompError {
    /// The command line is not a STOMP command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A header line has no `:`.
    #[error("header line without ':'")]
    MissingColon,
    /// A backslash escape the frame's version does not define.
    #[error("undefined escape sequence in header")]
    InvalidEscape,
    /// Headers must be UTF-8.
    #[error("header is not valid UTF-8")]
    InvalidUtf8,
    /// A header contains NUL.
    #[error("header contains NUL")]
    NulInHeader,
    /// `content-length` is not a non-negative integer.
    #[error("invalid content-length header")]
    InvalidContentLength,
    /// The `content-length` bytes of body are not followed by NUL.
    #[error("body is not terminated by NUL after content-length bytes")]
    MissingNul,
    /// A command or header line is longer than allowed.
    #[error("header line longer than {max} bytes")]
    HeaderLineTooLong {
        /// Configured maximum.
        max: usize,
    },
    /// More headers than allowed.
    #[error("more than {max} headers")]
    TooManyHeaders {
        /// Configured maximum.
        max: usize,
    },
    /// The body is larger than allowed.
    #[error("body of at least {size} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// Size seen or announced.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The whole frame is larger than allowed.
    #[error("frame exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Configured maximum.
        max: usize,
    },
}
