//! [`CircuitBreakerLayer`]: wraps services in a circuit breaker that they all share.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::config::BreakerConfig;
use super::handle::BreakerHandle;
use super::service::CircuitBreaker;
use super::shared::{OwnedCircuit, SharedCircuit};
use crate::classify::ErrIsFailure;

/// Wraps services in a [`CircuitBreaker`]. The layer owns one circuit, and **every
/// service it makes shares it** (as do their clones). For a circuit per endpoint, make a
/// layer per endpoint with [`BreakerConfig::layer`].
///
/// ```
/// use palisade::breaker::BreakerConfig;
/// use tower::ServiceBuilder;
///
/// let layer = BreakerConfig::default().layer();
/// let handle = layer.handle();
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) });
/// # let _ = (svc, handle);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = ErrIsFailure> {
    shared: Arc<OwnedCircuit>,
    classify: C,
}

impl<C: Clone> CircuitBreakerLayer<C> {
    /// A layer with a new circuit configured by `config`.
    pub fn new(config: &BreakerConfig<C>) -> Self {
        CircuitBreakerLayer {
            shared: OwnedCircuit::new(SharedCircuit::new(config)),
            classify: config.classify.clone(),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The handle of this layer's circuit.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.shared.clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_shared(inner, self.shared.clone(), self.classify.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}
