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
