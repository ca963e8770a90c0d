//! Sequence checks: every sender's numbers in a stream must go up by exactly one, and so must
//! the ids of a room's stream (messages and the edit, deletion and reaction events between them).

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
            Some(last) => advance(last, seq),
        }
    }

    /// Forgets everything (a new connection).
    pub fn reset(&mut self) {
        self.last.clear();
    }

    /// Forgets one stream: direct messages between bots are live-only (not stored, not replayed
    /// on resume), so what was sent while a bot was away is not a gap.
    pub fn reset_stream(&mut self, stream: Stream) {
        self.last.retain(|(s, _), _| *s != stream);
    }
}

/// The ids of one room's stream as one connection (or a resumed chain of them) sees it: Parley
/// numbers messages and events alike, so ids must go up by exactly one, events included.
#[derive(Debug, Default)]
pub struct RoomIds {
    last: Option<u64>,
}

impl RoomIds {
    /// Checks the id of a room message or event.
    pub fn check(&mut self, id: u64) -> Verdict {
        match &mut self.last {
            None => {
                self.last = Some(id);
                Verdict::First
            }
            Some(last) => advance(last, id),
        }
    }

    /// Forgets the baseline (a new connection that does not resume).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// The verdict on `seq` after `last`, which becomes the highest seen (so one late message is
/// one error, not a cascade).
fn advance(last: &mut u64, seq: u64) -> Verdict {
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
    *last = (*last).max(seq);
    verdict
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
        c.reset_stream(Stream::Direct);
        assert_eq!(c.check(Stream::Direct, 1, 9), Verdict::First);
        assert_eq!(c.check(Stream::Room, 1, 12), Verdict::Next);
        c.reset();
        assert_eq!(c.check(Stream::Room, 1, 20), Verdict::First);
    }

    #[test]
    fn room_ids_count_events_too() {
        // Messages 1 and 2, an edit (3), a reaction (4), message 5: one gapless stream.
        let mut ids = RoomIds::default();
        assert_eq!(ids.check(1), Verdict::First);
        for id in 2..=5 {
            assert_eq!(ids.check(id), Verdict::Next);
        }
        // A lost event shows as a gap in the room's ids.
        assert_eq!(ids.check(7), Verdict::Gap { missing: 1 });
        assert_eq!(ids.check(7), Verdict::Duplicate);
        assert_eq!(ids.check(6), Verdict::OutOfOrder);
        ids.reset();
        assert_eq!(ids.check(40), Verdict::First);
    }
}
