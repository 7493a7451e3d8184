//! [`BulkheadLayer`]: one bulkhead shared by every service the layer makes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::config::{Admission, BulkheadConfig, FailFast};
use super::handle::BulkheadHandle;
use super::permits::Permits;
use super::Bulkhead;

/// Applies a [`Bulkhead`] to a service.
///
/// The layer owns one bulkhead: every service it [`layer`](Layer::layer)s, and every clone
/// of the layer, shares the same limit, so a stack built once per connection still bounds
/// the calls of all connections together. For independent bulkheads, make one layer each
/// with [`BulkheadConfig::layer`].
pub struct BulkheadLayer<M = FailFast> {
    permits: Arc<Permits>,
    max_wait: Option<Duration>,
    _mode: PhantomData<M>,
}

impl<M: Admission> BulkheadLayer<M> {
    /// A layer with a new bulkhead of `config`.
    pub fn new(config: &BulkheadConfig<M>) -> Self {
        BulkheadLayer {
            permits: Permits::new(config.max_concurrent_calls()),
            max_wait: config.max_wait(),
            _mode: PhantomData,
        }
    }

    /// A handle on this layer's bulkhead, for observing and resizing it at run time.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(Arc::clone(&self.permits))
    }
}

impl<S, M: Admission> Layer<S> for BulkheadLayer<M> {
    type Service = Bulkhead<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::with_permits(inner, Arc::clone(&self.permits), self.max_wait)
    }
}

impl<M> Clone for BulkheadLayer<M> {
    fn clone(&self) -> Self {
        BulkheadLayer {
            permits: Arc::clone(&self.permits),
            max_wait: self.max_wait,
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BulkheadLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("permits", &self.permits)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}
