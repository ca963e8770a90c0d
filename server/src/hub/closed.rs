//! Rooms an operator closed (archived): no one joins, subscribes to or posts in them, while
//! their history stays readable. Checked on every join, subscription and STOMP SEND, so a
//! check is a read lock (and none at all while no room is closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// Closed rooms and why; written by operators (here or through the bus), read by every check.
#[derive(Default)]
pub struct ClosedRooms {
    /// Some room is closed: the common case, none, costs no lock.
    any: AtomicBool,
    reasons: RwLock<HashMap<String, String>>,
}

impl ClosedRooms {
    /// Why `room` is closed, if it is.
    pub fn reason(&self, room: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.read().get(room).cloned()
    }

    /// Closes `room`; `false` if it was closed already (the reason is replaced).
    pub fn close(&self, room: &str, reason: &str) -> bool {
        let mut reasons = self.write();
        let new = reasons.insert(room.to_owned(), reason.to_owned()).is_none();
        self.any.store(true, Ordering::Release);
        new
    }

    /// Opens `room` again.
    pub fn reopen(&self, room: &str) {
        let mut reasons = self.write();
        reasons.remove(room);
        self.any.store(!reasons.is_empty(), Ordering::Release);
    }

    /// Replaces every closed room with `rooms` (what storage holds); returns those that were
    /// not closed before, with their reasons.
    pub fn replace(
        &self,
        rooms: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let mut reasons = self.write();
        let old = std::mem::replace(&mut *reasons, rooms.into_iter().collect());
        self.any.store(!reasons.is_empty(), Ordering::Release);
        reasons
            .iter()
            .filter(|(room, _)| !old.contains_key(*room))
            .map(|(room, why)| (room.clone(), why.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        // Single inserts and removes: a panic cannot leave the map half-written.
        self.reasons.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
        self.reasons.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_close_and_reopen() {
        let closed = ClosedRooms::default();
        assert_eq!(closed.reason("lobby"), None);
        assert!(closed.close("lobby", "archived"));
        assert!(!closed.close("lobby", "archived again"));
        assert_eq!(closed.reason("lobby").as_deref(), Some("archived again"));
        closed.reopen("lobby");
        assert_eq!(closed.reason("lobby"), None);
        let newly = closed.replace([("attic".to_owned(), String::new())]);
        assert_eq!(newly, [("attic".to_owned(), String::new())]);
        assert_eq!(closed.reason("attic").as_deref(), Some(""));
    }
}
