//! Failed-login throttling per username and per client IP, in fixed one-minute windows.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept before expired ones are swept, bounding memory under a spray of names.
const SWEEP_AT: usize = 10_000;
/// Entries kept at most; past this, new keys are throttled outright until the sweep frees room.
const MAX_ENTRIES: usize = 100_000;

/// Failure counters.
pub struct Throttle {
    per_user: Limit<String>,
    per_ip: Limit<IpAddr>,
}

impl Throttle {
    /// Allows `per_user` failures per name and `per_ip` per address in a minute.
    pub fn new(per_user: u32, per_ip: u32) -> Self {
        Self {
            per_user: Limit::new(per_user),
            per_ip: Limit::new(per_ip),
        }
    }

    /// `Err(retry_after)` while `user` or `ip` has used up its failures.
    pub fn check(&self, user: &str, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let a = self.per_user.blocked(user, now);
        let b = self.per_ip.blocked(&ip, now);
        match a.max(b) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failure.
    pub fn failed(&self, user: &str, ip: IpAddr) {
        let now = Instant::now();
        self.per_user.count(user.to_owned(), now);
        self.per_ip.count(ip, now);
    }

    /// A success clears the name's failures (not the address's: one right password must not
    /// reset a spray of guesses from that address).
    pub fn succeeded(&self, user: &str) {
        self.per_user.clear(user);
    }
}

struct Limit<K> {
    max: u32,
    windows: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq> Limit<K> {
    fn new(max: u32) -> Self {
        Self {
            max,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn blocked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let windows = self.lock();
        if windows.len() >= MAX_ENTRIES {
            return Some(WINDOW);
        }
        let (start, failures) = windows.get(key)?;
        let ends = *start + WINDOW;
        (failures >= &self.max && now < ends).then(|| ends - now)
    }

    fn count(&self, key: K, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now < *start + WINDOW);
        }
        if windows.len() >= MAX_ENTRIES {
            return;
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    fn clear<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_blocks_after_max_failures_per_name_or_address() {
        let t = Throttle::new(3, 5);
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(t.check("alice", ip).is_ok());
            t.failed("alice", ip);
        }
        let wait = t.check("alice", ip).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= WINDOW);
        assert!(
            t.check("bob", ip).is_ok(),
            "another name from the same address"
        );
        t.failed("bob", ip);
        t.failed("carol", ip);
        assert!(t.check("dave", ip).is_err(), "the address used up its 5");
        assert!(t.check("dave", [127, 0, 0, 2].into()).is_ok());
        t.succeeded("alice");
        assert!(t.check("alice", [127, 0, 0, 2].into()).is_ok());
    }
}
