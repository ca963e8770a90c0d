//! Failed-login throttling per username and per client IP, in fixed one-minute windows.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parley_stomp::destination::valid_user;

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

    /// Starts a login attempt: `Err(retry_after)` while `user` or `ip` has used up its failures,
    /// else the attempt is counted as a failure at once — before the slow password check — so a
    /// burst of concurrent guesses cannot all pass the check before any of them is counted.
    /// Call [`Throttle::succeeded`] if it turns out right.
    pub fn attempt(&self, user: &str, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        // Only real user names are keys: arbitrary request strings must not fill the map.
        let user = valid_user(user);
        let mut users = self.per_user.lock();
        let mut ips = self.per_ip.lock();
        let blocked = [
            user.as_ref()
                .and_then(|u| self.per_user.blocked(&users, u.as_str(), now)),
            self.per_ip.blocked(&ips, &ip_key(ip), now),
        ];
        if let Some(wait) = blocked.into_iter().flatten().max() {
            return Err(wait);
        }
        if let Some(user) = user {
            self.per_user.count(&mut users, user, now);
        }
        self.per_ip.count(&mut ips, ip_key(ip), now);
        Ok(())
    }

    /// The attempt was right: the name's failures are cleared and the address's attempt is
    /// given back (not all its failures: one right password must not excuse a spray of
    /// guesses from that address).
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.per_user.lock().remove(user);
        if let Some(entry) = self.per_ip.lock().get_mut(&ip_key(ip)) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// IPv6 clients are counted per /64: one host usually owns a whole /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
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

    fn blocked<Q>(
        &self,
        windows: &HashMap<K, (Instant, u32)>,
        key: &Q,
        now: Instant,
    ) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if windows.len() >= MAX_ENTRIES {
            return Some(WINDOW);
        }
        let (start, failures) = windows.get(key)?;
        let ends = *start + WINDOW;
        (*failures >= self.max && now < ends).then(|| ends - now)
    }

    fn count(&self, windows: &mut HashMap<K, (Instant, u32)>, key: K, now: Instant) {
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
            assert!(t.attempt("alice", ip).is_ok());
        }
        let wait = t.attempt("alice", ip).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= WINDOW);
        assert!(
            t.attempt("bob", ip).is_ok(),
            "another name from the same address"
        );
        assert!(t.attempt("carol", ip).is_ok());
        assert!(t.attempt("dave", ip).is_err(), "the address used up its 5");
        assert!(t.attempt("dave", [127, 0, 0, 2].into()).is_ok());
        t.succeeded("alice", ip);
        assert!(t.attempt("alice", [127, 0, 0, 3].into()).is_ok());
    }

    #[test]
    fn attempts_count_before_the_check_finishes() {
        // Concurrent guesses: each counts as it starts, so the fourth is refused even though no
        // password check has finished.
        let t = Throttle::new(3, 100);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!((0..3).all(|_| t.attempt("alice", ip).is_ok()));
        assert!(t.attempt("alice", ip).is_err());
        t.succeeded("alice", ip);
        assert!(
            t.attempt("alice", ip).is_ok(),
            "a right password clears the name"
        );
    }

    #[test]
    fn junk_names_are_not_keys_and_v6_counts_per_64() {
        let t = Throttle::new(1, 2);
        let v6 = |last: u16| IpAddr::V6([0x2001, 0xdb8, 0, 1, 0, 0, 0, last].into());
        assert!(t.attempt(&"x".repeat(10_000), v6(1)).is_ok());
        assert!(t.per_user.lock().is_empty());
        assert!(t.attempt("a b", v6(2)).is_ok());
        assert!(t.attempt("ok", v6(3)).is_err(), "same /64: its 2 are used");
    }
}
