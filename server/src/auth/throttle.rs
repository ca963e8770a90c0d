//! Login and registration throttling: failed logins per (user name, client address) and per
//! client address, with delays that grow with each failure past the free ones; registrations
//! per client address in one-minute windows. Every table is bounded in entries.
//!
//! Nothing here is counted per user name alone: then anyone could lock any named user out by
//! guessing wrong from anywhere (OWASP Authentication Cheat Sheet, "Account Lockout"). An
//! attacker's failures block the attacker's (user, address) pair and, past a larger allowance,
//! the attacker's address; the owner logging in from elsewhere is not affected.
//!
//! Sans-IO: every decision takes `now`, so the tests drive time by hand.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use parley_stomp::destination::valid_user;

/// The first block after the free failures; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_secs(60);
/// The longest block.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// A key's failures are forgotten this long after its last block ended (or its last failure,
/// if it was not blocked).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Registrations are counted in windows this long.
const REGISTRATION_WINDOW: Duration = Duration::from_secs(60);
/// Entries per table at most; when full, expired entries go first, then the oldest eighth. With
/// the hash table's spare room and a name's heap bytes: ≲ 13 MiB for the (name, address) table,
/// ≲ 7 MiB for each address table.
const MAX_ENTRIES: usize = 65_536;

/// How many attempts each key gets.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failed logins for one user name from one address before it is blocked.
    pub per_user_and_ip: u32,
    /// Failed logins from one address (any names) before it is blocked.
    pub per_ip: u32,
    /// Registrations (any outcome) from one address per minute.
    pub registrations_per_ip: u32,
    /// Sign-ins through other sites finished (any outcome) from one address per minute.
    pub sign_ins_per_ip: u32,
}

/// The counters. Shared by every connection; each table has its own mutex, held for a map
/// operation only (never across an await), taken in the order pairs, then addresses.
pub struct Throttle {
    pairs: Mutex<Table<(String, IpAddr)>>,
    ips: Mutex<Table<IpAddr>>,
    registrations: Mutex<Table<IpAddr>>,
    sign_ins: Mutex<Table<IpAddr>>,
}

impl Throttle {
    /// Empty counters.
    pub fn new(limits: Limits) -> Self {
        Self {
            pairs: Mutex::new(Table::new(Policy::Backoff {
                free: limits.per_user_and_ip,
            })),
            ips: Mutex::new(Table::new(Policy::Backoff {
                free: limits.per_ip,
            })),
            registrations: Mutex::new(Table::new(Policy::Window {
                max: limits.registrations_per_ip,
                window: REGISTRATION_WINDOW,
            })),
            sign_ins: Mutex::new(Table::new(Policy::Window {
                max: limits.sign_ins_per_ip,
                window: REGISTRATION_WINDOW,
            })),
        }
    }

    /// Starts a login attempt by `user` from `ip` at `now`: `Err(retry_after)` while the pair or
    /// the address is blocked. Otherwise the attempt counts as a failure at once — before the
    /// slow password check — so a burst of concurrent guesses cannot all pass the check before
    /// any of them is counted. Settle it with [`Attempt::failed`] or [`Attempt::succeeded`]; an
    /// attempt dropped unsettled (the server was busy, storage failed, the check was abandoned)
    /// is given back: its client learnt nothing.
    pub fn attempt(&self, user: &str, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Duration> {
        // Only real user names are keys: arbitrary request strings must not fill the table.
        let pair = valid_user(user).map(|user| (user, ip_key(ip)));
        let mut pairs = lock(&self.pairs);
        let mut ips = lock(&self.ips);
        let waits = [
            pair.as_ref().and_then(|pair| pairs.wait(pair, now)),
            ips.wait(&ip_key(ip), now),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        if let Some(pair) = &pair {
            pairs.count(pair.clone(), now);
        }
        ips.count(ip_key(ip), now);
        Ok(Attempt {
            throttle: self,
            pair,
            ip: ip_key(ip),
            settled: false,
        })
    }

    /// Counts a registration request from `ip` at `now`; `Err(retry_after)` once the address
    /// used up its registrations of the current window.
    pub fn register(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        count_in_window(&self.registrations, ip, now)
    }

    /// Counts a sign-in callback from `ip` at `now` (each records its state in storage);
    /// `Err(retry_after)` once the address used up its sign-ins of the current window.
    pub fn sign_in(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        count_in_window(&self.sign_ins, ip, now)
    }
}

fn count_in_window(table: &Mutex<Table<IpAddr>>, ip: IpAddr, now: Instant) -> Result<(), Duration> {
    let mut table = lock(table);
    if let Some(wait) = table.wait(&ip_key(ip), now) {
        return Err(wait);
    }
    table.count(ip_key(ip), now);
    Ok(())
}

/// A login attempt being checked; see [`Throttle::attempt`].
#[must_use = "an unsettled attempt is given back when dropped"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    pair: Option<(String, IpAddr)>,
    ip: IpAddr,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the attempt stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The password was right: the pair's failures are cleared and the address's attempt is
    /// given back (not all its failures: one right password must not excuse a spray of
    /// guesses from that address).
    pub fn succeeded(mut self) {
        self.settled = true;
        if let Some(pair) = &self.pair {
            lock(&self.throttle.pairs).remove(pair);
        }
        lock(&self.throttle.ips).give_back(&self.ip);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(pair) = &self.pair {
                lock(&self.throttle.pairs).give_back(pair);
            }
            lock(&self.throttle.ips).give_back(&self.ip);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables stay consistent between statements: a panic elsewhere cannot break them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a table turns counts into waits.
#[derive(Clone, Copy, Debug)]
enum Policy {
    /// `free` failures, then blocked after each failure: [`FIRST_DELAY`], doubling each time,
    /// up to [`MAX_DELAY`]. `since` is the last failure.
    Backoff { free: u32 },
    /// `max` per `window`; `since` is the window's start.
    Window { max: u32, window: Duration },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    count: u32,
    since: Instant,
}

impl Policy {
    /// When an entry's block ends, if it is blocked at all.
    fn blocked_until(self, entry: Entry) -> Option<Instant> {
        match self {
            Self::Backoff { free } => {
                let over = entry.count.checked_sub(free)?;
                let delay = FIRST_DELAY
                    .saturating_mul(2u32.saturating_pow(over))
                    .min(MAX_DELAY);
                Some(entry.since + delay)
            }
            Self::Window { max, window } => (entry.count >= max).then_some(entry.since + window),
        }
    }

    /// True once the entry means nothing any more.
    fn expired(self, entry: Entry, now: Instant) -> bool {
        match self {
            Self::Backoff { .. } => {
                let quiet_from = self.blocked_until(entry).unwrap_or(entry.since);
                now >= quiet_from + FORGET_AFTER
            }
            Self::Window { window, .. } => now >= entry.since + window,
        }
    }
}

/// Counts per key under one policy, at most [`MAX_ENTRIES`] of them.
struct Table<K> {
    policy: Policy,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq> Table<K> {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    /// How long `key` must wait, if it is blocked now.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let entry = *self.entries.get(key)?;
        if self.policy.expired(entry, now) {
            return None;
        }
        let until = self.policy.blocked_until(entry)?;
        (now < until).then(|| until - now)
    }

    /// Counts one for `key` at `now`.
    fn count(&mut self, key: K, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ENTRIES {
            self.make_room(now);
        }
        let policy = self.policy;
        let entry = self.entries.entry(key).or_insert(Entry {
            count: 0,
            since: now,
        });
        if policy.expired(*entry, now) {
            *entry = Entry {
                count: 0,
                since: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if let Policy::Backoff { .. } = policy {
            entry.since = now;
        }
    }

    /// Takes back one count of `key`.
    fn give_back(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                self.entries.remove(key);
            }
        }
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops expired entries, then, if that was not enough, the oldest eighth: a spray of
    /// distinct keys costs its sender the oldest counts, never memory or other clients' logins.
    fn make_room(&mut self, now: Instant) {
        let policy = self.policy;
        self.entries.retain(|_, e| !policy.expired(*e, now));
        if self.entries.len() < MAX_ENTRIES {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|e| e.since).collect();
        let cut = MAX_ENTRIES / 8;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        self.entries.retain(|_, e| e.since >= oldest_kept);
        if self.entries.len() >= MAX_ENTRIES {
            // Most entries have the same age: drop any eighth.
            let mut left = cut;
            self.entries.retain(|_, _| {
                let keep = left == 0;
                left = left.saturating_sub(1);
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_user_and_ip: 3,
            per_ip: 5,
            registrations_per_ip: 2,
            sign_ins_per_ip: 2,
        }
    }

    fn ip(last: u8) -> IpAddr {
        [127, 0, 0, last].into()
    }

    #[test]
    fn failures_block_the_pair_not_the_name() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        for _ in 0..3 {
            t.attempt("alice", ip(1), now).unwrap().failed();
        }
        let wait = t.attempt("alice", ip(1), now).err().unwrap();
        assert_eq!(wait, FIRST_DELAY);
        t.attempt("alice", ip(2), now)
            .expect("the owner from elsewhere")
            .succeeded();
        t.attempt("bob", ip(1), now).unwrap().failed();
        t.attempt("carol", ip(1), now).unwrap().failed();
        assert!(
            t.attempt("dave", ip(1), now).is_err(),
            "the address used up its 5"
        );
        assert!(t.attempt("dave", ip(3), now).is_ok());
    }

    #[test]
    fn delays_grow_with_each_failure_and_are_forgotten() {
        let t = Throttle::new(Limits {
            per_ip: 1000,
            ..limits()
        });
        let mut now = Instant::now();
        for _ in 0..3 {
            t.attempt("alice", ip(1), now).unwrap().failed();
        }
        for expected in [60, 120, 240, 480, 900, 900] {
            let wait = t.attempt("alice", ip(1), now).err().unwrap();
            assert_eq!(wait, Duration::from_secs(expected));
            now += wait;
            t.attempt("alice", ip(1), now).unwrap().failed();
        }
        now += MAX_DELAY + FORGET_AFTER;
        for _ in 0..3 {
            t.attempt("alice", ip(1), now).unwrap().failed();
        }
        assert_eq!(
            t.attempt("alice", ip(1), now).err(),
            Some(FIRST_DELAY),
            "forgotten after a quiet time: the free failures are back"
        );
    }

    #[test]
    fn attempts_count_before_the_check_and_unsettled_ones_are_given_back() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        let pending: Vec<_> = (0..3)
            .map(|_| t.attempt("alice", ip(1), now).unwrap())
            .collect();
        assert!(
            t.attempt("alice", ip(1), now).is_err(),
            "three checks in flight"
        );
        drop(pending); // the server was busy: none was checked
        let a = t.attempt("alice", ip(1), now).expect("given back");
        a.succeeded();
        assert!(
            lock(&t.pairs).entries.is_empty(),
            "a right password clears the pair"
        );
        assert!(lock(&t.ips).entries.is_empty());
    }

    #[test]
    fn registrations_are_counted_per_address_per_window() {
        let t = Throttle::new(limits());
        let now = Instant::now();
        assert!(t.register(ip(1), now).is_ok());
        assert!(t.register(ip(1), now).is_ok());
        assert_eq!(t.register(ip(1), now), Err(REGISTRATION_WINDOW));
        assert!(t.register(ip(2), now).is_ok());
        assert!(t.register(ip(1), now + REGISTRATION_WINDOW).is_ok());
    }

    #[test]
    fn junk_names_are_not_keys_and_v6_counts_per_64() {
        let t = Throttle::new(Limits {
            per_ip: 2,
            ..limits()
        });
        let now = Instant::now();
        let v6 = |last: u16| IpAddr::V6([0x2001, 0xdb8, 0, 1, 0, 0, 0, last].into());
        t.attempt(&"x".repeat(10_000), v6(1), now).unwrap().failed();
        assert!(lock(&t.pairs).entries.is_empty());
        t.attempt("a b", v6(2), now).unwrap().failed();
        assert!(
            t.attempt("ok", v6(3), now).is_err(),
            "same /64: its 2 are used"
        );
    }

    #[test]
    fn tables_stay_bounded_and_evict_the_oldest() {
        let t = Throttle::new(Limits {
            per_ip: u32::MAX,
            ..limits()
        });
        let start = Instant::now();
        let first = ip(1);
        for _ in 0..3 {
            t.attempt("alice", first, start).unwrap().failed();
        }
        for i in 0..MAX_ENTRIES as u32 + 10 {
            let now = start + Duration::from_millis(u64::from(i));
            t.attempt(&format!("u{i}"), first, now).unwrap().failed();
            assert!(lock(&t.pairs).entries.len() <= MAX_ENTRIES);
        }
        assert!(
            t.attempt("alice", first, start + Duration::from_secs(1))
                .is_ok(),
            "the oldest entries went first"
        );
    }
}
