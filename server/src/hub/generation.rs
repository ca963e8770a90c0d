//! The generation of this node's bans and closed rooms: every operator's action applied here
//! counts one, so a reload from storage that read while one was applied reads again rather
//! than erasing it with what it read before.

use std::sync::{Mutex, MutexGuard};

/// How many changes were applied to the bans and closed rooms. Its own mutex, held only while
/// a change (or a reload's replacement) is applied to those sets, never with the hub's lock.
#[derive(Default)]
pub(super) struct Generation(Mutex<u64>);

impl Generation {
    /// Applies `change` and counts it, atomically with respect to [`Generation::replace_if`].
    pub(super) fn change<T>(&self, change: impl FnOnce() -> T) -> T {
        let mut generation = self.lock();
        let out = change();
        *generation += 1;
        out
    }

    /// The generation now: what a reload notes before it reads storage.
    pub(super) fn now(&self) -> u64 {
        *self.lock()
    }

    /// Runs `replace` (putting what storage held in place) if no change was applied since
    /// generation `seen`; `None` if one was (the read may predate it: read again).
    pub(super) fn replace_if<T>(&self, seen: u64, replace: impl FnOnce() -> T) -> Option<T> {
        let generation = self.lock();
        (*generation == seen).then(replace)
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // A counter: a panic cannot leave it half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_made_during_a_read_defeats_the_replacement() {
        let generation = Generation::default();
        let seen = generation.now();
        assert_eq!(
            generation.replace_if(seen, || 1),
            Some(1),
            "nothing changed"
        );
        let seen = generation.now();
        generation.change(|| ());
        assert_eq!(generation.replace_if(seen, || 2), None, "read again");
        let seen = generation.now();
        assert_eq!(generation.replace_if(seen, || 3), Some(3));
    }
}
