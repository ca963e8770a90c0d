//! Room patterns such as `room-{n % 50}`: literal text with `{…}` slots computed from the bot's
//! index `n` in its group.

use std::fmt;

use anyhow::{bail, Context};

/// A parsed room pattern; [`RoomPattern::expand`] turns a bot index into a room name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPattern {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Index(Op),
}

/// What a `{…}` slot computes from `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `{n}`
    Same,
    /// `{n % K}`
    Rem(u64),
    /// `{n / K}`
    Div(u64),
}

impl RoomPattern {
    /// Parses a pattern; every literal character must be valid in a room name (letters, digits,
    /// `_`, `-`), so every expansion is a valid room.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .with_context(|| format!("room pattern {text:?}: unclosed `{{`"))?;
                    let op = Op::parse(&rest[1..end])
                        .with_context(|| format!("room pattern {text:?}"))?;
                    parts.push(Part::Index(op));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if let Some(bad) = literal
                        .chars()
                        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                    {
                        bail!("room pattern {text:?}: {bad:?} is not allowed in a room name");
                    }
                    parts.push(Part::Literal(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        if parts.is_empty() {
            bail!("room pattern is empty");
        }
        Ok(Self { parts })
    }

    /// The room of bot `n`.
    pub fn expand(&self, n: u64) -> String {
        use fmt::Write;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                // Writing into a String cannot fail.
                Part::Index(op) => write!(out, "{}", op.apply(n)).expect("write to String"),
            }
        }
        out
    }
}

impl Op {
    fn parse(expr: &str) -> anyhow::Result<Self> {
        let expr = expr.trim();
        let Some(after_n) = expr.strip_prefix('n') else {
            bail!("`{{{expr}}}`: a slot starts with `n` (`{{n}}`, `{{n % K}}`, `{{n / K}}`)");
        };
        let after_n = after_n.trim_start();
        if after_n.is_empty() {
            return Ok(Self::Same);
        }
        let mut chars = after_n.chars();
        let op = chars.next().unwrap_or(' ');
        let operand = chars.as_str();
        let k: u64 = operand
            .trim()
            .parse()
            .with_context(|| format!("`{{{expr}}}`: {:?} is not a number", operand.trim()))?;
        if k == 0 {
            bail!("`{{{expr}}}`: K must be at least 1");
        }
        match op {
            '%' => Ok(Self::Rem(k)),
            '/' => Ok(Self::Div(k)),
            _ => bail!("`{{{expr}}}`: only `%` and `/` are supported"),
        }
    }

    fn apply(self, n: u64) -> u64 {
        match self {
            Self::Same => n,
            Self::Rem(k) => n % k,
            Self::Div(k) => n / k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_index() {
        let p = RoomPattern::parse("room-{n}").unwrap();
        assert_eq!(p.expand(0), "room-0");
        assert_eq!(p.expand(42), "room-42");
    }

    #[test]
    fn modulo_and_division() {
        let p = RoomPattern::parse("r{n % 50}").unwrap();
        assert_eq!(p.expand(7), "r7");
        assert_eq!(p.expand(57), "r7");
        let p = RoomPattern::parse("g-{n/4}-x").unwrap();
        assert_eq!(p.expand(0), "g-0-x");
        assert_eq!(p.expand(3), "g-0-x");
        assert_eq!(p.expand(4), "g-1-x");
        let p = RoomPattern::parse("{ n % 3 }{n/3}").unwrap();
        assert_eq!(p.expand(10), "13");
    }

    #[test]
    fn literal_only() {
        assert_eq!(RoomPattern::parse("lobby").unwrap().expand(9), "lobby");
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "",
            "room-{n",
            "room-{m}",
            "room-{n * 2}",
            "room-{n % 0}",
            "room-{n % x}",
            "room.{n}",
            "a b",
        ] {
            assert!(
                RoomPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
