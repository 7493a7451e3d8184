//! The rejection vocabulary every layer shares.
//!
//! Every palisade service returns [`BoxError`] so that layers stack. A rejection made by
//! palisade itself is one of the small typed errors below, and callers recover it with
//! [`downcast_ref`](std::error::Error#method.downcast_ref):
//!
//! ```
//! use palisade::error::{BoxError, BulkheadFull};
//!
//! fn is_overload(err: &BoxError) -> bool {
//!     err.is::<BulkheadFull>()
//! }
//! # assert!(is_overload(&BoxError::from(BulkheadFull::new())));
//! ```
//!
//! Errors from the inner service pass through unchanged (boxed).

use std::fmt;
use std::time::Duration;

/// The boxed error type every palisade service returns, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The circuit breaker rejected the call without calling the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    retry_after: Option<Duration>,
    forced: bool,
}

impl BreakerOpen {
    /// A rejection by an open circuit that admits a probe after `retry_after`.
    pub fn new(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            forced: false,
        }
    }

    /// A rejection by a circuit forced open by its handle: it admits nothing until an
    /// operator releases it, so there is no retry time.
    pub fn forced() -> Self {
        Self {
            retry_after: None,
            forced: true,
        }
    }

    /// How long from the rejection until the circuit next admits a probe, if known.
    /// `Some(Duration::ZERO)` means a probe may be admitted now but all probe permits were
    /// taken (half-open).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the circuit was forced open by its handle.
    pub fn is_forced(&self) -> bool {
        self.forced
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.forced, self.retry_after) {
            (true, _) => f.write_str("circuit breaker is forced open"),
            (false, Some(d)) => write!(f, "circuit breaker is open; next probe in {d:?}"),
            (false, None) => f.write_str("circuit breaker is open"),
        }
    }
}

impl std::error::Error for BreakerOpen {}

/// The bulkhead was full: no permit was free (or none became free within the
/// configured maximum wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkheadFull {
    waited: Duration,
}

impl BulkheadFull {
    /// A fail-fast rejection.
    pub fn new() -> Self {
        Self::default()
    }

    /// A rejection after waiting `waited` for a permit.
    pub fn after(waited: Duration) -> Self {
        Self { waited }
    }

    /// How long the call waited before it was rejected (zero when failing fast).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.waited.is_zero() {
            f.write_str("bulkhead is full")
        } else {
            write!(f, "bulkhead is full after waiting {:?}", self.waited)
        }
    }
}

impl std::error::Error for BulkheadFull {}

/// The call did not complete within its timeout; the inner future was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// A timeout that fired after `after`.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The timeout that fired.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request timed out after {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}

/// The balancer had no ready endpoint within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoEndpoints {
    known: usize,
}

impl NoEndpoints {
    /// No endpoint was ready; `known` endpoints were in the set (none, or all pending).
    pub fn new(known: usize) -> Self {
        Self { known }
    }

    /// How many endpoints the balancer knew of when it gave up.
    pub fn known(&self) -> usize {
        self.known
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.known == 0 {
            f.write_str("no endpoints")
        } else {
            write!(f, "none of {} endpoints became ready in time", self.known)
        }
    }
}

impl std::error::Error for NoEndpoints {}

/// A builder was given an invalid value. Returned when the configuration is built, never
/// at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// An invalid `field`, with a short reason (`"must be greater than zero"`).
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the offending field, as the builder method spells it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_names_the_field() {
        let e = ConfigError::new("sleep_window", "must be greater than zero");
        assert_eq!(
            e.to_string(),
            "invalid configuration: `sleep_window` must be greater than zero"
        );
        assert_eq!(e.field(), "sleep_window");
    }

    #[test]
    fn rejections_downcast_from_box_error() {
        let e: BoxError = BreakerOpen::new(Duration::from_secs(3)).into();
        assert_eq!(
            e.downcast_ref::<BreakerOpen>().unwrap().retry_after(),
            Some(Duration::from_secs(3))
        );
        let e: BoxError = Elapsed::new(Duration::from_millis(5)).into();
        assert!(e.is::<Elapsed>());
        assert!(!e.is::<BulkheadFull>());
    }
}
