//! [`CircuitBreaker`]: the tower `Service`, a thin shell over the shared circuit.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::config::BreakerConfig;
use super::future::ResponseFuture;
use super::handle::BreakerHandle;
use super::shared::SharedCircuit;
use crate::classify::{Classify, ErrIsFailure};
use crate::error::BoxError;

/// What a clone of the service needs at completion: the circuit and the classifier.
///
/// Each clone of the service has its own, so the reference count a response future
/// takes is not a cache line that every thread writes.
pub(crate) struct CallSite<C> {
    pub(crate) shared: Arc<SharedCircuit>,
    pub(crate) classify: C,
}

/// A circuit breaker in front of `S`. See the [module docs](super) for the contract.
///
/// Clones share the circuit (and its handle); each clone allocates one small record of
/// its own, so that concurrent clones do not contend on a shared reference count.
pub struct CircuitBreaker<S, C = ErrIsFailure> {
    inner: S,
    site: Arc<CallSite<C>>,
}

impl<S, C: Clone> CircuitBreaker<S, C> {
    /// Wraps `inner` in a new circuit configured by `config`.
    pub fn new(inner: S, config: &BreakerConfig<C>) -> Self {
        let shared = Arc::new(SharedCircuit::new(config));
        Self::from_shared(inner, shared, config.classify.clone())
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<SharedCircuit>, classify: C) -> Self {
        CircuitBreaker {
            inner,
            site: Arc::new(CallSite { shared, classify }),
        }
    }

    /// The handle of this service's circuit.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.site.shared.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self::from_shared(
            self.inner.clone(),
            self.site.shared.clone(),
            self.site.classify.clone(),
        )
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Forwards to the inner service: an open circuit never makes the service unready
    /// (that would read as dead to tower); it rejects in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.site.shared.admit() {
            Ok(admission) => {
                ResponseFuture::called(self.inner.call(req), admission, self.site.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.site.shared.state())
            .finish_non_exhaustive()
    }
}
