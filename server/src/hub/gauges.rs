//! What the hub holds now, read when metrics are scraped: the broker's sizes, the outboxes'
//! depths, the journal's queue and the memory budget.

use parley_stomp::broker::BrokerSizes;

use super::Hub;

/// The hub's levels at one moment ([`Hub::gauges`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct HubGauges {
    /// The broker's tables.
    pub broker: BrokerSizes,
    /// Deliveries waiting in all outboxes.
    pub outbox_messages: usize,
    /// Their bytes.
    pub outbox_bytes: usize,
    /// The deepest outbox, in deliveries.
    pub outbox_deepest: usize,
    /// Jobs waiting for the storage thread.
    pub journal_queue: usize,
    /// Bytes charged to the memory budget.
    pub budget_used: usize,
    /// The budget.
    pub budget_limit: usize,
}

impl Hub {
    /// The levels now: one pass over the sessions under the hub's lock (done per scrape, not
    /// per message).
    pub fn gauges(&self) -> HubGauges {
        let mut gauges = HubGauges {
            journal_queue: self.journal.queued(),
            budget_used: self.settings.budget.used(),
            budget_limit: self.settings.budget.limit(),
            ..HubGauges::default()
        };
        let inner = self.lock();
        gauges.broker = inner.broker.sizes();
        for outbox in inner.outboxes.values() {
            let [_, (messages, bytes)] = outbox.mail.depth();
            gauges.outbox_messages += messages;
            gauges.outbox_bytes += bytes;
            gauges.outbox_deepest = gauges.outbox_deepest.max(messages);
        }
        gauges
    }
}
