//! What the chat commands share before they act: a room the user may use, and a storage read
//! bounded in time whose failure is a refusal the client understands.

use std::time::Duration;

use parley_stomp::destination::RoomName;
use parley_stomp::session::Identity;

use super::refusal::Refusal;
use super::Hub;
use crate::store::{self, Store};

/// Longest wait for one storage read or write a command needs (a lookup, a mark, a message to
/// change): past it the command is refused with `storage_error`, never left hanging.
pub const STORE_WAIT: Duration = Duration::from_secs(5);

impl Hub {
    /// `room` as a room name, if `who` may read and post in it: else `invalid_room` or
    /// `forbidden`.
    pub fn usable_room(&self, who: &Identity, room: &str) -> Result<RoomName, Refusal> {
        let name =
            RoomName::parse(room).map_err(|e| Refusal::new("invalid_room", e.to_string()))?;
        self.acl
            .may_use(who, name.as_str())
            .map_err(|why| Refusal::new("forbidden", why))?;
        Ok(name)
    }

    /// Runs `call` on the store ([`store::run`]) within [`STORE_WAIT`]; a failure or a timeout
    /// is logged and becomes `storage_error` saying that `what` failed.
    pub(super) async fn stored<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&dyn Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Refusal> {
        let result = tokio::time::timeout(STORE_WAIT, store::run(&self.store, call))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {STORE_WAIT:?}")));
        result.map_err(|error| {
            tracing::error!(%error, what, "storage error");
            Refusal::new("storage_error", format!("{what} failed: storage error"))
        })
    }

    /// The last id of `stream` (a room or conversation) as far as `id` needs: this node's, or in
    /// cluster mode — where another node may have numbered later messages this one has not
    /// received yet — storage's when `id` is past this node's.
    pub(super) async fn last_id_of(&self, stream: &str, id: u64) -> Result<u64, Refusal> {
        let here = self.apply(|broker, _| broker.room_last_id(stream));
        if id <= here || !self.is_clustered() {
            return Ok(here);
        }
        let name = stream.to_owned();
        let stored = self
            .stored("reading the last id", move |s| s.last_id(&name))
            .await?;
        Ok(here.max(stored))
    }
}
