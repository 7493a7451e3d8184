//! Outlier ejection across the endpoint set, after Envoy's outlier detection.
//!
//! An endpoint is *ejected* (kept out of the picker's candidates) when
//! - it fails [`consecutive_failures`](OutlierDetectionBuilder::consecutive_failures) calls
//!   in a row, or
//! - at the end of an [`interval`](OutlierDetectionBuilder::interval), its success rate is
//!   below `mean - stdev_factor × stdev` of the rates of all endpoints that served at
//!   least [`success_rate_request_volume`](OutlierDetectionBuilder::success_rate_request_volume)
//!   calls in the interval (computed only when at least
//!   [`success_rate_minimum_hosts`](OutlierDetectionBuilder::success_rate_minimum_hosts)
//!   endpoints qualify).
//!
//! The *n*-th ejection of an endpoint lasts `base_ejection_time × n`, capped at
//! `max_ejection_time`; every interval an endpoint spends un-ejected lowers *n* by one, so
//! a recovered endpoint is forgiven over time. Ejection never takes more than
//! `max_ejection_percent` of the members out at once (rounded down: with 10 endpoints and
//! 10 %, one at most). When fewer than `panic_threshold_percent` of the members are
//! healthy, the balancer is in *panic* and picks among all ready endpoints, ejected or not,
//! as Envoy does: sending to possibly bad endpoints beats overloading the few good ones.
//!
//! Outcomes are classified by the balancer's [`Classify`](crate::classify::Classify);
//! requests dropped before completing count as nothing. The decisions below are plain
//! functions of counts and a clock reading; the balancer applies them.

use std::time::Duration;

use crate::error::ConfigError;

/// Outlier-detection settings. Build with [`OutlierDetection::builder`]; the defaults are
/// Envoy's.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub(crate) consecutive_failures: u32,
    pub(crate) interval: Duration,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
    pub(crate) success_rate: Option<SuccessRate>,
    pub(crate) panic_threshold_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SuccessRate {
    pub(crate) minimum_hosts: usize,
    pub(crate) request_volume: u32,
    pub(crate) stdev_factor: f64,
}

impl OutlierDetection {
    /// A builder starting from the defaults.
    pub fn builder() -> OutlierDetectionBuilder {
        OutlierDetectionBuilder::default()
    }

    /// Consecutive failures that eject an endpoint (`0`: this check is off).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How often success rates are compared and ejections reviewed.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most members ejected at once, in percent (rounded down).
    pub fn max_ejection_percent(&self) -> u32 {
        self.max_ejection_percent
    }

    /// How long the `times`-th ejection of one endpoint lasts, in nanoseconds.
    pub(crate) fn ejection_nanos(&self, times: u32) -> u64 {
        let base = super::nanos(self.base_ejection_time);
        let max = super::nanos(self.max_ejection_time);
        base.saturating_mul(times.max(1) as u64).min(max)
    }

    /// Whether one more endpoint may be ejected when `ejected` of `members` already are.
    pub(crate) fn may_eject(&self, ejected: usize, members: usize) -> bool {
        (ejected + 1) * 100 <= members * self.max_ejection_percent as usize
    }

    /// Whether `healthy` of `members` is below the panic threshold.
    pub(crate) fn in_panic(&self, healthy: usize, members: usize) -> bool {
        members > 0 && healthy * 100 < members * self.panic_threshold_percent as usize
    }

    /// The success rate below which an endpoint is an outlier, given `(successes, total)`
    /// per endpoint for the interval; `None` when the check is off or too few endpoints
    /// served enough calls.
    pub(crate) fn success_rate_floor(
        &self,
        samples: impl Iterator<Item = (u32, u32)> + Clone,
    ) -> Option<f64> {
        let sr = self.success_rate?;
        let qualifying = samples.filter(move |&(_, total)| total >= sr.request_volume && total > 0);
        let mut n = 0usize;
        let mut sum = 0.0;
        for (ok, total) in qualifying.clone() {
            n += 1;
            sum += ok as f64 / total as f64;
        }
        if n < sr.minimum_hosts || n == 0 {
            return None;
        }
        let mean = sum / n as f64;
        let var = qualifying
            .map(|(ok, total)| {
                let d = ok as f64 / total as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n as f64;
        Some(mean - sr.stdev_factor * var.sqrt())
    }

    /// Whether an endpoint with this interval's counts is a success-rate outlier.
    pub(crate) fn is_outlier(&self, floor: f64, successes: u32, total: u32) -> bool {
        match self.success_rate {
            Some(sr) if total >= sr.request_volume && total > 0 => {
                (successes as f64 / total as f64) < floor
            }
            _ => false,
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetectionBuilder::default()
            .build()
            .expect("the defaults are valid")
    }
}

/// Builds an [`OutlierDetection`]; every setter's name is the field a
/// [`ConfigError`] reports.
#[derive(Debug, Clone)]
pub struct OutlierDetectionBuilder {
    consecutive_failures: u32,
    interval: Duration,
    base_ejection_time: Duration,
    max_ejection_time: Duration,
    max_ejection_percent: u32,
    success_rate: bool,
    success_rate_minimum_hosts: usize,
    success_rate_request_volume: u32,
    success_rate_stdev_factor: f64,
    panic_threshold_percent: u32,
}

impl Default for OutlierDetectionBuilder {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate: true,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
            panic_threshold_percent: 50,
        }
    }
}

impl OutlierDetectionBuilder {
    /// Failures in a row that eject an endpoint; `0` turns this check off. Default 5; any
    /// value up to `u32::MAX`.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// How often success rates are compared, expired ejections are lifted, and ejection
    /// counts decay. Default 10 s; from 1 ns to `Duration::MAX` (never).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// The length of a first ejection; the *n*-th lasts *n* times this (saturating).
    /// Default 30 s; from 1 ns to `Duration::MAX`.
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.base_ejection_time = d;
        self
    }

    /// The cap on one ejection's length. Default 300 s; from `base_ejection_time` to
    /// `Duration::MAX`.
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.max_ejection_time = d;
        self
    }

    /// The most members ejected at once, in percent, rounded down. Default 10; at most
    /// 100. With [endpoint breakers](super::Builder::endpoint_breaker), members kept out
    /// by their circuits (open, half-open, forced open) count against this cap: no
    /// ejection happens while ejected plus blocked members would exceed it.
    pub fn max_ejection_percent(mut self, pct: u32) -> Self {
        self.max_ejection_percent = pct;
        self
    }

    /// Whether the success-rate check runs. Default on.
    pub fn success_rate(mut self, on: bool) -> Self {
        self.success_rate = on;
        self
    }

    /// Endpoints with enough calls needed before success rates are compared. Default 5;
    /// from 1 to `usize::MAX`.
    pub fn success_rate_minimum_hosts(mut self, n: usize) -> Self {
        self.success_rate_minimum_hosts = n;
        self
    }

    /// Calls in an interval for an endpoint to take part in the success-rate check.
    /// Default 100; from 1 to `u32::MAX`.
    pub fn success_rate_request_volume(mut self, n: u32) -> Self {
        self.success_rate_request_volume = n;
        self
    }

    /// How many standard deviations below the mean success rate makes an outlier.
    /// Default 1.9; positive and finite, from `f64::MIN_POSITIVE` to `f64::MAX`.
    pub fn success_rate_stdev_factor(mut self, f: f64) -> Self {
        self.success_rate_stdev_factor = f;
        self
    }

    /// Below this percentage of healthy members the balancer ignores ejections. Default
    /// 50; `0` turns panic mode off; at most 100.
    pub fn panic_threshold_percent(mut self, pct: u32) -> Self {
        self.panic_threshold_percent = pct;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<OutlierDetection, ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be greater than zero"));
        }
        if self.base_ejection_time.is_zero() {
            return Err(ConfigError::new(
                "base_ejection_time",
                "must be greater than zero",
            ));
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err(ConfigError::new(
                "max_ejection_time",
                "must be at least base_ejection_time",
            ));
        }
        if self.max_ejection_percent > 100 {
            return Err(ConfigError::new(
                "max_ejection_percent",
                "must be at most 100",
            ));
        }
        if self.panic_threshold_percent > 100 {
            return Err(ConfigError::new(
                "panic_threshold_percent",
                "must be at most 100",
            ));
        }
        if self.success_rate_minimum_hosts == 0 {
            return Err(ConfigError::new(
                "success_rate_minimum_hosts",
                "must be at least 1",
            ));
        }
        if self.success_rate_request_volume == 0 {
            return Err(ConfigError::new(
                "success_rate_request_volume",
                "must be at least 1",
            ));
        }
        if !(self.success_rate_stdev_factor.is_finite() && self.success_rate_stdev_factor > 0.0) {
            return Err(ConfigError::new(
                "success_rate_stdev_factor",
                "must be positive and finite",
            ));
        }
        Ok(OutlierDetection {
            consecutive_failures: self.consecutive_failures,
            interval: self.interval,
            base_ejection_time: self.base_ejection_time,
            max_ejection_time: self.max_ejection_time,
            max_ejection_percent: self.max_ejection_percent,
            success_rate: self.success_rate.then_some(SuccessRate {
                minimum_hosts: self.success_rate_minimum_hosts,
                request_volume: self.success_rate_request_volume,
                stdev_factor: self.success_rate_stdev_factor,
            }),
            panic_threshold_percent: self.panic_threshold_percent,
        })
    }
}

/// One endpoint's ejection history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EjectionRecord {
    /// Clock reading at which the current ejection ends, if ejected.
    pub(crate) ejected_until: Option<u64>,
    /// Ejections so far, lowered by one per interval spent un-ejected.
    pub(crate) times_ejected: u32,
}

impl EjectionRecord {
    /// Ejects now; returns when the ejection ends.
    pub(crate) fn eject(&mut self, config: &OutlierDetection, now: u64) -> u64 {
        self.times_ejected = self.times_ejected.saturating_add(1);
        let until = now.saturating_add(config.ejection_nanos(self.times_ejected));
        self.ejected_until = Some(until);
        until
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let c = OutlierDetection::builder()
            .base_ejection_time(Duration::from_secs(30))
            .max_ejection_time(Duration::from_secs(100))
            .build()
            .unwrap();
        let mut r = EjectionRecord::default();
        assert_eq!(r.eject(&c, 0), 30 * S);
        assert_eq!(r.eject(&c, 0), 60 * S);
        assert_eq!(r.eject(&c, 0), 90 * S);
        assert_eq!(r.eject(&c, 0), 100 * S);
    }

    #[test]
    fn max_ejection_percent_rounds_down() {
        let c = OutlierDetection::builder()
            .max_ejection_percent(10)
            .build()
            .unwrap();
        assert!(!c.may_eject(0, 5), "10% of 5 is 0 endpoints");
        assert!(c.may_eject(0, 10));
        assert!(!c.may_eject(1, 10));
        assert!(c.may_eject(1, 20));
    }

    #[test]
    fn panic_below_threshold_of_healthy_members() {
        let c = OutlierDetection::builder()
            .panic_threshold_percent(50)
            .build()
            .unwrap();
        assert!(!c.in_panic(5, 10));
        assert!(c.in_panic(4, 10));
        assert!(!c.in_panic(0, 0));
    }

    #[test]
    fn success_rate_floor_flags_the_low_outlier_only() {
        let c = OutlierDetection::builder()
            .success_rate_minimum_hosts(3)
            .success_rate_request_volume(10)
            .success_rate_stdev_factor(1.0)
            .build()
            .unwrap();
        let samples = [
            (100, 100),
            (99, 100),
            (100, 100),
            (98, 100),
            (40, 100),
            (0, 5),
        ];
        let floor = c.success_rate_floor(samples.iter().copied()).unwrap();
        let outliers: Vec<_> = samples
            .iter()
            .filter(|&&(ok, t)| c.is_outlier(floor, ok, t))
            .collect();
        assert_eq!(outliers, vec![&(40, 100)], "low volume is never judged");
    }

    #[test]
    fn success_rate_needs_minimum_hosts() {
        let c = OutlierDetection::builder()
            .success_rate_minimum_hosts(3)
            .success_rate_request_volume(10)
            .build()
            .unwrap();
        assert_eq!(c.success_rate_floor([(10, 10), (0, 10)].into_iter()), None);
    }

    #[test]
    fn builder_names_the_invalid_field() {
        let field = |b: OutlierDetectionBuilder| b.build().unwrap_err().field();
        let b = OutlierDetection::builder;
        assert_eq!(field(b().interval(Duration::ZERO)), "interval");
        assert_eq!(
            field(b().base_ejection_time(Duration::ZERO)),
            "base_ejection_time"
        );
        assert_eq!(
            field(b().max_ejection_time(Duration::from_secs(1))),
            "max_ejection_time"
        );
        assert_eq!(field(b().max_ejection_percent(101)), "max_ejection_percent");
        assert_eq!(
            field(b().panic_threshold_percent(101)),
            "panic_threshold_percent"
        );
        assert_eq!(
            field(b().success_rate_minimum_hosts(0)),
            "success_rate_minimum_hosts"
        );
        assert_eq!(
            field(b().success_rate_request_volume(0)),
            "success_rate_request_volume"
        );
        assert_eq!(
            field(b().success_rate_stdev_factor(f64::NAN)),
            "success_rate_stdev_factor"
        );
    }
}
