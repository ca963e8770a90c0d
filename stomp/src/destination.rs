//! Destinations, parsed at the edge so the broker only ever sees valid ones.

use std::fmt;

/// Longest destination name after its prefix.
pub const MAX_NAME_LEN: usize = 128;

/// Where a SEND goes or what a SUBSCRIBE listens to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// `/topic/<name>`: every subscriber gets a copy.
    Topic(String),
    /// `/queue/<name>`: each message goes to one subscriber.
    Queue(String),
    /// `/user/<user>/queue/<name>`: a SEND to every session of `user` subscribed to
    /// `/user/queue/<name>`.
    UserQueue {
        /// The addressee.
        user: String,
        /// The queue name.
        queue: String,
    },
    /// `/user/queue/<name>`: a SUBSCRIBE to what is sent to the subscriber's own user queue.
    OwnUserQueue(String),
}

/// A destination string that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination {0:?}: expected /topic/NAME, /queue/NAME, /user/queue/NAME or /user/USER/queue/NAME (NAME: 1-128 of letters, digits, _ - .)")]
pub struct InvalidDestination(pub String);

impl Destination {
    /// Parses a `destination` header.
    pub fn parse(s: &str) -> Result<Self, InvalidDestination> {
        let invalid = || InvalidDestination(s.chars().take(200).collect());
        let parts: Vec<&str> = s
            .strip_prefix('/')
            .ok_or_else(invalid)?
            .split('/')
            .collect();
        let dest = match parts.as_slice() {
            ["topic", name] => Self::Topic(valid_name(name).ok_or_else(invalid)?),
            ["queue", name] => Self::Queue(valid_name(name).ok_or_else(invalid)?),
            ["user", "queue", name] => Self::OwnUserQueue(valid_name(name).ok_or_else(invalid)?),
            ["user", user, "queue", name] => Self::UserQueue {
                user: valid_user(user).ok_or_else(invalid)?,
                queue: valid_name(name).ok_or_else(invalid)?,
            },
            _ => return Err(invalid()),
        };
        Ok(dest)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topic(n) => write!(f, "/topic/{n}"),
            Self::Queue(n) => write!(f, "/queue/{n}"),
            Self::UserQueue { user, queue } => write!(f, "/user/{user}/queue/{queue}"),
            Self::OwnUserQueue(n) => write!(f, "/user/queue/{n}"),
        }
    }
}

fn valid_name(name: &str) -> Option<String> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    ok.then(|| name.to_owned())
}

/// A room's name: 1-128 of letters, digits, `_ -`. No dots: a dot separates a room from its
/// side channels (`/topic/<room>.typing`, `/topic/<room>.presence`), so a room is exactly a
/// topic whose name has none. The one room-name rule of every protocol and the REST API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

/// A string that is not a room name; its message states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", RoomName::RULE)]
pub struct InvalidRoomName;

impl RoomName {
    /// The rule in words, for error messages.
    pub const RULE: &'static str = "room names are 1-128 of letters, digits, _ -";
    /// The rule as a regular expression, for clients that check before asking.
    pub const PATTERN: &'static str = "^[A-Za-z0-9_-]{1,128}$";
    /// The longest name.
    pub const MAX_LEN: usize = MAX_NAME_LEN;

    /// Parses a room name.
    pub fn parse(name: &str) -> Result<Self, InvalidRoomName> {
        let ok = (1..=Self::MAX_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidRoomName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// User names: 1-32 of letters, digits, `_ - .` (the rule accounts will use).
pub fn valid_user(name: &str) -> Option<String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            Destination::parse("/topic/general"),
            Ok(Destination::Topic("general".into()))
        );
        assert_eq!(
            Destination::parse("/queue/jobs.high"),
            Ok(Destination::Queue("jobs.high".into()))
        );
        assert_eq!(
            Destination::parse("/user/queue/messages"),
            Ok(Destination::OwnUserQueue("messages".into()))
        );
        assert_eq!(
            Destination::parse("/user/bob/queue/messages"),
            Ok(Destination::UserQueue {
                user: "bob".into(),
                queue: "messages".into()
            })
        );
    }

    #[test]
    fn room_names_are_topics_without_dots() {
        assert!(RoomName::parse("general").is_ok());
        assert!(RoomName::parse("a_b-C9").is_ok());
        assert!(RoomName::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "a.b", "a b", "ü", &"x".repeat(129)] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?}");
        }
        // Every room is a valid topic, and a valid topic is a room exactly when it has no dot.
        assert!(Destination::parse("/topic/general").is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in ["/topic/a", "/queue/b", "/user/queue/c", "/user/d/queue/e"] {
            assert_eq!(Destination::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_others() {
        for s in [
            "",
            "topic/a",
            "/topic/",
            "/topic/a/b",
            "/exchange/x",
            "/topic/a b",
            "/user/queue/",
            "/queue/ü",
            &format!("/topic/{}", "x".repeat(129)),
        ] {
            assert!(Destination::parse(s).is_err(), "{s}");
        }
    }
}
