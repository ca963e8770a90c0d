//! Rate limiting on the caller's clock (sans-IO: the time is passed in).

/// A token bucket on the caller's clock: `rate` per second, bursts of twice that.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    /// When a token was last asked for; [`NEVER`] before the first (16 bytes in every session,
    /// not 24 with an `Option`).
    last_ms: u64,
}

/// No token asked for yet: the bucket starts full.
const NEVER: u64 = u64::MAX;

impl Default for TokenBucket {
    fn default() -> Self {
        Self {
            tokens: 0.0,
            last_ms: NEVER,
        }
    }
}

impl TokenBucket {
    /// Takes one token at `now_ms` (the caller's clock) if `rate` allows it; 0 means unlimited.
    pub fn take(&mut self, now_ms: u64, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let (rate, burst) = (f64::from(rate), f64::from(rate) * 2.0);
        let elapsed = match self.last_ms {
            NEVER => burst / rate,
            last => now_ms.saturating_sub(last) as f64 / 1000.0,
        };
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::default();
        assert_eq!(
            (0..25).filter(|_| b.take(1_000, 10)).count(),
            20,
            "burst of twice the rate"
        );
        assert_eq!(
            (0..25).filter(|_| b.take(1_500, 10)).count(),
            5,
            "refilled at 10/s for 0.5 s"
        );
        let mut off = TokenBucket::default();
        assert!((0..10_000).all(|_| off.take(0, 0)));
    }
}
