//! Wall-clock time for message timestamps and token expiry, turning it into tokio deadlines,
//! compact instants for connections to keep ([`Stamp`]), and the one timer wheel connections
//! wait on ([`wheel`]).

pub mod wheel;

use std::ops::Add;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `Instant` of a wall-clock time in ms since the epoch (now, if it has passed).
pub fn instant_at(epoch_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(epoch_ms.saturating_sub(now_ms()))
}

/// A deadline that never comes in practice, for `select!` branches with nothing to wait for.
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// An instant in 8 bytes where tokio's takes 16: microseconds since the process first asked.
/// What every connection keeps (when it last read, wrote, started) for its deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    /// Now.
    pub fn now() -> Self {
        Self::at(Instant::now())
    }

    /// `instant` (the process's first stamp, if it is earlier).
    pub fn at(instant: Instant) -> Self {
        let micros = instant.saturating_duration_since(stamp_base()).as_micros();
        Self(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// As a tokio instant.
    pub fn instant(self) -> Instant {
        stamp_base() + Duration::from_micros(self.0)
    }
}

impl Add<Duration> for Stamp {
    type Output = Instant;

    fn add(self, later: Duration) -> Instant {
        self.instant() + later
    }
}

/// Where stamps count from.
fn stamp_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_its_instant_to_the_microsecond() {
        let first = Stamp::now();
        let now = Instant::now();
        let later = now + Duration::from_millis(1500);
        let (a, b) = (Stamp::at(now), Stamp::at(later));
        assert!(first <= a && a < b);
        // Before the first stamp is the first stamp.
        assert_eq!(Stamp::at(stamp_base() - Duration::from_millis(1)), Stamp(0));
        assert!(a.instant() <= now && now - a.instant() < Duration::from_micros(1));
        assert_eq!(
            b + Duration::from_secs(1) - (a + Duration::from_secs(1)),
            later - now
        );
    }
}
