//! When to write the outboxes: now, or a little later so that one `write`
//! carries several lines.
//!
//! Each loopback `write` costs a few microseconds of the loop's CPU however
//! little it carries, so while large fan-outs come thick and fast, holding
//! a flush for up to `--flush-window-us` lets the lines arriving meanwhile
//! share one write per recipient, and the CPU per delivery falls. But
//! holding only pays when lines really do arrive within the window: at 200
//! lines/s across a thousand users each line still reaches each outbox
//! alone, and holding merely delays it. So the policy measures what holding
//! buys:
//!
//! - it considers holding only while the room is busy with large fan-outs
//!   (at least [`BUSY_FANOUTS_PER_TICK`] flushes of [`LARGE_FANOUT`]
//!   outboxes or more in the previous tick), as before;
//! - after each held flush it notes the lines per write that flush carried,
//!   smoothed over the last few;
//! - it keeps holding while held flushes carry at least
//!   [`MIN_LINES_PER_HELD_WRITE`] lines per write on average, and otherwise
//!   flushes at once, holding just one flush per [`FLUSH_PROBE_EVERY`] to
//!   find out whether the load changed.
//!
//! Pure bookkeeping: the loop tells it what it flushed, and asks.

use crate::tuning::{
    BUSY_FANOUTS_PER_TICK, FLUSH_PROBE_EVERY, LARGE_FANOUT, MIN_LINES_PER_HELD_WRITE,
};
use std::time::{Duration, Instant};

/// The flush window's state.
#[derive(Debug)]
pub struct FlushPolicy {
    /// `--flush-window-us`: the longest a flush may be held; zero never holds.
    window: Duration,
    /// When the held flush must happen, while one is held.
    due: Option<Instant>,
    /// Large fan-outs flushed during the current tick.
    fanouts_this_tick: u32,
    /// Large fan-outs flushed during the previous tick.
    fanouts_last_tick: u32,
    /// Lines per write of recent held flushes, smoothed.
    held_lines_per_write: f64,
    /// The flush being prepared was held (its figure counts).
    holding: bool,
    /// When a flush was last held only to test whether holding pays.
    last_probe: Option<Instant>,
    /// The running total of deliveries at the last flush.
    deliveries_at_last_flush: u64,
}

impl FlushPolicy {
    /// A policy holding flushes for at most `window`.
    pub fn new(window: Duration) -> FlushPolicy {
        FlushPolicy {
            window,
            due: None,
            fanouts_this_tick: 0,
            fanouts_last_tick: 0,
            // Optimistic: the first busy spell holds, and measures.
            held_lines_per_write: MIN_LINES_PER_HELD_WRITE,
            holding: false,
            last_probe: None,
            deliveries_at_last_flush: 0,
        }
    }

    /// A new tick began.
    pub fn tick(&mut self) {
        self.fanouts_last_tick = std::mem::take(&mut self.fanouts_this_tick);
    }

    /// When a held flush must happen, for the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// Whether to write the `pending` outboxes now.
    pub fn due(&mut self, pending: usize, now: Instant) -> bool {
        if pending == 0 {
            return false;
        }
        let busy = self.fanouts_last_tick >= BUSY_FANOUTS_PER_TICK;
        if self.window.is_zero() || pending < LARGE_FANOUT || !busy {
            self.due = None;
            self.holding = false;
            return true;
        }
        if let Some(due) = self.due {
            if now >= due {
                self.due = None;
                return true;
            }
            return false;
        }
        let pays = self.held_lines_per_write >= MIN_LINES_PER_HELD_WRITE;
        let probe = self
            .last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= FLUSH_PROBE_EVERY);
        if !pays && !probe {
            self.holding = false;
            return true;
        }
        if !pays {
            self.last_probe = Some(now);
        }
        self.due = Some(now + self.window);
        self.holding = true;
        false
    }

    /// The loop wrote `written` outboxes; `deliveries` is the running total
    /// of lines queued to recipients.
    pub fn flushed(&mut self, written: usize, deliveries: u64) {
        let lines = deliveries.saturating_sub(self.deliveries_at_last_flush);
        self.deliveries_at_last_flush = deliveries;
        if written >= LARGE_FANOUT {
            self.fanouts_this_tick += 1;
        }
        if std::mem::take(&mut self.holding) && written > 0 {
            let per_write = lines as f64 / written as f64;
            self.held_lines_per_write = (self.held_lines_per_write + per_write) / 2.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);

    /// A policy whose previous tick was busy with large fan-outs.
    fn busy() -> FlushPolicy {
        let mut policy = FlushPolicy::new(WINDOW);
        policy.flushed(LARGE_FANOUT, LARGE_FANOUT as u64);
        policy.flushed(LARGE_FANOUT, 2 * LARGE_FANOUT as u64);
        policy.tick();
        policy
    }

    #[test]
    fn a_quiet_room_never_waits() {
        let mut policy = FlushPolicy::new(WINDOW);
        assert!(policy.due(1000, Instant::now()));
        assert!(!policy.due(0, Instant::now()), "nothing to flush");
        let mut off = FlushPolicy::new(Duration::ZERO);
        off.flushed(LARGE_FANOUT, 10_000);
        off.flushed(LARGE_FANOUT, 20_000);
        off.tick();
        assert!(off.due(1000, Instant::now()), "window 0 never holds");
    }

    #[test]
    fn holding_goes_on_while_it_coalesces() {
        let mut policy = busy();
        let mut now = Instant::now();
        let mut deliveries = 2 * LARGE_FANOUT as u64;
        for _ in 0..20 {
            assert!(!policy.due(1000, now), "held");
            now += WINDOW;
            assert!(policy.due(1000, now), "flushed when due");
            // Five lines reached each of the 1000 outboxes meanwhile.
            deliveries += 5000;
            policy.flushed(1000, deliveries);
        }
    }

    #[test]
    fn holding_stops_when_it_buys_nothing_and_probes_rarely() {
        let mut policy = busy();
        let start = Instant::now();
        let mut now = start;
        let mut deliveries = 2 * LARGE_FANOUT as u64;
        let mut held = 0;
        // 200 lines/s: every 5 ms one line reaches each of 1000 outboxes.
        for _ in 0..400 {
            if !policy.due(1000, now) {
                held += 1;
                now += WINDOW;
                assert!(policy.due(1000, now));
            }
            deliveries += 1000;
            policy.flushed(1000, deliveries);
            now += Duration::from_millis(5);
            if policy.fanouts_this_tick >= 20 {
                policy.tick();
            }
        }
        // 2 s: the first held flushes, then one probe per second.
        assert!(held <= 4, "held {held} of 400 flushes");
    }
}
