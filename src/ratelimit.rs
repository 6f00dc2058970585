//! A token bucket: the per-session rate limit.
//!
//! Pure logic over an injected clock (`Instant`), so tests drive time by hand.

use std::time::Instant;

/// Allows `burst` messages at once and `per_sec` sustained.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens refilled per second; 0 disables the limit.
    per_sec: f64,
    /// Bucket capacity.
    burst: f64,
    /// Tokens available at `last`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            per_sec,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
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
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20, t0);
        assert!((0..20).all(|_| b.try_take(t0)), "a burst of 20 passes");
        assert!(!b.try_take(t0), "the 21st at once is refused");
        // 10 per second: after 0.5 s, five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| b.try_take(t1)).count(), 5);
    }

    #[test]
    fn never_exceeds_burst_after_idle() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn zero_rate_disables() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 0, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
    }
}
