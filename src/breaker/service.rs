//! [`CircuitBreaker`]: the tower `Service`, a thin shell over the shared circuit.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::config::BreakerConfig;
use super::future::ResponseFuture;
use super::handle::BreakerHandle;
use super::shared::{OwnedCircuit, SharedCircuit};
use crate::classify::{Classify, ErrIsFailure};
use crate::error::BoxError;

/// A circuit breaker in front of `S`. See the [module docs](super) for the contract.
///
/// Clones share the circuit (and its handle). The classifier is cloned into each call's
/// response future, so it should be cheap to clone (a unit struct, a closure without
/// captures, or state behind an `Arc`).
pub struct CircuitBreaker<S, C = ErrIsFailure> {
    inner: S,
    shared: Arc<OwnedCircuit>,
    classify: C,
}

impl<S, C: Clone> CircuitBreaker<S, C> {
    /// Wraps `inner` in a new circuit configured by `config`.
    pub fn new(inner: S, config: &BreakerConfig<C>) -> Self {
        let shared = OwnedCircuit::new(SharedCircuit::new(config));
        Self::from_shared(inner, shared, config.classify.clone())
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<OwnedCircuit>, classify: C) -> Self {
        CircuitBreaker {
            inner,
            shared,
            classify,
        }
    }

    /// The handle of this service's circuit.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.shared.clone())
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
            self.shared.clone(),
            self.classify.clone(),
        )
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
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
        match self.shared.admit() {
            Ok(admission) => ResponseFuture::called(
                self.inner.call(req),
                admission,
                self.shared.circuit(),
                self.classify.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}
