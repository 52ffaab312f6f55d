//! Counting what one load step sent and what arrived, and how late.
//!
//! Counts are kept beside the latency histogram so a run can say not only
//! how fast lines arrived but whether they all did, exactly once and in
//! order.

use hdrhistogram::Histogram;

use crate::stats;

/// What one step sent and what arrived: kept by a [`Tally`] as the step
/// runs, reported in its [`StepResult`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Marked lines written (or queued) by senders.
    pub sent: u64,
    /// Lines a sender's full queue refused.
    pub send_dropped: u64,
    /// Deliveries the run should see: sent lines times their receivers.
    pub expected: u64,
    /// Marked lines of this step received, over all clients.
    pub received: u64,
    /// Marked lines of an earlier step that arrived late.
    pub stale: u64,
    /// Lines out of order or duplicated for their (receiver, sender) pair.
    pub misordered: u64,
}

/// Running counters of one step (one rate held for `--duration`).
#[derive(Debug)]
pub struct Tally {
    /// The step these counters belong to (lines of other steps are stale).
    pub step: u32,
    /// Send-to-receive latency of every delivery, in µs.
    pub hist: Histogram<u64>,
    /// What was sent and what arrived so far.
    pub counts: Counts,
    /// Nanoseconds (process clock) of the last delivery.
    pub last_rx_ns: u64,
}

impl Tally {
    /// Empty counters for step `step`.
    pub fn new(step: u32) -> Self {
        Tally {
            step,
            hist: stats::new_histogram(),
            counts: Counts::default(),
            last_rx_ns: 0,
        }
    }

    /// Records one delivery's latency.
    pub fn record_latency(&mut self, latency_ns: u64) {
        stats::record_ns(&mut self.hist, latency_ns);
    }
}

/// What one step achieved, in the units the report prints.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// The step's number within its session (0 for a single step).
    pub step: u32,
    /// Target lines/s.
    pub rate: f64,
    /// Lines/s the senders actually managed (below `rate` when the tool or
    /// its socket buffers could not keep the schedule).
    pub achieved_rate: f64,
    /// What the step sent and what arrived.
    pub counts: Counts,
    /// Receivers whose count differs from what they should have received.
    pub bad_receivers: u64,
    /// Connections lost during the step.
    pub lost_clients: u64,
    /// Received deliveries per second of the step.
    pub deliveries_per_s: f64,
    /// Median latency over the step's deliveries, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile latency, ms.
    pub p999_ms: f64,
    /// Highest latency, ms.
    pub max_ms: f64,
    /// Seconds after the last send until everything arrived (or grace ran out).
    pub drain_s: f64,
    /// Seconds the step took, grace included.
    pub elapsed_s: f64,
    /// This tool's own CPU use during the step, in % of one core. Near 100
    /// means the figures are bounded by the load generator, not the server.
    pub tool_cpu_pct: f64,
    /// CPU seconds each watched process used during the step (see
    /// `ServerView::watch`; NaN where `/proc` was unreadable).
    pub watched_cpu_s: Vec<f64>,
    /// CPU seconds the whole machine was busy during the step, all cores
    /// together (NaN if `/proc/stat` was unreadable).
    pub machine_busy_s: f64,
}

impl StepResult {
    /// Fills the latency and count fields from a finished tally.
    pub fn from_tally(t: &Tally, rate: f64, window_s: f64) -> Self {
        let q = |p: f64| t.hist.value_at_quantile(p) as f64 / 1000.0;
        StepResult {
            step: t.step,
            rate,
            counts: t.counts,
            deliveries_per_s: if window_s > 0.0 {
                t.counts.received as f64 / window_s
            } else {
                0.0
            },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: t.hist.max() as f64 / 1000.0,
            ..StepResult::default()
        }
    }

    /// Share of expected deliveries that arrived (1.0 when none expected).
    pub fn delivered_fraction(&self) -> f64 {
        let c = &self.counts;
        if c.expected == 0 {
            1.0
        } else {
            c.received as f64 / c.expected as f64
        }
    }

    /// The `--check` verdict: every expected line arrived, exactly once, in
    /// order, at every receiver, and nothing was refused or lost.
    pub fn is_perfect(&self) -> bool {
        let c = &self.counts;
        c.sent > 0
            && c.received == c.expected
            && c.send_dropped == 0
            && c.misordered == 0
            && self.bad_receivers == 0
            && self.lost_clients == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_in_ms() {
        let mut t = Tally::new(0);
        for ms in 1..=100u64 {
            t.record_latency(ms * 1_000_000);
        }
        t.counts.received = 100;
        t.counts.expected = 100;
        let r = StepResult::from_tally(&t, 10.0, 1.0);
        assert!((r.p50_ms - 50.0).abs() < 0.1, "{}", r.p50_ms);
        assert!((r.p99_ms - 99.0).abs() < 0.1, "{}", r.p99_ms);
        assert_eq!(r.delivered_fraction(), 1.0);
    }
}
