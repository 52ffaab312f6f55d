//! Flood control: a per-connection token bucket that paces reading.
//!
//! A client that types faster than `--flood-rate` lines per second is not
//! cut off and loses nothing: the server simply stops taking its lines until
//! a token is back, so the surplus waits in the framer and then in the
//! kernel, and TCP backpressure slows the sender down. This module only does
//! the arithmetic; the server decides when to stop reading and when to look
//! again ([`TokenBucket::wait`]).

use std::time::{Duration, Instant};

/// Lines per second and bucket size, shared by every connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimit {
    /// Tokens added per second; 0 means no limit.
    pub rate: u32,
    /// The most tokens a bucket holds (and holds at connect).
    pub burst: u32,
}

/// One connection's tokens. Starts full, as PROTOCOL.md requires.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(limit: FloodLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(limit.burst.max(1)),
            refilled_at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, limit: FloodLimit, now: Instant) -> bool {
        if limit.rate == 0 {
            return true;
        }
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for a line that turned out not to be there.
    pub fn refund(&mut self, limit: FloodLimit) {
        if limit.rate != 0 {
            self.tokens = (self.tokens + 1.0).min(f64::from(limit.burst.max(1)));
        }
    }

    /// Takes `tokens` more for a reply that was expensive to send (PROTOCOL.md:
    /// "a reply of N lines takes N/100 tokens"); the bucket may go into
    /// debt, and the user's next lines wait until it is paid back.
    pub fn charge(&mut self, limit: FloodLimit, tokens: u32, now: Instant) {
        if limit.rate == 0 || tokens == 0 {
            return;
        }
        self.refill(limit, now);
        self.tokens -= f64::from(tokens);
    }

    /// How long until the next token (zero if one is there now).
    pub fn wait(&self, limit: FloodLimit, now: Instant) -> Duration {
        if limit.rate == 0 {
            return Duration::ZERO;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let tokens = self.tokens + elapsed * f64::from(limit.rate);
        if tokens >= 1.0 {
            Duration::ZERO
        } else {
            // Rounded up to a whole nanosecond: a wait that rounds to zero
            // would wake the reader before its token exists.
            let nanos = ((1.0 - tokens) / f64::from(limit.rate) * 1e9).ceil();
            Duration::from_nanos((nanos as u64).max(1))
        }
    }

    fn refill(&mut self, limit: FloodLimit, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let burst = f64::from(limit.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(limit.rate)).min(burst);
        self.refilled_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: FloodLimit = FloodLimit { rate: 10, burst: 5 };

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(LIMIT, start);
        for _ in 0..5 {
            assert!(bucket.try_take(LIMIT, start));
        }
        assert!(!bucket.try_take(LIMIT, start));
        let wait = bucket.wait(LIMIT, start);
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        assert!(!bucket.try_take(LIMIT, start + Duration::from_millis(50)));
        assert!(bucket.try_take(LIMIT, start + Duration::from_millis(101)));
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(LIMIT, start);
        let later = start + Duration::from_secs(100);
        let taken = (0..100).filter(|_| bucket.try_take(LIMIT, later)).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let off = FloodLimit { rate: 0, burst: 1 };
        let now = Instant::now();
        let mut bucket = TokenBucket::full(off, now);
        assert!((0..10_000).all(|_| bucket.try_take(off, now)));
        assert_eq!(bucket.wait(off, now), Duration::ZERO);
    }

    #[test]
    fn a_missing_token_is_never_a_zero_wait() {
        let fast = FloodLimit {
            rate: 1_000_000,
            burst: 1,
        };
        let now = Instant::now();
        let mut bucket = TokenBucket::full(fast, now);
        assert!(bucket.try_take(fast, now));
        bucket.tokens = 1.0 - 1e-12;
        assert!(!bucket.try_take(fast, now));
        assert!(bucket.wait(fast, now) >= Duration::from_nanos(1));
    }

    #[test]
    fn a_charge_can_go_into_debt_and_is_paid_back_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(LIMIT, start);
        bucket.charge(LIMIT, 20, start);
        assert!(!bucket.try_take(LIMIT, start));
        // 5 - 20 = -15 tokens: the next one is there after 1.6 s at 10/s.
        let wait = bucket.wait(LIMIT, start);
        assert!(wait > Duration::from_millis(1590) && wait <= Duration::from_millis(1600));
        assert!(!bucket.try_take(LIMIT, start + Duration::from_millis(1500)));
        assert!(bucket.try_take(LIMIT, start + Duration::from_millis(1601)));
    }

    #[test]
    fn charges_cost_nothing_without_a_limit() {
        let off = FloodLimit { rate: 0, burst: 1 };
        let now = Instant::now();
        let mut bucket = TokenBucket::full(off, now);
        bucket.charge(off, 1000, now);
        assert!(bucket.try_take(off, now));
    }

    #[test]
    fn refund_restores_a_token() {
        let now = Instant::now();
        let mut bucket = TokenBucket::full(LIMIT, now);
        for _ in 0..5 {
            bucket.try_take(LIMIT, now);
        }
        bucket.refund(LIMIT);
        assert!(bucket.try_take(LIMIT, now));
    }
}
