//! What a window reports: event counts, and counts with a latency summary.

use std::time::Duration;

use super::histogram::Histogram;

/// The events counted in a window. Cheap to get from
/// [`RollingWindow::counts`](super::RollingWindow::counts).
///
/// ```
/// use palisade::window::Counts;
///
/// let c = Counts { successes: 6, failures: 3, timeouts: 1, ..Counts::default() };
/// assert_eq!(c.total(), 10);
/// assert_eq!(c.errors(), 4);
/// assert_eq!(c.error_percentage(), 40.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls rejected by a bulkhead (or another admission limit) before running.
    pub rejections: u64,
    /// Calls rejected by an open circuit breaker before running.
    pub short_circuits: u64,
    /// Successes, failures and timeouts whose latency reached the slow-call threshold.
    /// Always zero when no threshold is configured.
    pub slow_calls: u64,
}

impl Counts {
    /// The Hystrix health total: successes, failures, timeouts and rejections. Short
    /// circuits are left out, so an open breaker does not feed on its own rejections.
    pub fn total(&self) -> u64 {
        self.successes + self.failures + self.timeouts + self.rejections
    }

    /// Failures, timeouts and rejections.
    pub fn errors(&self) -> u64 {
        self.failures + self.timeouts + self.rejections
    }

    /// [`errors`](Self::errors) as a percentage (0 to 100) of [`total`](Self::total);
    /// 0.0 when the total is zero.
    pub fn error_percentage(&self) -> f64 {
        percentage(self.errors(), self.total())
    }

    /// The calls that ran: successes, failures and timeouts (the calls that have a
    /// latency).
    pub fn completed(&self) -> u64 {
        self.successes + self.failures + self.timeouts
    }

    /// [`slow_calls`](Self::slow_calls) as a percentage (0 to 100) of the
    /// [`completed`](Self::completed) calls; 0.0 when there are none.
    pub fn slow_call_percentage(&self) -> f64 {
        percentage(self.slow_calls, self.completed())
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.successes += other.successes;
        self.failures += other.failures;
        self.timeouts += other.timeouts;
        self.rejections += other.rejections;
        self.short_circuits += other.short_circuits;
        self.slow_calls += other.slow_calls;
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(mut self, other: Counts) -> Counts {
        self += other;
        self
    }
}

/// Sums counts, for example of the windows of several endpoints.
///
/// ```
/// use palisade::window::Counts;
///
/// let a = Counts { successes: 2, ..Counts::default() };
/// let b = Counts { failures: 1, ..Counts::default() };
/// let all: Counts = [a, b].into_iter().sum();
/// assert_eq!(all.total(), 3);
/// ```
impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), |acc, c| acc + c)
    }
}

fn percentage(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Counts and latency of a window at one instant, from
/// [`RollingWindow::snapshot`](super::RollingWindow::snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The events counted.
    pub counts: Counts,
    /// The latency of the successes, failures and timeouts counted.
    pub latency: LatencySummary,
}

/// The latency of the calls in a window: exact count, mean and maximum, and
/// percentiles read from the log-linear histogram (within 6.25 % or 0.5 µs of the
/// true nearest-rank value, whichever is larger; see the
/// [module docs](super#latency)). All zero when the window holds no latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many latencies were recorded (successes + failures + timeouts).
    pub count: u64,
    /// The mean latency (exact, to the nanosecond, for latencies up to about 4.9 hours;
    /// see the [module docs](super#latency)).
    pub mean: Duration,
    /// The largest latency (exact).
    pub max: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
}

impl LatencySummary {
    /// Summarises `count` latencies with sum `sum_nanos`, maximum `max_nanos`, binned
    /// in `hist`.
    pub(crate) fn from_parts(
        hist: &Histogram,
        count: u64,
        sum_nanos: u128,
        max_nanos: u64,
    ) -> Self {
        if count == 0 {
            return Self::default();
        }
        // Under a racing rollover the counters and the bins may disagree by a few
        // events; rank against what the bins hold so every percentile lands in a bin.
        let binned = hist.count();
        Self {
            count,
            mean: Duration::from_nanos((sum_nanos / u128::from(count)) as u64),
            max: Duration::from_nanos(max_nanos),
            p50: hist.percentile(50, binned, max_nanos),
            p90: hist.percentile(90, binned, max_nanos),
            p99: hist.percentile(99, binned, max_nanos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_zero_on_empty_counts() {
        let c = Counts::default();
        assert_eq!(c.error_percentage(), 0.0);
        assert_eq!(c.slow_call_percentage(), 0.0);
    }

    #[test]
    fn short_circuits_are_not_in_the_health_total() {
        let c = Counts {
            successes: 1,
            rejections: 1,
            short_circuits: 5,
            ..Counts::default()
        };
        assert_eq!(c.total(), 2);
        assert_eq!(c.errors(), 1);
        assert_eq!(c.error_percentage(), 50.0);
    }

    #[test]
    fn slow_call_percentage_is_over_completed_calls() {
        let c = Counts {
            successes: 3,
            failures: 1,
            rejections: 10,
            slow_calls: 1,
            ..Counts::default()
        };
        assert_eq!(c.slow_call_percentage(), 25.0);
    }
}
