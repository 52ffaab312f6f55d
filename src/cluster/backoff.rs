//! How long to wait before the next connection attempt.
//!
//! The first retry comes quickly ([`RETRY_FIRST`]), for the blip that a
//! Redis restart is; each failure doubles the wait up to [`RETRY_MAX`],
//! PROTOCOL.md's "about every second", which also bounds how late a
//! returning Redis is noticed. Reaching "up" starts over.

use super::tuning::{RETRY_FIRST, RETRY_MAX};
use std::time::Duration;

/// The waits between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The wait after the next failure.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: RETRY_FIRST }
    }
}

impl Backoff {
    /// A backoff at its first, shortest wait.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The wait after a failure; the one after the next failure doubles.
    pub fn after_failure(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(RETRY_MAX);
        wait
    }

    /// The link came up: the next failure is retried quickly again.
    pub fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_about_a_second_and_start_over_when_up() {
        let mut backoff = Backoff::new();
        let waits: Vec<u128> = (0..7)
            .map(|_| backoff.after_failure().as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.after_failure(), RETRY_FIRST);
    }
}
