//! What a bot's connections report into: the sequence and room-id checks, acknowledgements,
//! refusals, and its own edits and reactions coming back (their latency).

use std::collections::VecDeque;

use crate::body::{self, Stamp};
use crate::checker::{RoomIds, SeqChecker, Stream, Verdict};
use crate::conn::{Change, Handler, Refused, Sent};
use crate::stats::{ChangeCounts, ErrorKind, Metric, Recorder};

/// Per-connection receiving state: what [`crate::conn::Conn::read`] reports into.
pub struct Receiving {
    /// The bot's own id, to recognise its own messages coming back.
    pub id: u32,
    /// The bot's name, to recognise its own changes coming back.
    pub name: String,
    /// The protocol has no receipts: a sender's own message coming back is its acknowledgement.
    pub echo_acks: bool,
    pub checker: SeqChecker,
    /// The room's ids, messages and events together.
    pub room_ids: RoomIds,
    pub recorder: Recorder,
    pub in_flight: u32,
    pub joined: bool,
    /// The last room message id received: where a resumed connection continues.
    pub last_room_id: u64,
    /// The next connection resumes this one (`since`), so the checks carry on across it.
    pub resuming: bool,
    /// The last error, for samples.
    pub last_error: Option<(ErrorKind, String)>,
    /// The bot's latest room message seen back: its id and stamp (what an edit changes; the
    /// edit keeps the stamp, so the message still checks when catch-up replays it edited).
    pub own_last: Option<(u64, Stamp)>,
    /// The id of the latest room message received from anyone: what a reaction goes to.
    pub room_last: Option<u64>,
    /// Send times (µs) of the edits and reactions not yet seen back, oldest first.
    pub pending: [VecDeque<u64>; 2],
    /// The latest reaction: its target and whether it added the emoji.
    pub reacted: Option<(u64, bool)>,
    /// A DM sent alone is not answered yet (see [`crate::scenario::Protocol::refusal_closes`]).
    pub dm_waiting: bool,
}

impl Receiving {
    /// A bot's receiving side before its first connection.
    pub fn new(id: u32, name: &str, echo_acks: bool, recorder: Recorder) -> Self {
        Self {
            id,
            name: name.to_owned(),
            echo_acks,
            checker: SeqChecker::default(),
            room_ids: RoomIds::default(),
            recorder,
            in_flight: 0,
            joined: false,
            last_room_id: 0,
            resuming: false,
            last_error: None,
            own_last: None,
            room_last: None,
            pending: [VecDeque::new(), VecDeque::new()],
            reacted: None,
            dm_waiting: false,
        }
    }

    /// Ready for a new connection: a resumed one carries the room's checks on (catch-up replays
    /// what was missed) but not the DMs' (live-only between bots); another starts afresh.
    pub fn reconnecting(&mut self) {
        if self.resuming {
            self.checker.reset_stream(Stream::Direct);
        } else {
            self.checker.reset();
            self.room_ids.reset();
        }
        self.joined = false;
        self.in_flight = 0;
        // What was in flight on the last connection may or may not have been made.
        self.pending.iter_mut().for_each(VecDeque::clear);
        self.reacted = None;
        self.dm_waiting = false;
    }

    /// Checks the id of a room message or event against the room's sequence.
    fn room_id(&mut self, id: u64) {
        self.last_room_id = self.last_room_id.max(id);
        match self.room_ids.check(id) {
            Verdict::First | Verdict::Next => {}
            Verdict::Gap { missing } => {
                self.recorder.error(ErrorKind::RoomIds);
                self.recorder.counters().missing_ids += missing;
            }
            Verdict::Duplicate | Verdict::OutOfOrder => self.recorder.error(ErrorKind::RoomIds),
        }
    }

    /// The counters and the pending queue of the bot's own `change`s.
    fn change_state(&mut self, change: Change) -> Option<(&mut ChangeCounts, &mut VecDeque<u64>)> {
        let c = self.recorder.counters();
        match change {
            Change::Edit => Some((&mut c.edits, &mut self.pending[0])),
            Change::React => Some((&mut c.reactions, &mut self.pending[1])),
            Change::Delete => None,
        }
    }
}

impl Handler for Receiving {
    fn on_message(&mut self, stream: Stream, id: Option<u64>, body: &[u8]) {
        if let (Stream::Room, Some(id)) = (stream, id) {
            self.room_id(id);
            self.room_last = Some(id);
        }
        let Some(stamp) = body::parse(body) else {
            self.recorder.counters().foreign += 1;
            return;
        };
        self.recorder
            .latency(body::now_us().saturating_sub(stamp.sent_us));
        self.recorder.counters().delivered += 1;
        if stream == Stream::Direct && stamp.sender != self.id {
            self.recorder.counters().dms_delivered += 1;
        }
        if stamp.sender == self.id {
            match (stream, id) {
                (Stream::Room, Some(id)) => self.own_last = Some((id, stamp)),
                // The copy of its own DM: a refused one (recipient offline) leaves a hole in
                // these numbers, which is not a loss.
                (Stream::Direct, _) => return,
                _ => {}
            }
        }
        match self.checker.check(stream, stamp.sender, stamp.seq) {
            Verdict::First | Verdict::Next => {}
            Verdict::Gap { missing } => {
                self.recorder.error(ErrorKind::Gap);
                self.recorder.counters().missing += missing;
            }
            Verdict::Duplicate => self.recorder.error(ErrorKind::Duplicate),
            Verdict::OutOfOrder => self.recorder.error(ErrorKind::OutOfOrder),
        }
        if self.echo_acks && stream == Stream::Room && stamp.sender == self.id {
            self.on_ack(Sent::Message);
        }
    }

    fn on_event(&mut self, change: Change, id: Option<u64>, sender: Option<&str>) {
        self.recorder.counters().events += 1;
        if let Some(id) = id {
            self.room_id(id);
        }
        if !sender.is_some_and(|s| s.eq_ignore_ascii_case(&self.name)) {
            return;
        }
        // One connection delivers the bot's own changes in the order it made them.
        let Some((counts, pending)) = self.change_state(change) else {
            return;
        };
        if let Some(sent_us) = pending.pop_front() {
            counts.echoed += 1;
            let metric = if change == Change::Edit {
                Metric::Edit
            } else {
                Metric::React
            };
            let us = body::now_us().saturating_sub(sent_us);
            self.recorder.latency_of(metric, us);
        }
    }

    fn on_ack(&mut self, of: Sent) {
        match of {
            Sent::Message | Sent::Dm => {
                self.dm_waiting &= of != Sent::Dm;
                self.in_flight = self.in_flight.saturating_sub(1);
                self.recorder.counters().acked += 1;
            }
            Sent::Change(change) => {
                if let Some((counts, _)) = self.change_state(change) {
                    counts.acked += 1;
                }
            }
        }
    }

    fn on_refused(&mut self, what: Refused) {
        match what {
            Refused::Dm => {
                self.dm_waiting = false;
                self.in_flight = self.in_flight.saturating_sub(1);
                self.recorder.counters().dms_refused += 1;
            }
            Refused::Change(mut change) => {
                // A STOMP ERROR does not say which change it refuses: the oldest one waiting.
                let [edits, reacts] = &self.pending;
                if reacts
                    .front()
                    .is_some_and(|r| edits.front().is_none_or(|e| r < e))
                {
                    change = Change::React;
                }
                if let Some((counts, pending)) = self.change_state(change) {
                    counts.refused += 1;
                    pending.pop_front();
                }
            }
        }
    }

    fn on_joined(&mut self) {
        self.joined = true;
    }

    fn on_error(&mut self, kind: ErrorKind, why: &str) {
        self.recorder.error(kind);
        if self.last_error.is_none() {
            self.last_error = Some((kind, why.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::stats::HistogramPool;

    fn receiving() -> Receiving {
        let (tx, _rx) = mpsc::unbounded_channel();
        Receiving::new(
            1,
            "raw-1",
            false,
            Recorder::new(tx, Arc::new(HistogramPool::default())),
        )
    }

    #[test]
    fn own_changes_come_back_and_events_keep_room_ids() {
        let mut rx = receiving();
        let mut text = String::new();
        let stamp = Stamp {
            sender: 1,
            seq: 1,
            sent_us: body::now_us(),
        };
        body::encode(&mut text, stamp, 32);
        rx.on_message(Stream::Room, Some(10), text.as_bytes());
        assert_eq!(rx.own_last, Some((10, stamp)));
        assert_eq!(rx.room_last, Some(10));
        rx.pending[0].push_back(body::now_us());
        rx.on_ack(Sent::Change(Change::Edit));
        // Someone else's reaction, then the bot's own edit (name spelt differently).
        rx.on_event(Change::React, Some(11), Some("ws-2"));
        rx.on_event(Change::Edit, Some(12), Some("RAW-1"));
        rx.on_message(Stream::Room, Some(13), b"foreign");
        let c = *rx.recorder.counters();
        assert_eq!((c.edits.acked, c.edits.echoed, c.events), (1, 1, 2));
        assert_eq!(c.errors[ErrorKind::RoomIds as usize], 0);
        assert!(rx.pending[0].is_empty());
        // A lost event is a gap in the room's ids.
        rx.on_event(Change::React, Some(15), Some("ws-2"));
        let c = *rx.recorder.counters();
        assert_eq!(
            (c.errors[ErrorKind::RoomIds as usize], c.missing_ids),
            (1, 1)
        );
    }

    #[test]
    fn refusals_are_counted_not_errors() {
        let mut rx = receiving();
        rx.in_flight = 2;
        rx.on_refused(Refused::Dm);
        // A STOMP refusal names no kind: the oldest change waiting is the one refused.
        rx.pending[1].push_back(1);
        rx.pending[0].push_back(2);
        rx.on_refused(Refused::Change(Change::Edit));
        let c = *rx.recorder.counters();
        assert_eq!((rx.in_flight, c.dms_refused), (1, 1));
        assert_eq!((c.reactions.refused, c.edits.refused), (1, 0));
        assert_eq!(c.errors.iter().sum::<u64>(), 0);
    }
}
