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
//! Any condition that holds trips the circuit; the first one found names the reason.
//!
//! **Which successes can trip.** A success lowers both percentages and ends a run of
//! failures, so it can make a condition hold in only two ways: it is the call that
//! brings the window to `minimum_requests`, or calls left the window since the last
//! check (a time window's bucket rolled out), leaving a higher share of errors or slow
//! calls behind. [`TripPolicy::success_check`] turns the sample of a check that did not
//! trip into which successes must check next; the shell (`shared.rs`) checks on every
//! failure and slow call, and on the successes this names.

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

/// Which successes must check the trip conditions, after a check that did not trip
/// (and until the next failure, which is checked on its own and makes the next success
/// check again). See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SuccessCheck {
    /// Every success: the window is below the volume, and successes alone would trip
    /// the circuit at the one that reaches it.
    Every,
    /// The first success after the window lets calls go: the window holds errors or
    /// slow calls, whose share rises when older calls leave it.
    AfterRoll,
    /// None: no success can make a condition hold (no watched error or slow call in the
    /// window, or no percentage configured).
    Never,
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

    /// Which successes must check the conditions next, after a check of `s` found
    /// that none holds. Successes lower both percentages, so below the volume only the
    /// one that reaches it can trip, and only if the percentages still hold then.
    pub(crate) fn success_check(&self, s: &TripSample) -> SuccessCheck {
        if !self.reads_window() {
            return SuccessCheck::Never;
        }
        if s.total < self.minimum_requests {
            let successes = self.minimum_requests - s.total;
            let at_volume = TripSample {
                total: self.minimum_requests,
                completed: s.completed.saturating_add(successes),
                consecutive_failures: 0,
                ..*s
            };
            if self.verdict(&at_volume).is_some() {
                return SuccessCheck::Every;
            }
        }
        let watched_errors = self.error_percentage.is_some() && s.errors > 0;
        let watched_slow = self.slow_call_percentage.is_some() && s.slow > 0;
        if watched_errors || watched_slow {
            SuccessCheck::AfterRoll
        } else {
            SuccessCheck::Never
        }
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

    fn full(total: u64, errors: u64, slow: u64) -> TripSample {
        TripSample {
            total,
            errors,
            completed: total,
            slow,
            consecutive_failures: 0,
        }
    }

    #[test]
    fn below_the_volume_every_success_checks_when_successes_alone_would_trip_at_it() {
        let p = hystrix();
        // 10 errors of 19: the 20th call, a success, makes 10 of 20 = 50 %.
        assert_eq!(p.success_check(&full(19, 10, 0)), SuccessCheck::Every);
        assert_eq!(p.success_check(&full(2, 10, 0)), SuccessCheck::Every);
        // 9 errors can reach 45 % at most once the volume is there: only a roll (which
        // may take successes out) or a failure can change that.
        assert_eq!(p.success_check(&full(19, 9, 0)), SuccessCheck::AfterRoll);
        assert_eq!(p.success_check(&full(5, 0, 0)), SuccessCheck::Never);
    }

    #[test]
    fn at_the_volume_only_a_roll_can_raise_a_watched_share() {
        let p = hystrix();
        assert_eq!(p.success_check(&full(40, 19, 0)), SuccessCheck::AfterRoll);
        assert_eq!(p.success_check(&full(40, 0, 0)), SuccessCheck::Never);
        // Slow calls are not watched by this policy.
        assert_eq!(p.success_check(&full(40, 0, 30)), SuccessCheck::Never);
        let slow = TripPolicy {
            error_percentage: None,
            slow_call_percentage: Some(50.0),
            ..hystrix()
        };
        assert_eq!(slow.success_check(&full(40, 0, 3)), SuccessCheck::AfterRoll);
        assert_eq!(slow.success_check(&full(10, 3, 10)), SuccessCheck::Every);
        assert_eq!(slow.success_check(&full(40, 30, 0)), SuccessCheck::Never);
    }

    #[test]
    fn a_policy_without_percentages_never_checks_successes() {
        let p = TripPolicy {
            error_percentage: None,
            consecutive_failures: Some(3),
            ..hystrix()
        };
        assert_eq!(p.success_check(&full(19, 19, 0)), SuccessCheck::Never);
    }

    proptest::proptest! {
        /// `success_check` is exact: a run of successes alone trips (before any roll)
        /// exactly when it says `Every`, and never when it says `Never`.
        #[test]
        fn success_check_agrees_with_running_the_successes(
            minimum in 0u64..30,
            threshold in 0.0f64..=100.0,
            slow_threshold in proptest::option::of(0.0f64..=100.0),
            total in 0u64..40,
            errors_share in 0.0f64..=1.0,
            slow_share in 0.0f64..=1.0,
        ) {
            let p = TripPolicy {
                minimum_requests: minimum,
                error_percentage: Some(threshold),
                slow_call_percentage: slow_threshold,
                consecutive_failures: None,
            };
            let errors = (total as f64 * errors_share) as u64;
            let slow = (total as f64 * slow_share) as u64;
            let s = full(total, errors, slow);
            proptest::prop_assume!(p.verdict(&s).is_none());
            let successes_trip = (1..=40).any(|k| p.verdict(&full(total + k, errors, slow)).is_some());
            let check = p.success_check(&s);
            proptest::prop_assert_eq!(check == SuccessCheck::Every, successes_trip);
            if check == SuccessCheck::Never {
                proptest::prop_assert!(errors == 0 && (slow == 0 || slow_threshold.is_none()));
            }
        }
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
