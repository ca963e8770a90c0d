//! Per-stream sequence checks: every sender's numbers in a room must go up by exactly one.

use std::collections::HashMap;

/// Which stream of a sender a message belongs to, as seen by one receiving bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The room the bot joined (each bot joins one room).
    Room,
    /// Direct messages to the bot.
    Direct,
}

/// The verdict on one received sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first message seen from this sender here: the baseline (earlier ones were sent before
    /// this bot joined).
    First,
    /// Exactly one more than the last.
    Next,
    /// Skipped `missing` numbers.
    Gap {
        /// How many numbers were skipped.
        missing: u64,
    },
    /// The same number as the last one again.
    Duplicate,
    /// Lower than the last one.
    OutOfOrder,
}

/// Remembers the last sequence number per (stream, sender) for one connection.
///
/// A reconnecting bot starts a new checker: what it missed while away is not a gap.
#[derive(Debug, Default)]
pub struct SeqChecker {
    last: HashMap<(Stream, u32), u64>,
}

impl SeqChecker {
    /// Checks `seq` from `sender` on `stream` and remembers it unless it went backwards.
    pub fn check(&mut self, stream: Stream, sender: u32, seq: u64) -> Verdict {
        match self.last.get_mut(&(stream, sender)) {
            None => {
                self.last.insert((stream, sender), seq);
                Verdict::First
            }
            Some(last) => {
                let verdict = if seq == *last + 1 {
                    Verdict::Next
                } else if seq > *last {
                    Verdict::Gap {
                        missing: seq - *last - 1,
                    }
                } else if seq == *last {
                    Verdict::Duplicate
                } else {
                    Verdict::OutOfOrder
                };
                // Keep the highest seen, so one late message is one error, not a cascade.
                *last = (*last).max(seq);
                verdict
            }
        }
    }

    /// Forgets everything (a new connection).
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut c = SeqChecker::default();
        assert_eq!(c.check(Stream::Room, 1, 5), Verdict::First);
        assert_eq!(c.check(Stream::Room, 1, 6), Verdict::Next);
        assert_eq!(c.check(Stream::Room, 1, 7), Verdict::Next);
    }

    #[test]
    fn gaps_duplicates_and_reordering() {
        let mut c = SeqChecker::default();
        c.check(Stream::Room, 1, 1);
        assert_eq!(c.check(Stream::Room, 1, 4), Verdict::Gap { missing: 2 });
        assert_eq!(c.check(Stream::Room, 1, 4), Verdict::Duplicate);
        assert_eq!(c.check(Stream::Room, 1, 2), Verdict::OutOfOrder);
        // The late message did not move the baseline back.
        assert_eq!(c.check(Stream::Room, 1, 5), Verdict::Next);
    }

    #[test]
    fn senders_and_streams_are_independent() {
        let mut c = SeqChecker::default();
        c.check(Stream::Room, 1, 10);
        assert_eq!(c.check(Stream::Room, 2, 3), Verdict::First);
        assert_eq!(c.check(Stream::Direct, 1, 1), Verdict::First);
        assert_eq!(c.check(Stream::Room, 1, 11), Verdict::Next);
        assert_eq!(c.check(Stream::Direct, 1, 2), Verdict::Next);
        c.reset();
        assert_eq!(c.check(Stream::Room, 1, 20), Verdict::First);
    }
}
