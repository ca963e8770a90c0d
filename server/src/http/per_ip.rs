//! The per-client-address connection cap (`--max-connections-per-ip`): open connections
//! counted per address, one entry per address with connections open, removed at zero.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address (IPv6 per /64: one host usually owns a whole /64).
///
/// A `Mutex` over a `HashMap`: every access is one short update at connection start or end,
/// never held across an await, so contention stays far below a connection's other costs.
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it gives its place back.
pub struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    /// A table allowing `max` connections per address (0: no cap).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip`, or `None` when `ip` has its maximum open already.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = key(ip);
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if self.max > 0 && *count >= self.max {
            // The entry existed before (its count is at least max > 0): nothing left behind.
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Addresses with connections open (for tests and stats).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding it leaves consistent counts: every update is one statement.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6 (SockJS sessions
/// are counted the same way).
pub(super) fn key(ip: IpAddr) -> IpAddr {
    match super::proxy::canonical(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_alone_and_forgets_it_at_zero() {
        let t = PerIp::new(2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let a1 = t.try_acquire(a).unwrap();
        let a2 = t.try_acquire(a).unwrap();
        assert!(t.try_acquire(a).is_none());
        let b1 = t.try_acquire(b).expect("another address is not affected");
        drop(a1);
        let a3 = t.try_acquire(a).expect("a place was given back");
        drop((a2, a3, b1));
        assert_eq!(
            t.addresses(),
            0,
            "no entry kept for addresses without connections"
        );
    }

    #[test]
    fn v6_counts_per_64_and_zero_means_no_cap() {
        let t = PerIp::new(1);
        let v6 = |last: u16| IpAddr::V6([0x2001, 0xdb8, 0, 1, 0, 0, 0, last].into());
        let _one = t.try_acquire(v6(1)).unwrap();
        assert!(t.try_acquire(v6(2)).is_none());
        let open = PerIp::new(0);
        let slots: Vec<_> = (0..100).map(|_| open.try_acquire(v6(1)).unwrap()).collect();
        assert_eq!(slots.len(), 100);
    }
}
