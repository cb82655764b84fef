//! Latency percentiles and throughput of one phase.
//!
//! Every latency is kept and sorted: a phase records at most a few hundred
//! thousand durations (8 bytes each), so exact percentiles cost nothing and
//! need no histogram dependency.

use std::time::Duration;

/// The latency distribution of a phase's timed sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LatencySummary {
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl LatencySummary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub(crate) fn from_samples(mut samples: Vec<Duration>) -> Option<LatencySummary> {
        samples.sort_unstable();
        let max = *samples.last()?;
        let total: Duration = samples.iter().sum();
        let count = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        Some(LatencySummary {
            p50: nearest_rank(&samples, 50),
            p90: nearest_rank(&samples, 90),
            p99: nearest_rank(&samples, 99),
            max,
            mean: total / count,
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty `samples`: the smallest
/// sample with at least `percent`% of the samples at or below it.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    // ceil(percent/100 * n), as a 1-based rank, clamped into the slice.
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Events per second: `events` over `wall`, 0 for an empty interval.
pub(crate) fn events_per_second(events: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        // u64 -> f64 loses precision only above 2^53 events.
        events as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank_over_unsorted_input() {
        // 1..=100 ms, shuffled by reversing: p50 is the 50th value, p99 the 99th.
        let samples: Vec<u64> = (1..=100).rev().collect();
        let summary = LatencySummary::from_samples(ms(&samples)).unwrap();
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p90, Duration::from_millis(90));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert_eq!(summary.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn small_samples_round_up_to_an_actual_sample() {
        let one = LatencySummary::from_samples(ms(&[7])).unwrap();
        assert_eq!(
            (one.p50, one.p99, one.max),
            (ms(&[7])[0], ms(&[7])[0], ms(&[7])[0])
        );
        // Three samples: p50 is rank 2, p90 and p99 are rank 3.
        let three = LatencySummary::from_samples(ms(&[30, 10, 20])).unwrap();
        assert_eq!(three.p50, Duration::from_millis(20));
        assert_eq!(three.p90, Duration::from_millis(30));
        assert_eq!(three.p99, Duration::from_millis(30));
        assert!(LatencySummary::from_samples(Vec::new()).is_none());
    }

    #[test]
    fn throughput_is_events_over_wall_time() {
        assert_eq!(events_per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(events_per_second(5, Duration::ZERO), 0.0);
    }
}
