//! Commands, versions and the decoded frame.

use bytes::Bytes;

/// A STOMP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 1.0: no header escaping.
    V1_0,
    /// 1.1: escapes `\n`, `\c`, `\\`.
    V1_1,
    /// 1.2: also escapes `\r`.
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` / `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// Parses `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }

    /// The highest version both sides speak, from a CONNECT's `accept-version` header.
    ///
    /// No header means 1.0 (spec 1.2 "Protocol Negotiation"); a list with nothing we speak is
    /// `None`, answered with an ERROR.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Self> {
        match accept_version {
            None => Some(Self::V1_0),
            Some(list) => list.split(',').filter_map(Self::parse).max(),
        }
    }

    /// Index for per-version caches.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A frame's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.1+ alias of CONNECT).
    Stomp,
    /// Client: publish to a destination.
    Send,
    /// Client: subscribe to a destination.
    Subscribe,
    /// Client: end a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: reject a message (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll back a transaction.
    Abort,
    /// Client: end the session.
    Disconnect,
    /// Server: session opened.
    Connected,
    /// Server: a message for a subscription.
    Message,
    /// Server: a frame with a `receipt` header took effect.
    Receipt,
    /// Server: something went wrong; the connection closes.
    Error,
}

impl Command {
    /// Parses a command line (case-sensitive, as the spec says).
    pub fn parse(line: &[u8]) -> Option<Self> {
        Some(match line {
            b"CONNECT" => Self::Connect,
            b"STOMP" => Self::Stomp,
            b"SEND" => Self::Send,
            b"SUBSCRIBE" => Self::Subscribe,
            b"UNSUBSCRIBE" => Self::Unsubscribe,
            b"ACK" => Self::Ack,
            b"NACK" => Self::Nack,
            b"BEGIN" => Self::Begin,
            b"COMMIT" => Self::Commit,
            b"ABORT" => Self::Abort,
            b"DISCONNECT" => Self::Disconnect,
            b"CONNECTED" => Self::Connected,
            b"MESSAGE" => Self::Message,
            b"RECEIPT" => Self::Receipt,
            b"ERROR" => Self::Error,
            _ => return None,
        })
    }

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Connected => "CONNECTED",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    /// CONNECT, STOMP and CONNECTED headers are never escaped (spec 1.2 "Value Encoding").
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Self::Connect | Self::Stomp | Self::Connected)
    }
}

/// A decoded frame: command, headers in wire order (repeats kept; the first one wins), body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Unescaped headers in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, NUL terminator excluded.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first header called `name`: when a header repeats, the first one wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.1, 1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("2.0")), None);
    }

    #[test]
    fn first_header_wins() {
        let f = Frame::new(Command::Send).header("a", "1").header("a", "2");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
    }

    #[test]
    fn commands_round_trip() {
        for c in [
            Command::Connect,
            Command::Stomp,
            Command::Send,
            Command::Error,
            Command::Nack,
        ] {
            assert_eq!(Command::parse(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(Command::parse(b"send"), None);
    }
}
