//! Reducing many measurements to the few figures the tools print.
//!
//! Latencies of millions of deliveries go into an HDR histogram
//! (microseconds, 3 significant digits), so percentiles cost a few KiB and
//! no sorting; the stress scenarios, with thousands of samples, sort them
//! and use [`percentile`]. Repeated runs become median and min–max with
//! [`spread`], because one run on a shared 2-core machine is an anecdote.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks (60 s, in µs); later ones clamp.
pub const MAX_US: u64 = 60_000_000;

/// A histogram for latencies in microseconds, 1 µs to [`MAX_US`].
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits is a valid configuration.
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// Records a latency given in nanoseconds, clamped into the histogram's
/// range (so recording cannot fail).
pub fn record_ns(hist: &mut Histogram<u64>, latency_ns: u64) {
    let us = (latency_ns / 1000).clamp(1, MAX_US);
    let _ = hist.record(us);
}

/// Percentile (0..=100) of sorted durations, nearest rank; zero if empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median, minimum and maximum of repeated measurements (NaNs ignored).
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((median, v[0], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[f64::NAN]), None);
    }

    #[test]
    fn percentiles_of_sorted_durations() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&ms, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&ms, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn out_of_range_latencies_are_clamped() {
        let mut h = new_histogram();
        record_ns(&mut h, 0);
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_US);
    }
}
