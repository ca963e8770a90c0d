//! Wall-clock time for message timestamps and token expiry, turning it into tokio deadlines,
//! and the one timer wheel connections wait on ([`wheel`]).

pub mod wheel;

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
