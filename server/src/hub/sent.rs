//! Idempotent sends: the client ids of recent messages, per sender and destination, so that a
//! retry (after a lost ack, a reconnect, a restart) gets the first message's ack instead of
//! becoming a second message.

use std::sync::Arc;

use parley_stomp::broker::Receipt;

use super::outbox::{tell, Notice};
use super::session::HubSession;
use super::tables::SentKey;
use crate::store;

/// Longest wait for storage to say whether a client id was sent through another node.
const RECALL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
use super::Hub;

impl Hub {
    /// Remembers the client ids storage holds from the last [`super::REMEMBERED_MS`] (at start-up).
    pub fn remember_sent(&self, sent: Vec<crate::store::SentId>) {
        for (room, sender, client_id, id) in sent {
            let key = SentKey::new(sender.into(), format!("/topic/{room}"), client_id);
            self.sent.record(&key, id);
        }
    }

    /// Cluster mode: a retry may reach another node than the first send did (a balancer sends
    /// a reconnect anywhere), so a client id this node has not seen is looked up in storage,
    /// under `stream` (the room or conversation), and remembered when found. Bounded by
    /// [`RECALL_WAIT`]; a first send that is not stored yet is not found.
    pub async fn recall_sent(&self, key: &SentKey, stream: Option<String>) {
        let Some(stream) = stream else { return };
        if !self.is_clustered() || self.sent.find(key).is_some() {
            return;
        }
        let (sender, client_id) = (key.sender().to_string(), key.client_id().to_owned());
        let lookup = store::run(&self.store, move |s| {
            s.sent_id(&stream, &sender, &client_id)
        });
        match tokio::time::timeout(RECALL_WAIT, lookup).await {
            Ok(Ok(Some(id))) => self.sent.record(key, id),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "client id lookup failed"),
            Err(_) => tracing::warn!("client id lookup timed out"),
        }
    }

    /// The id of an earlier send with `key`, if there was one.
    pub fn sent_before(&self, key: &SentKey) -> Option<u64> {
        self.sent.find(key)
    }

    /// Remembers a send with `key` that became message `id` (0: numbered later, by storage).
    pub fn remember(&self, key: &SentKey, id: u64) {
        self.sent.record(key, id);
    }

    /// `receipt`, also remembering the id it is sent with: in cluster mode that is when the
    /// id becomes known.
    pub(super) fn remembering(&self, key: SentKey, receipt: Receipt) -> Receipt {
        let hub = self.me.clone();
        Receipt(Arc::new(move |id| {
            if let Some(hub) = hub.upgrade() {
                hub.sent.record(&key, id);
            }
            (receipt.0)(id)
        }))
    }

    /// Answers a retried send with the first one's acknowledgement, once everything sent
    /// before is durable (the first one included).
    pub fn acknowledge_again(&self, session: &HubSession, key: SentKey, receipt: Receipt) {
        let durable = self.durable_signal();
        let mail = session.notifier();
        let hub = self.me.clone();
        self.runtime.spawn(async move {
            if !matches!(durable.await, Ok(true)) {
                return;
            }
            let Some(id) = hub.upgrade().and_then(|hub| hub.sent.find(&key)) else {
                return;
            };
            tell(&mail, Notice::Encoded((receipt.0)(id)));
        });
    }
}
