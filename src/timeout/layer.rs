//! [`TimeoutLayer`]: applies a [`Timeout`] built from a validated configuration.

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use super::config::TimeoutConfig;
use super::per_request::{override_name, NoOverride};
use super::Timeout;

/// Applies a [`Timeout`] to a service. Holds only configuration; services it makes are
/// independent.
#[derive(Clone)]
pub struct TimeoutLayer<O = NoOverride> {
    timeout: Duration,
    per_request: O,
}

impl<O: Clone> TimeoutLayer<O> {
    /// A layer of `config`.
    pub fn new(config: &TimeoutConfig<O>) -> Self {
        TimeoutLayer {
            timeout: config.timeout(),
            per_request: config.per_request().clone(),
        }
    }
}

impl<S, O: Clone> Layer<S> for TimeoutLayer<O> {
    type Service = Timeout<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_parts(inner, self.timeout, self.per_request.clone())
    }
}

impl<O: 'static> fmt::Debug for TimeoutLayer<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("timeout", &self.timeout)
            .field("per_request", &format_args!("{}", override_name::<O>()))
            .finish()
    }
}
