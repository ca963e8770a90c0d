//! The server-wide memory budget: bytes held on behalf of clients, and the refusal past it.
//!
//! Everything a client can make the server keep — messages waiting in queues, outboxes, catch-up
//! replays and unacknowledged lists (all [`SharedMessage`](crate::SharedMessage)s), and frames
//! buffered in open transactions — holds a [`Charge`] against one [`MemoryBudget`]. A charge is
//! returned when what it paid for is dropped, so the count cannot drift. Past the limit new work
//! (a SEND, a transaction frame) is refused with "server busy"; what is already buffered is still
//! delivered, so existing sessions keep working.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Seconds a client refused for lack of memory is told to wait before retrying.
pub const BUSY_RETRY_SECS: u32 = 5;

/// The refusal text for work past the budget (STOMP ERROR message, raw JSON error).
pub const BUSY_MESSAGE: &str = "server busy: memory budget exhausted, retry in a few seconds";

/// Bytes buffered for clients, against a limit.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// A budget that never refuses (tests, tools).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// True when new work must be refused.
    pub fn is_exhausted(&self) -> bool {
        self.used() >= self.limit
    }

    /// Charges `bytes` whatever the level: for what cannot be refused once accepted (a
    /// message already published must reach its subscribers). Callers check
    /// [`MemoryBudget::is_exhausted`] before accepting the work.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    /// Charges `bytes` if they fit under the limit.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        self.reserve(bytes).then(|| Charge {
            budget: self.clone(),
            bytes,
        })
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Bytes held against a [`MemoryBudget`], returned when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `bytes` to this charge if they fit under the limit.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        let fits = self.budget.reserve(bytes);
        if fits {
            self.bytes += bytes;
        }
        fits
    }
}

impl Charge {
    /// Returns `bytes` of this charge (at most all of it).
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.budget.release(bytes);
        self.bytes -= bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_returned_when_dropped_and_refused_past_the_limit() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_charge(60).expect("fits");
        assert!(budget.try_charge(50).is_none(), "60 + 50 > 100");
        let mut b = budget.try_charge(40).expect("fits exactly");
        assert!(budget.is_exhausted());
        assert!(!b.try_grow(1));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.try_grow(60));
        assert_eq!(b.bytes(), 100);
        let forced = budget.charge(10);
        assert_eq!(budget.used(), 110, "a forced charge may pass the limit");
        drop((b, forced));
        assert_eq!(budget.used(), 0);
    }
}
