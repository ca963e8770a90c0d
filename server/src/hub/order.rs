//! Cluster mode's bookkeeping under the hub's lock: which fan-out keys this node receives from
//! the bus, and each room's messages that arrived before their predecessors.

use std::collections::{BTreeMap, HashMap, HashSet};

use parley_stomp::broker::Forwarded;
use tokio::sync::watch;

/// Messages one room may have waiting for their predecessors on a node.
pub(super) const MAX_AHEAD: usize = 10_000;

/// Per-room order on this node: messages that came before their predecessors.
#[derive(Default)]
pub(super) struct RoomOrder {
    /// Waiting messages by id.
    pub(super) ahead: BTreeMap<u64, Forwarded>,
    /// A read from storage is under way for this room.
    pub(super) filling: bool,
    /// Storage is known to hold the room's messages up to this id: deliver up to it.
    pub(super) upto: u64,
}

/// What this node receives from the bus.
#[derive(Default)]
pub(super) struct Watching {
    /// Fan-out keys with subscribers here.
    pub(super) keys: HashSet<String>,
    /// Watched keys per channel.
    pub(super) refs: HashMap<String, usize>,
    /// Channels still being subscribed: turns true once live.
    pub(super) pending: HashMap<String, watch::Receiver<bool>>,
}
