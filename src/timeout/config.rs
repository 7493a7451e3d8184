//! The timeout's validated configuration and its builder.

use std::fmt;
use std::time::Duration;

use super::layer::TimeoutLayer;
use super::per_request::{override_name, NoOverride};
use crate::error::ConfigError;

/// The default timeout: Hystrix's `execution.isolation.thread.timeoutInMilliseconds`
/// default of one second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// A validated timeout configuration: a default duration and an optional per-request
/// override. Build it with [`TimeoutConfig::builder`].
///
/// ```
/// use palisade::timeout::TimeoutConfig;
/// use std::time::Duration;
///
/// // 200 ms by default; 2 s for requests for the report endpoint.
/// let config = TimeoutConfig::builder()
///     .timeout(Duration::from_millis(200))
///     .per_request(|path: &String| path.starts_with("/report").then(|| Duration::from_secs(2)))
///     .build()?;
/// assert_eq!(config.timeout(), Duration::from_millis(200));
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct TimeoutConfig<O = NoOverride> {
    timeout: Duration,
    per_request: O,
}

impl TimeoutConfig<NoOverride> {
    /// A builder with [`DEFAULT_TIMEOUT`] and no per-request override.
    pub fn builder() -> TimeoutConfigBuilder<NoOverride> {
        TimeoutConfigBuilder {
            timeout: DEFAULT_TIMEOUT,
            per_request: NoOverride,
        }
    }
}

impl<O> TimeoutConfig<O> {
    /// The default timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The per-request override.
    pub fn per_request(&self) -> &O {
        &self.per_request
    }

    /// A [`TimeoutLayer`] of this configuration.
    pub fn layer(&self) -> TimeoutLayer<O>
    where
        O: Clone,
    {
        TimeoutLayer::new(self)
    }
}

impl<O: 'static> fmt::Debug for TimeoutConfig<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutConfig")
            .field("timeout", &self.timeout)
            .field("per_request", &format_args!("{}", override_name::<O>()))
            .finish()
    }
}

/// Builds a [`TimeoutConfig`]; nothing is checked until [`build`](Self::build).
pub struct TimeoutConfigBuilder<O = NoOverride> {
    timeout: Duration,
    per_request: O,
}

impl<O> TimeoutConfigBuilder<O> {
    /// The default timeout (default [`DEFAULT_TIMEOUT`]). From 1 ns to `Duration::MAX`
    /// (never times out).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A per-request override: `f(&req)` returning `Some(d)` gives that request the
    /// timeout `d` instead of the default; `None` keeps the default. An override of zero
    /// expires the call the first time its inner future is found pending;
    /// `Duration::MAX` never expires it.
    pub fn per_request<F>(self, f: F) -> TimeoutConfigBuilder<F> {
        TimeoutConfigBuilder {
            timeout: self.timeout,
            per_request: f,
        }
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `timeout` if the default timeout is zero.
    pub fn build(self) -> Result<TimeoutConfig<O>, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        Ok(TimeoutConfig {
            timeout: self.timeout,
            per_request: self.per_request,
        })
    }
}

impl<O: 'static> fmt::Debug for TimeoutConfigBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutConfigBuilder")
            .field("timeout", &self.timeout)
            .field("per_request", &format_args!("{}", override_name::<O>()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeout_is_rejected_naming_the_field() {
        let err = TimeoutConfig::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "timeout");
    }

    #[test]
    fn default_timeout_is_one_second() {
        assert_eq!(
            TimeoutConfig::builder().build().unwrap().timeout(),
            Duration::from_secs(1)
        );
    }
}
