//! STOMP transactions: frames checked when they arrive, buffered within a byte budget, and
//! applied all or nothing at COMMIT.

use super::send::Outgoing;
use super::{required, Refusal, Session, FRAME_OVERHEAD, MAX_TRANSACTIONS, MAX_TRANSACTION_FRAMES};
use crate::broker::{Broker, BrokerEvent};
use crate::budget::BUSY_MESSAGE;
use crate::destination::Destination;
use crate::frame::{Command, Frame};

impl Session {
    /// BEGIN: opens a transaction.
    pub(super) fn begin(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let tx = required(frame, "transaction")?;
        let open = &mut self.transactions.get_or_insert_default().open;
        if open.contains_key(tx) {
            return Err(Refusal(format!("transaction {tx:?} already started")));
        }
        if open.len() >= MAX_TRANSACTIONS {
            return Err(Refusal(format!(
                "more than {MAX_TRANSACTIONS} open transactions"
            )));
        }
        open.insert(tx.to_owned(), Vec::new());
        Ok(())
    }

    /// A SEND, ACK or NACK inside transaction `tx`: checked now as if it were applied now (rules,
    /// limits, rate), then kept until COMMIT within the session's transaction bytes and the
    /// server's memory budget.
    pub(super) fn buffer(&mut self, tx: String, frame: Frame, now_ms: u64) -> Result<(), Refusal> {
        let frames = self
            .transactions
            .as_ref()
            .and_then(|t| t.open.get(&tx))
            .ok_or_else(|| Refusal(format!("unknown transaction {tx:?}")))?;
        if frames.len() >= MAX_TRANSACTION_FRAMES {
            return Err(Refusal(format!(
                "more than {MAX_TRANSACTION_FRAMES} frames in transaction {tx:?}"
            )));
        }
        if frame.command == Command::Send {
            self.admit_send(&frame, now_ms)?;
        } else {
            self.ack_ref(&frame)?;
        }
        self.charge(frame_size(&frame))?;
        if let Some(frames) = self.transactions.as_mut().and_then(|t| t.open.get_mut(&tx)) {
            frames.push(frame);
        }
        Ok(())
    }

    /// COMMIT: applies every frame of the transaction, or none. Everything that could refuse a
    /// frame is checked for the whole transaction first, under the same broker lock: the rules
    /// (rooms it would create count against the quota together), the server's routing, the
    /// broker's checks (queues, storage, budget), and the acknowledgements. The budget for its
    /// messages is then reserved, so its own publishes cannot spend it half-way.
    pub(super) fn commit(
        &mut self,
        frame: &Frame,
        broker: &mut Broker,
        now_ms: u64,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), Refusal> {
        let tx = required(frame, "transaction")?;
        let frames = self.end_transaction(tx)?;
        let mut destinations = Vec::new();
        for f in &frames {
            if f.command == Command::Send {
                destinations.push(
                    Destination::parse(required(f, "destination")?)
                        .map_err(|e| Refusal(e.to_string()))?,
                );
            } else if !broker.is_unacked(self.id, &self.ack_ref(f)?) {
                return Err(Refusal(format!(
                    "no unacknowledged message for {} in transaction {tx:?}",
                    f.command.as_str()
                )));
            }
        }
        // Access may have been revoked since the frames arrived.
        self.allowed(|access, who| access.send_all(who, &destinations))?;
        let sends = frames.iter().filter(|f| f.command == Command::Send);
        let outgoing = sends
            .zip(&destinations)
            .map(|(f, destination)| self.prepare(f, destination, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let checks: Vec<_> = outgoing
            .iter()
            .map(|out| (&out.destination, &out.publish))
            .collect();
        broker.check_publishes(self.id, &checks)?;
        if !outgoing.is_empty() {
            broker.reserve(&checks)?;
        }
        let applied = self.apply(&frames, outgoing, broker, events);
        broker.end_reservation();
        applied
    }

    /// Applies a checked transaction's frames in order: first what its SENDs create, then
    /// each frame.
    fn apply(
        &mut self,
        frames: &[Frame],
        outgoing: Vec<Outgoing>,
        broker: &mut Broker,
        events: &mut dyn FnMut(BrokerEvent),
    ) -> Result<(), Refusal> {
        for out in &outgoing {
            self.accept(out)?;
        }
        let mut outgoing = outgoing.into_iter();
        for f in frames {
            if f.command == Command::Send {
                let out = outgoing.next().expect("one outgoing message per SEND");
                self.publish(out, broker, events)?;
            } else {
                match self.acknowledge(f, broker, events) {
                    // Settled by an earlier cumulative ACK of this transaction.
                    Err(Refusal(_)) if !broker.is_unacked(self.id, &self.ack_ref(f)?) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// Ends transaction `tx` (COMMIT, ABORT): its frames, and what they held returned. The
    /// box goes with the last open transaction.
    pub(super) fn end_transaction(&mut self, tx: &str) -> Result<Vec<Frame>, Refusal> {
        let transactions = self.transactions.as_mut();
        let frames = transactions
            .and_then(|t| t.open.remove(tx))
            .ok_or_else(|| Refusal(format!("unknown transaction {tx:?}")))?;
        if let Some(t) = &mut self.transactions {
            let bytes: usize = frames.iter().map(frame_size).sum();
            if let Some(charge) = &mut t.charge {
                charge.shrink(bytes);
            }
            if t.open.is_empty() {
                self.transactions = None;
            }
        }
        Ok(frames)
    }

    /// Adds `bytes` to what the session's transactions hold, within its limit and the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), Refusal> {
        let max = self.config.max_transaction_bytes;
        let budget = &self.config.budget;
        let t = self.transactions.get_or_insert_default();
        let held = t.charge.as_ref().map_or(0, |c| c.bytes());
        if held + bytes > max {
            return Err(Refusal(format!(
                "transactions hold more than {max} bytes: commit or abort first"
            )));
        }
        let charged = match &mut t.charge {
            Some(charge) => charge.try_grow(bytes),
            None => {
                t.charge = budget.try_charge(bytes);
                t.charge.is_some()
            }
        };
        if charged {
            Ok(())
        } else {
            Err(Refusal(BUSY_MESSAGE.into()))
        }
    }
}

/// What a buffered frame counts against the transaction limits.
fn frame_size(frame: &Frame) -> usize {
    let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    frame.body.len() + headers + FRAME_OVERHEAD
}
