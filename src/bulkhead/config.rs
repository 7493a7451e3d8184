//! The bulkhead's validated configuration and its builder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::layer::BulkheadLayer;
use crate::error::ConfigError;

/// What a full bulkhead does with a new call: fail fast, or queue. Sealed; the two modes
/// are [`FailFast`] and [`Queued`].
pub trait Admission: sealed::Sealed + Copy + fmt::Debug + Send + Sync + 'static {}

/// A full bulkhead rejects a call at once with [`BulkheadFull`](crate::error::BulkheadFull).
/// The default mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailFast;

/// A full bulkhead queues a call (strict FIFO) for up to the configured maximum wait, then
/// rejects it with [`BulkheadFull::after`](crate::error::BulkheadFull::after). The inner
/// service must be `Clone`: a queued call carries the service it will be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued;

impl Admission for FailFast {}
impl Admission for Queued {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::FailFast {}
    impl Sealed for super::Queued {}
}

/// The default number of concurrent calls: Hystrix's default for semaphore isolation
/// (`execution.isolation.semaphore.maxConcurrentRequests = 10`).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 10;

/// A validated bulkhead configuration. Build it with [`BulkheadConfig::builder`]; turn it
/// into a layer with [`BulkheadConfig::layer`] (each call makes a new, independent
/// bulkhead).
///
/// ```
/// use palisade::bulkhead::BulkheadConfig;
/// use std::time::Duration;
///
/// // Fail fast (the default mode) beyond 32 concurrent calls.
/// let fail_fast = BulkheadConfig::builder().max_concurrent_calls(32).build()?;
/// // Queue for up to 50 ms beyond 8 concurrent calls.
/// let queued = BulkheadConfig::builder()
///     .max_concurrent_calls(8)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// assert_eq!(queued.max_wait(), Some(Duration::from_millis(50)));
/// assert_eq!(fail_fast.max_wait(), None);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
pub struct BulkheadConfig<M = FailFast> {
    max_concurrent_calls: usize,
    max_wait: Option<Duration>,
    _mode: PhantomData<M>,
}

impl BulkheadConfig<FailFast> {
    /// A builder in fail-fast mode with [`DEFAULT_MAX_CONCURRENT_CALLS`].
    pub fn builder() -> BulkheadConfigBuilder<FailFast> {
        BulkheadConfigBuilder {
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_wait: None,
            _mode: PhantomData,
        }
    }
}

impl<M: Admission> BulkheadConfig<M> {
    /// How many calls may run at once.
    pub fn max_concurrent_calls(&self) -> usize {
        self.max_concurrent_calls
    }

    /// How long a call may wait for a permit: `None` in fail-fast mode.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// A layer with a new bulkhead of this configuration. Every service that layer makes
    /// shares that one bulkhead; call `layer()` again for an independent one.
    pub fn layer(&self) -> BulkheadLayer<M> {
        BulkheadLayer::new(self)
    }
}

impl<M> Clone for BulkheadConfig<M> {
    fn clone(&self) -> Self {
        BulkheadConfig {
            max_concurrent_calls: self.max_concurrent_calls,
            max_wait: self.max_wait,
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BulkheadConfig<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadConfig")
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

/// Builds a [`BulkheadConfig`]; nothing is checked until [`build`](Self::build).
pub struct BulkheadConfigBuilder<M = FailFast> {
    max_concurrent_calls: usize,
    max_wait: Option<Duration>,
    _mode: PhantomData<M>,
}

impl<M: Admission> BulkheadConfigBuilder<M> {
    /// How many calls may run at once (default [`DEFAULT_MAX_CONCURRENT_CALLS`]). From 1
    /// to `usize::MAX`.
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.max_concurrent_calls = n;
        self
    }

    /// Queue calls that find the bulkhead full, in arrival order, for up to `max_wait`
    /// before rejecting them. Switches the builder to [`Queued`] mode. Must be greater than
    /// zero: a zero wait is fail-fast, which is what leaving `max_wait` unset gives. From
    /// 1 ns to `Duration::MAX` (wait as long as it takes). Unset by default.
    pub fn max_wait(self, max_wait: Duration) -> BulkheadConfigBuilder<Queued> {
        BulkheadConfigBuilder {
            max_concurrent_calls: self.max_concurrent_calls,
            max_wait: Some(max_wait),
            _mode: PhantomData,
        }
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `max_concurrent_calls` if it is zero, or `max_wait` if it
    /// is zero.
    pub fn build(self) -> Result<BulkheadConfig<M>, ConfigError> {
        if self.max_concurrent_calls == 0 {
            return Err(ConfigError::new(
                "max_concurrent_calls",
                "must be greater than zero",
            ));
        }
        if self.max_wait == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "max_wait",
                "must be greater than zero (leave it unset to fail fast)",
            ));
        }
        Ok(BulkheadConfig {
            max_concurrent_calls: self.max_concurrent_calls,
            max_wait: self.max_wait,
            _mode: PhantomData,
        })
    }
}

impl<M> fmt::Debug for BulkheadConfigBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadConfigBuilder")
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_max_concurrent_calls_is_rejected_naming_the_field() {
        let err = BulkheadConfig::builder()
            .max_concurrent_calls(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_concurrent_calls");
    }

    #[test]
    fn zero_max_wait_is_rejected_naming_the_field() {
        let err = BulkheadConfig::builder()
            .max_wait(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_wait");
    }

    #[test]
    fn defaults_are_fail_fast_with_hystrix_limit() {
        let c = BulkheadConfig::builder().build().unwrap();
        assert_eq!(c.max_concurrent_calls(), DEFAULT_MAX_CONCURRENT_CALLS);
        assert_eq!(c.max_wait(), None);
    }
}
