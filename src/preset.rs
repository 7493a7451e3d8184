//! The Hystrix "command" as one layer: timeout, bulkhead, circuit breaker and rolling
//! statistics, configured by Hystrix's five knobs.
//!
//! ```text
//! request ─▶ CircuitBreaker ─▶ Bulkhead ─▶ Timeout ─▶ your service
//!                 │ counts every outcome below it in its rolling window
//! ```
//!
//! The breaker sits outside the other two, so what they reject is what it counts: a
//! timeout is an [`Event::Timeout`](crate::window::Event::Timeout) and a full bulkhead an
//! [`Event::Rejected`](crate::window::Event::Rejected), and both are errors in the error
//! percentage, as in Hystrix. The breaker's own rejections (short circuits) are counted
//! but are not errors. A call whose service panics is an error too, as a command that
//! throws is in Hystrix: the bulkhead gives its permit back and the breaker counts a
//! failure while the panic unwinds (see [breaker panics](crate::breaker#panics)).
//!
//! | knob | default | Hystrix property |
//! |---|---|---|
//! | [`timeout`](HystrixBuilder::timeout) | 1000 ms | `execution.isolation.thread.timeoutInMilliseconds` |
//! | [`max_concurrent_requests`](HystrixBuilder::max_concurrent_requests) | 10 | `execution.isolation.semaphore.maxConcurrentRequests` |
//! | [`request_volume_threshold`](HystrixBuilder::request_volume_threshold) | 20 | `circuitBreaker.requestVolumeThreshold` |
//! | [`error_percent_threshold`](HystrixBuilder::error_percent_threshold) | 50 % | `circuitBreaker.errorThresholdPercentage` |
//! | [`sleep_window`](HystrixBuilder::sleep_window) | 5000 ms | `circuitBreaker.sleepWindowInMilliseconds` |
//! | [`metrics_window`](HystrixBuilder::metrics_window) | 10 s in 10 buckets | `metrics.rollingStats.timeInMilliseconds` / `numBuckets` |
//!
//! Everything else the breaker offers (slow-call rate, consecutive failures, backoff of
//! the open period, probes, events, a classifier, the clock) is reached through
//! [`HystrixBuilder::breaker`].
//!
//! ```
//! use palisade::preset::Hystrix;
//! use std::time::Duration;
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let hystrix = Hystrix::builder()
//!     .timeout(Duration::from_millis(250))
//!     .max_concurrent_requests(100)
//!     .breaker(|b| b.consecutive_failures(5))
//!     .build()?
//!     .layer();
//! let breaker = hystrix.breaker();
//! let mut svc = tower::ServiceBuilder::new()
//!     .layer(hystrix)
//!     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x * 2) });
//!
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! assert_eq!(breaker.metrics().window.counts.successes, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use crate::breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerHandle, CircuitBreaker, CircuitBreakerLayer,
};
use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadHandle, BulkheadLayer};
use crate::classify::ErrIsFailure;
use crate::error::ConfigError;
use crate::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use crate::window::WindowConfig;

/// The entry point: [`Hystrix::builder`].
#[derive(Debug, Clone, Copy)]
pub struct Hystrix;

impl Hystrix {
    /// A builder with Hystrix's defaults (see the [module docs](self)).
    pub fn builder() -> HystrixBuilder {
        HystrixBuilder {
            timeout: Duration::from_millis(1000),
            max_concurrent_requests: 10,
            request_volume_threshold: 20,
            error_percent_threshold: 50.0,
            sleep_window: Duration::from_millis(5000),
            metrics_window: WindowConfig::default(),
            breaker: BreakerConfig::builder(),
        }
    }
}

/// Builds a checked [`HystrixConfig`].
pub struct HystrixBuilder<C = ErrIsFailure> {
    timeout: Duration,
    max_concurrent_requests: usize,
    request_volume_threshold: u32,
    error_percent_threshold: f64,
    sleep_window: Duration,
    metrics_window: WindowConfig,
    breaker: BreakerConfigBuilder<C>,
}

impl<C> HystrixBuilder<C> {
    /// How long a call may run before it fails with
    /// [`Elapsed`](crate::error::Elapsed) and its future is dropped (default 1000 ms).
    /// From 1 ns to `Duration::MAX` (never).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls allowed to run at once; more fail at once with
    /// [`BulkheadFull`](crate::error::BulkheadFull) (default 10). From 1 to `usize::MAX`.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n;
        self
    }

    /// Calls the rolling window must hold before the error percentage can trip the
    /// circuit (default 20). Any value from 0 to `u32::MAX`.
    pub fn request_volume_threshold(mut self, n: u32) -> Self {
        self.request_volume_threshold = n;
        self
    }

    /// Error percentage, from 0 to 100, at or above which the circuit trips (default 50).
    /// Failures, timeouts and bulkhead rejections are errors. NaN is rejected.
    pub fn error_percent_threshold(mut self, percent: f64) -> Self {
        self.error_percent_threshold = percent;
        self
    }

    /// How long a tripped circuit rejects calls before it lets a probe through (default
    /// 5000 ms). From 1 ns to `Duration::MAX`. A backoff set through
    /// [`breaker`](Self::breaker) replaces it.
    pub fn sleep_window(mut self, period: Duration) -> Self {
        self.sleep_window = period;
        self
    }

    /// The rolling statistics window: `length` split into `buckets` (default 10 s in 10
    /// buckets). `length` must divide evenly into the buckets; the ranges are the
    /// [window's](WindowConfig::time).
    pub fn metrics_window(mut self, length: Duration, buckets: u32) -> Self {
        self.metrics_window = WindowConfig::time(length, buckets);
        self
    }

    /// Sets the breaker's other settings: slow-call rate, consecutive failures, backoff
    /// of the open period, probes, events, classifier, clock. The five Hystrix knobs and
    /// the metrics window set on this builder take precedence over the same settings made
    /// here.
    ///
    /// The classifier sees the boxed errors of the layers below it: `Result<Response,
    /// BoxError>`.
    pub fn breaker<C2>(
        self,
        f: impl FnOnce(BreakerConfigBuilder<C>) -> BreakerConfigBuilder<C2>,
    ) -> HystrixBuilder<C2> {
        HystrixBuilder {
            timeout: self.timeout,
            max_concurrent_requests: self.max_concurrent_requests,
            request_volume_threshold: self.request_volume_threshold,
            error_percent_threshold: self.error_percent_threshold,
            sleep_window: self.sleep_window,
            metrics_window: self.metrics_window,
            breaker: f(self.breaker),
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method whose value is invalid: a zero `timeout`,
    /// `max_concurrent_requests` or `sleep_window`, an `error_percent_threshold` outside 0
    /// to 100, a `metrics_window` with zero length or buckets or a length that does not
    /// divide into its buckets, or an invalid breaker setting (named as the breaker's
    /// builder names it).
    pub fn build(self) -> Result<HystrixConfig<C>, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::new(
                "max_concurrent_requests",
                "must be greater than zero",
            ));
        }
        if !(0.0..=100.0).contains(&self.error_percent_threshold) {
            return Err(ConfigError::new(
                "error_percent_threshold",
                format!(
                    "must be from 0 to 100, not {}",
                    self.error_percent_threshold
                ),
            ));
        }
        if self.sleep_window.is_zero() {
            return Err(ConfigError::new(
                "sleep_window",
                "must be greater than zero",
            ));
        }
        if let Err(e) = self.metrics_window.build() {
            return Err(ConfigError::new(
                "metrics_window",
                format!("`{}` {}", e.field(), e.reason()),
            ));
        }
        let timeout = TimeoutConfig::builder().timeout(self.timeout).build()?;
        let bulkhead = BulkheadConfig::builder()
            .max_concurrent_calls(self.max_concurrent_requests)
            .build()?;
        let breaker = self
            .breaker
            .window(self.metrics_window)
            .minimum_requests(self.request_volume_threshold)
            .error_percentage(self.error_percent_threshold)
            .sleep_window(self.sleep_window)
            // Hystrix times every command (its latency percentiles).
            .record_latency_unless_set(true)
            .build()?;
        Ok(HystrixConfig {
            timeout,
            bulkhead,
            breaker,
        })
    }
}

impl<C> fmt::Debug for HystrixBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HystrixBuilder")
            .field("timeout", &self.timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_volume_threshold", &self.request_volume_threshold)
            .field("error_percent_threshold", &self.error_percent_threshold)
            .field("sleep_window", &self.sleep_window)
            .field("metrics_window", &self.metrics_window)
            .finish_non_exhaustive()
    }
}

/// A checked Hystrix configuration; [`layer`](Self::layer) makes layers from it.
#[derive(Clone)]
pub struct HystrixConfig<C = ErrIsFailure> {
    timeout: TimeoutConfig,
    bulkhead: BulkheadConfig,
    breaker: BreakerConfig<C>,
}

impl<C: Clone> HystrixConfig<C> {
    /// A layer with a new circuit and a new bulkhead: every service it wraps shares
    /// them. Call `layer()` again for an independent command.
    pub fn layer(&self) -> HystrixLayer<C> {
        HystrixLayer {
            breaker: self.breaker.layer(),
            bulkhead: self.bulkhead.layer(),
            timeout: self.timeout.layer(),
        }
    }
}

impl<C> fmt::Debug for HystrixConfig<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HystrixConfig")
            .field("timeout", &self.timeout)
            .field("bulkhead", &self.bulkhead)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// The Hystrix command as a layer. Its service is
/// `CircuitBreaker<Bulkhead<Timeout<S>>>`; clones of the layer, and every service it
/// makes, share one circuit and one bulkhead.
#[derive(Clone)]
pub struct HystrixLayer<C = ErrIsFailure> {
    breaker: CircuitBreakerLayer<C>,
    bulkhead: BulkheadLayer,
    timeout: TimeoutLayer,
}

/// The service a [`HystrixLayer`] makes.
pub type HystrixService<S, C = ErrIsFailure> = CircuitBreaker<Bulkhead<Timeout<S>>, C>;

impl<C> HystrixLayer<C> {
    /// The circuit's handle: state, metrics (the rolling window's counts and latency),
    /// manual control and events.
    pub fn breaker(&self) -> BreakerHandle {
        self.breaker.handle()
    }

    /// The bulkhead's handle: permits in use, capacity, rejections.
    pub fn bulkhead(&self) -> BulkheadHandle {
        self.bulkhead.handle()
    }
}

impl<S, C: Clone> Layer<S> for HystrixLayer<C> {
    type Service = HystrixService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        self.breaker
            .layer(self.bulkhead.layer(self.timeout.layer(inner)))
    }
}

impl<C> fmt::Debug for HystrixLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HystrixLayer")
            .field("breaker", &self.breaker)
            .field("bulkhead", &self.bulkhead)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_knob_is_validated_under_its_own_name() {
        let field = |b: HystrixBuilder| b.build().unwrap_err().field();
        assert_eq!(field(Hystrix::builder().timeout(Duration::ZERO)), "timeout");
        assert_eq!(
            field(Hystrix::builder().max_concurrent_requests(0)),
            "max_concurrent_requests"
        );
        assert_eq!(
            field(Hystrix::builder().error_percent_threshold(100.5)),
            "error_percent_threshold"
        );
        assert_eq!(
            field(Hystrix::builder().error_percent_threshold(-1.0)),
            "error_percent_threshold"
        );
        assert_eq!(
            field(Hystrix::builder().sleep_window(Duration::ZERO)),
            "sleep_window"
        );
        assert_eq!(
            field(Hystrix::builder().metrics_window(Duration::from_secs(10), 0)),
            "metrics_window"
        );
        assert_eq!(
            field(Hystrix::builder().metrics_window(Duration::from_nanos(10), 3)),
            "metrics_window"
        );
        assert_eq!(
            field(Hystrix::builder().breaker(|b| b.half_open_probes(0))),
            "half_open_probes"
        );
    }

    #[test]
    fn defaults_are_hystrix_defaults() {
        let b = Hystrix::builder();
        assert_eq!(b.timeout, Duration::from_millis(1000));
        assert_eq!(b.max_concurrent_requests, 10);
        assert_eq!(b.request_volume_threshold, 20);
        assert_eq!(b.error_percent_threshold, 50.0);
        assert_eq!(b.sleep_window, Duration::from_millis(5000));
        assert!(b.build().is_ok());
    }
}
