//! Reading a room's past: catch-up after a reconnect (`since`) and history pages. The one
//! implementation every protocol and the REST API use.

use std::future::Future;

use parley_stomp::broker::Broker;

use super::{Hub, MAX_REPLAY};
use crate::store::{self, StoredMessage};

/// Default and largest page of history.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page of history.
pub const MAX_PAGE: usize = 500;

/// The catch-up a subscription to `room` needs when the client has every message up to
/// `since`: `Some((since, last))` when messages `(since, last]` exist. Call it under the
/// broker's lock in the same step as the subscription, so everything after `last` arrives live
/// and everything up to it is replayed: no gap, no duplicate.
pub fn catch_up_range(broker: &Broker, room: &str, since: u64) -> Option<(u64, u64)> {
    let last = broker.room_last_id(room);
    (since < last).then_some((since, last))
}

impl Hub {
    /// The stored messages of `room` with `since < id <= last` (at most [`MAX_REPLAY`]), read
    /// once everything queued so far is durable, so no message up to `last` is missing.
    pub(super) fn stored_between(
        &self,
        room: String,
        since: u64,
        last: u64,
    ) -> impl Future<Output = anyhow::Result<Vec<StoredMessage>>> + Send + 'static {
        let durable = self.durable_signal();
        let store = self.store.clone();
        async move {
            if !matches!(durable.await, Ok(true)) {
                anyhow::bail!("storage is not keeping up");
            }
            let limit = usize::try_from(last.saturating_sub(since))
                .unwrap_or(MAX_REPLAY)
                .min(MAX_REPLAY);
            let messages = store::run(&store, move |s| s.after(&room, since, limit)).await?;
            Ok(messages.into_iter().filter(|m| m.id <= last).collect())
        }
    }

    /// Up to `limit` (clamped to 1..=[`MAX_PAGE`]) messages of `room` before id `before` (the
    /// latest if `None`), oldest first. Access is the caller's to check.
    pub async fn history(
        &self,
        room: String,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        let limit = limit.clamp(1, MAX_PAGE);
        store::run(&self.store, move |s| s.before(&room, before, limit)).await
    }

    /// Resolves `true` once everything queued for storage before this call is durable.
    pub(super) fn durable_signal(&self) -> tokio::sync::oneshot::Receiver<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.journal.barrier(Box::new(move |ok| {
            let _ = tx.send(ok);
        }));
        rx
    }
}
