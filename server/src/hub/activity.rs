//! How busy rooms are now: room messages (and events) numbered on this node per room, over the
//! last half minute to minute, in two bounded windows. Feeds the admin API's busiest rooms, and
//! is meant for bounded per-room metric labels ([`Activity::top`]).

use std::collections::HashMap;
use std::sync::Mutex;

/// One window's length: counts cover the current window and the one before it.
pub const WINDOW_MS: u64 = 30_000;
/// Rooms one window counts by name; the messages of any further room count as `other`.
pub const MAX_ROOMS: usize = 10_000;

/// Per-room counts of the current and the previous window. Its own lock, taken once per room
/// message from under the hub's lock (never the other way round).
#[derive(Default)]
pub struct Activity(Mutex<Windows>);

#[derive(Default)]
struct Windows {
    /// When the current window began, ms since the epoch.
    started_ms: u64,
    current: HashMap<String, u64>,
    previous: HashMap<String, u64>,
    /// Messages of rooms past [`MAX_ROOMS`], this window and the one before.
    other: (u64, u64),
}

impl Windows {
    /// Moves on to the window holding `now_ms`.
    fn roll(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.started_ms);
        if elapsed < WINDOW_MS {
            return;
        }
        if elapsed < 2 * WINDOW_MS {
            self.previous = std::mem::take(&mut self.current);
            self.other = (0, self.other.0);
            self.started_ms += WINDOW_MS;
        } else {
            self.previous.clear();
            self.current.clear();
            self.other = (0, 0);
            self.started_ms = now_ms;
        }
    }
}

impl Activity {
    /// Counts one message of `room` at `now_ms`.
    pub fn count(&self, room: &str, now_ms: u64) {
        let mut w = self.lock();
        w.roll(now_ms);
        if let Some(n) = w.current.get_mut(room) {
            *n += 1;
        } else if w.current.len() < MAX_ROOMS {
            w.current.insert(room.to_owned(), 1);
        } else {
            w.other.0 += 1;
        }
    }

    /// The `n` busiest rooms at `now_ms` with their messages over the last one to two windows,
    /// busiest first (ties by name); and how many milliseconds that covers.
    pub fn top(&self, n: usize, now_ms: u64) -> (Vec<(String, u64)>, u64) {
        // One pass keeping the best `n`: publishers wait on this lock, so nothing here
        // allocates per room or sorts them all.
        let mut w = self.lock();
        w.roll(now_ms);
        let w = &*w;
        let mut best: Vec<(&str, u64)> = Vec::with_capacity(n + 1);
        for (room, count) in &w.current {
            let total = count + w.previous.get(room).copied().unwrap_or(0);
            keep_best(&mut best, n, room, total);
        }
        for (room, count) in &w.previous {
            if !w.current.contains_key(room) {
                keep_best(&mut best, n, room, *count);
            }
        }
        let covered = now_ms.saturating_sub(w.started_ms) + WINDOW_MS;
        let rooms = best.into_iter().map(|(r, c)| (r.to_owned(), c)).collect();
        (rooms, covered)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Plain counters: a panic cannot leave them inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts `room` among the `n` busiest in `best` (busiest first, ties by name) if it belongs.
fn keep_best<'a>(best: &mut Vec<(&'a str, u64)>, n: usize, room: &'a str, count: u64) {
    let at = best.partition_point(|(r, c)| *c > count || (*c == count && *r < room));
    if at < n {
        best.insert(at, (room, count));
        best.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_rooms_of_the_last_windows_come_first() {
        let a = Activity::default();
        let t0 = 1_000_000;
        a.count("quiet", t0);
        for _ in 0..3 {
            a.count("busy", t0 + 10);
        }
        a.count("quiet", t0 + WINDOW_MS + 1);
        let (top, covered) = a.top(10, t0 + WINDOW_MS + 2);
        assert_eq!(top, [("busy".to_owned(), 3), ("quiet".to_owned(), 2)]);
        assert!(covered > WINDOW_MS && covered <= 2 * WINDOW_MS + 2);
        assert_eq!(a.top(1, t0 + WINDOW_MS + 2).0.len(), 1);
        // Two windows later the first one is forgotten.
        let (top, _) = a.top(10, t0 + 2 * WINDOW_MS + 5);
        assert_eq!(top, [("quiet".to_owned(), 1)]);
        assert!(a.top(10, t0 + 10 * WINDOW_MS).0.is_empty());
    }

    #[test]
    fn rooms_past_the_bound_are_not_named() {
        let a = Activity::default();
        for i in 0..MAX_ROOMS + 10 {
            a.count(&format!("r{i}"), 5);
        }
        let w = a.lock();
        assert_eq!(w.current.len(), MAX_ROOMS);
        assert_eq!(w.other.0, 10);
    }
}
