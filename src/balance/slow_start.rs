//! Slow start: a new endpoint's effective weight ramps up over a window.
//!
//! A cold endpoint (empty caches, JIT not warmed, connection pools not filled) that
//! receives its full share at once can fail or slow down. For a
//! [`window`](SlowStartBuilder::window) after an endpoint joins, its effective weight is
//!
//! ```text
//! weight × max(min_weight_percent / 100, (age / window) ^ (1 / aggression))
//! ```
//!
//! as in Envoy: `aggression` 1 ramps linearly, above 1 ramps faster early on. The
//! balancer recomputes effective weights in ten steps over the window, so weight-aware
//! pickers rebuild their tables ten times per joining endpoint, not per request. Pickers
//! that ignore weights ([`RoundRobin`](super::RoundRobin),
//! [`PowerOfTwoChoices`](super::PowerOfTwoChoices)) are unaffected.

use std::time::Duration;

use crate::error::ConfigError;

/// Slow-start settings. Build with [`SlowStart::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlowStart {
    window: Duration,
    aggression: f64,
    min_weight_percent: u32,
}

/// Steps per window at which effective weights are recomputed.
const STEPS: u64 = 10;

impl SlowStart {
    /// A builder: window 30 s, aggression 1 (linear), minimum 10 %.
    pub fn builder() -> SlowStartBuilder {
        SlowStartBuilder {
            window: Duration::from_secs(30),
            aggression: 1.0,
            min_weight_percent: 10,
        }
    }

    /// The ramp's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The fraction of its weight an endpoint of age `age_ns` gets, in `(0, 1]`.
    pub fn factor(&self, age_ns: u64) -> f64 {
        let window = self.window.as_nanos() as f64;
        let age = age_ns as f64;
        if age >= window {
            return 1.0;
        }
        let ramp = (age / window).powf(1.0 / self.aggression);
        ramp.max(self.min_weight_percent as f64 / 100.0).min(1.0)
    }

    pub(crate) fn window_nanos(&self) -> u64 {
        super::nanos(self.window)
    }

    pub(crate) fn step_nanos(&self) -> u64 {
        (self.window_nanos() / STEPS).max(1)
    }
}

/// Builds a [`SlowStart`]; every setter's name is the field a [`ConfigError`] reports.
#[derive(Debug, Clone)]
pub struct SlowStartBuilder {
    window: Duration,
    aggression: f64,
    min_weight_percent: u32,
}

impl SlowStartBuilder {
    /// How long the ramp lasts (default 30 s). From 1 ns to `Duration::MAX`.
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }

    /// The ramp's curve (default 1): 1 is linear, larger ramps faster at first. Positive
    /// and finite, from `f64::MIN_POSITIVE` to `f64::MAX`.
    pub fn aggression(mut self, a: f64) -> Self {
        self.aggression = a;
        self
    }

    /// The smallest share of its weight a joining endpoint gets, in percent (default 10),
    /// 1 to 100.
    pub fn min_weight_percent(mut self, pct: u32) -> Self {
        self.min_weight_percent = pct;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<SlowStart, ConfigError> {
        if self.window.is_zero() {
            return Err(ConfigError::new("window", "must be greater than zero"));
        }
        if !(self.aggression.is_finite() && self.aggression > 0.0) {
            return Err(ConfigError::new(
                "aggression",
                "must be positive and finite",
            ));
        }
        if self.min_weight_percent == 0 || self.min_weight_percent > 100 {
            return Err(ConfigError::new(
                "min_weight_percent",
                "must be between 1 and 100",
            ));
        }
        Ok(SlowStart {
            window: self.window,
            aggression: self.aggression,
            min_weight_percent: self.min_weight_percent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ramp_from_the_minimum_to_full_weight() {
        let s = SlowStart::builder()
            .window(Duration::from_secs(10))
            .build()
            .unwrap();
        assert_eq!(s.factor(0), 0.1);
        assert!((s.factor(5_000_000_000) - 0.5).abs() < 1e-9);
        assert_eq!(s.factor(10_000_000_000), 1.0);
        assert_eq!(s.factor(u64::MAX), 1.0);
    }

    #[test]
    fn aggression_ramps_faster_early() {
        let s = SlowStart::builder()
            .window(Duration::from_secs(10))
            .aggression(2.0)
            .build()
            .unwrap();
        assert!((s.factor(2_500_000_000) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn builder_names_the_invalid_field() {
        let b = SlowStart::builder;
        assert_eq!(
            b().window(Duration::ZERO).build().unwrap_err().field(),
            "window"
        );
        assert_eq!(
            b().aggression(0.0).build().unwrap_err().field(),
            "aggression"
        );
        assert_eq!(
            b().min_weight_percent(0).build().unwrap_err().field(),
            "min_weight_percent"
        );
    }
}
