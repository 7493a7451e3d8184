//! When a closed circuit trips: the combinable trip conditions, as a pure function of
//! a sample of the statistics.
//!
//! - **Error percentage** (Hystrix `ErrorPercentThreshold` with `RequestVolumeThreshold`):
//!   trips when `total >= minimum_requests` **and** `errors * 100 >= threshold * total`.
//!   With a volume of 20, the 19th failed call in a fresh window does not trip; the 20th
//!   does.
//! - **Slow-call percentage**: slow calls (calls that took at least the slow-call
//!   threshold) as a share of the calls that ran (bulkhead rejections never ran), with
//!   the same minimum volume.
//! - **Consecutive failures**: trips on the `n`-th failure in a row, whatever the volume.
//!
//! Any condition that holds trips the circuit; the first one found names the reason. The
//! shell evaluates them only when a failure or a slow call is recorded: a success can
//! neither raise the error percentage nor extend a run of failures.

use super::circuit::TransitionReason;

/// A sample of the statistics the conditions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TripSample {
    /// Calls in the window that count toward the volume.
    pub(crate) total: u64,
    /// Of those, the errors (failures, timeouts, bulkhead rejections).
    pub(crate) errors: u64,
    /// Calls in the window that ran (successes, failures, timeouts): the slow-call
    /// percentage's denominator.
    pub(crate) completed: u64,
    /// Of those, the slow calls.
    pub(crate) slow: u64,
    /// Failures in a row, right now.
    pub(crate) consecutive_failures: u32,
}

/// The configured trip conditions. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TripPolicy {
    pub(crate) minimum_requests: u64,
    pub(crate) error_percentage: Option<f64>,
    pub(crate) slow_call_percentage: Option<f64>,
    pub(crate) consecutive_failures: Option<u32>,
}

impl TripPolicy {
    /// Whether the sample trips the circuit, and why.
    pub(crate) fn verdict(&self, s: &TripSample) -> Option<TransitionReason> {
        let volume = s.total >= self.minimum_requests && s.total > 0;
        let reached =
            |count: u64, of: u64, threshold: f64| count as f64 * 100.0 >= threshold * of as f64;
        if self.run_trips(s.consecutive_failures) {
            return Some(TransitionReason::ConsecutiveFailures);
        }
        if let Some(threshold) = self.error_percentage {
            if volume && s.errors > 0 && reached(s.errors, s.total, threshold) {
                return Some(TransitionReason::ErrorPercentage);
            }
        }
        if let Some(threshold) = self.slow_call_percentage {
            if volume && s.slow > 0 && reached(s.slow, s.completed, threshold) {
                return Some(TransitionReason::SlowCallPercentage);
            }
        }
        None
    }

    /// Whether any condition reads the window (a percentage is configured).
    pub(crate) fn reads_window(&self) -> bool {
        self.error_percentage.is_some() || self.slow_call_percentage.is_some()
    }

    /// Whether a run of `consecutive_failures` trips on its own.
    pub(crate) fn run_trips(&self, consecutive_failures: u32) -> bool {
        self.consecutive_failures
            .is_some_and(|n| consecutive_failures >= n)
    }

    /// Whether any condition reads the slow-call count.
    pub(crate) fn watches_slow_calls(&self) -> bool {
        self.slow_call_percentage.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hystrix() -> TripPolicy {
        TripPolicy {
            minimum_requests: 20,
            error_percentage: Some(50.0),
            slow_call_percentage: None,
            consecutive_failures: None,
        }
    }

    fn sample(total: u64, errors: u64) -> TripSample {
        TripSample {
            total,
            errors,
            ..TripSample::default()
        }
    }

    #[test]
    fn error_percentage_needs_the_volume_and_not_one_call_less() {
        let p = hystrix();
        assert_eq!(p.verdict(&sample(19, 19)), None);
        assert_eq!(
            p.verdict(&sample(20, 20)),
            Some(TransitionReason::ErrorPercentage)
        );
    }

    #[test]
    fn error_percentage_trips_at_the_threshold_and_not_below() {
        let p = hystrix();
        assert_eq!(p.verdict(&sample(40, 19)), None);
        assert_eq!(
            p.verdict(&sample(40, 20)),
            Some(TransitionReason::ErrorPercentage)
        );
    }

    #[test]
    fn zero_percent_threshold_still_needs_an_error() {
        let p = TripPolicy {
            error_percentage: Some(0.0),
            ..hystrix()
        };
        assert_eq!(p.verdict(&sample(30, 0)), None);
        assert!(p.verdict(&sample(30, 1)).is_some());
    }

    #[test]
    fn slow_calls_and_consecutive_failures_trip_independently() {
        let p = TripPolicy {
            minimum_requests: 10,
            error_percentage: None,
            slow_call_percentage: Some(30.0),
            consecutive_failures: Some(3),
        };
        let slow = |total, slow| TripSample {
            total,
            completed: total,
            slow,
            ..TripSample::default()
        };
        assert_eq!(p.verdict(&slow(10, 2)), None);
        assert_eq!(
            p.verdict(&slow(10, 3)),
            Some(TransitionReason::SlowCallPercentage)
        );
        let run = TripSample {
            consecutive_failures: 3,
            ..TripSample::default()
        };
        assert_eq!(p.verdict(&run), Some(TransitionReason::ConsecutiveFailures));
    }
}
