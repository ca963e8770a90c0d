//! What a credential allows: everything, reading only, or one room. The one rule every
//! protocol's write and room checks ask, so a read-only or one-room token means the same
//! thing on STOMP, the raw protocol and REST.

use std::fmt;
use std::sync::Arc;

/// The grant a session acts under. Passwords, cookies and access tokens grant
/// [`Scope::All`]; a personal access token may grant less.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything the user may do.
    #[default]
    All,
    /// Reading only: join, subscribe, history, catch-up, read marks; no posting, direct
    /// messages, edits, reactions, typing, room creation or member changes.
    Read,
    /// Everything, but only in this one room: no other room, no direct messages, no room
    /// creation.
    Room(Arc<str>),
}

impl Scope {
    /// Parses the stored and requested form: `all`, `read` or `room:<room>` (the room name is
    /// not checked here; the caller applies the room-name rule).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "read" => Some(Self::Read),
            _ => s
                .strip_prefix("room:")
                .filter(|room| !room.is_empty())
                .map(|room| Self::Room(room.into())),
        }
    }

    /// May a session with this scope read `room` (`None`: something that is no room, such as
    /// direct messages or the room list)? `Err` says why not.
    pub fn reads(&self, room: Option<&str>) -> Result<(), String> {
        match self {
            Self::Room(only) if room != Some(&**only) => Err(limited(only)),
            _ => Ok(()),
        }
    }

    /// May it write to `room` (`None`: anything else — a direct message, a new room)?
    pub fn writes(&self, room: Option<&str>) -> Result<(), String> {
        match self {
            Self::Read => Err("this token is read-only".into()),
            _ => self.reads(room),
        }
    }

    /// May it create rooms? Only a full grant may.
    pub fn creates_rooms(&self) -> Result<(), String> {
        self.writes(None)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Read => f.write_str("read"),
            Self::Room(room) => write!(f, "room:{room}"),
        }
    }
}

fn limited(room: &str) -> String {
    format!("this token is limited to room {room:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_decide() {
        for s in ["all", "read", "room:lobby"] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Scope::parse("room:"), None);
        assert_eq!(Scope::parse("write"), None);
        let lobby = Scope::Room("lobby".into());
        assert!(lobby.reads(Some("lobby")).is_ok());
        assert!(lobby.writes(Some("lobby")).is_ok());
        assert!(lobby
            .reads(Some("other"))
            .unwrap_err()
            .contains("limited to room"));
        assert!(lobby.writes(None).is_err(), "no direct messages");
        assert!(lobby.creates_rooms().is_err());
        assert!(Scope::Read.reads(Some("any")).is_ok());
        assert!(Scope::Read.reads(None).is_ok());
        assert_eq!(
            Scope::Read.writes(Some("any")).unwrap_err(),
            "this token is read-only"
        );
        assert!(Scope::All.writes(None).is_ok());
        assert!(Scope::All.creates_rooms().is_ok());
    }
}
