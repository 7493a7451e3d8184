//! The balancer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::endpoint::EndpointStats;
use crate::breaker::gate::GateCall;
use crate::classify::{Classify, Outcome};
use crate::clock::Clock;
use crate::error::{BoxError, BreakerOpen, NoEndpoints};

pin_project! {
    /// The future of a request sent through a [`Balance`](super::Balance).
    ///
    /// It counts as in flight on its endpoint from `call` until it completes or is
    /// dropped, whichever is first. On completion it records the latency (when the picker
    /// uses latency) and the classified outcome (when outlier detection is on, and in the
    /// endpoint's circuit when [endpoint breakers](super::Builder::endpoint_breaker) are
    /// on). Dropping it before completion counts nothing and gives back a half-open
    /// probe permit the request held. A request whose inner future panics counts as a
    /// failure (in the outlier-detection counts and the endpoint's circuit) and leaves
    /// the in-flight count while the panic unwinds.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        tracking: Option<Tracking<C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { error: Option<NoEndpoints> },
        Rejected { open: BreakerOpen },
    }
}

/// What a completing request reports to its endpoint; dropping it ends the in-flight
/// count.
pub(crate) struct Tracking<C> {
    stats: Arc<EndpointStats>,
    /// Present when outlier detection or an endpoint breaker needs the outcome.
    classify: Option<C>,
    /// Whether the outcome goes into the endpoint's outlier-detection counts.
    record_outcome: bool,
    /// The endpoint breaker's record of this call, when the endpoint has one.
    gate: Option<GateCall>,
    timing: Option<(Clock, u64)>,
}

impl<C> Tracking<C> {
    pub(crate) fn new(
        stats: Arc<EndpointStats>,
        classify: Option<C>,
        record_outcome: bool,
        gate: Option<GateCall>,
        timing: Option<(Clock, u64)>,
    ) -> Self {
        Self {
            stats,
            classify,
            record_outcome,
            gate,
            timing,
        }
    }
}

impl<C> Drop for Tracking<C> {
    fn drop(&mut self) {
        self.stats.end();
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, tracking: Tracking<C>) -> Self {
        Self {
            state: State::Called { future },
            tracking: Some(tracking),
        }
    }

    pub(crate) fn failed(error: NoEndpoints) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            tracking: None,
        }
    }

    pub(crate) fn rejected(open: BreakerOpen) -> Self {
        Self {
            state: State::Rejected { open },
            tracking: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = match this.state.project() {
            StateProj::Failed { error } => {
                let error = error.take().unwrap_or_default();
                return Poll::Ready(Err(error.into()));
            }
            StateProj::Rejected { open } => return Poll::Ready(Err((*open).into())),
            StateProj::Called { future } => future,
        };
        let guard = PanicIsFailure {
            tracking: &mut *this.tracking,
        };
        let poll = future.poll(cx);
        // Returned normally: the guard's drop runs only on unwind.
        std::mem::forget(guard);
        let result = ready!(poll);
        let Some(mut tracking) = this.tracking.take() else {
            return Poll::Ready(result.map_err(Into::into));
        };
        let outcome = tracking.classify.as_ref().map(|c| c.classify(&result));
        if let (Some(outcome), true) = (outcome, tracking.record_outcome) {
            tracking.stats.record_outcome(outcome);
        }
        if let Some((clock, start)) = &tracking.timing {
            let now = clock.now();
            tracking
                .stats
                .record_latency(now.saturating_sub(*start), now);
        }
        let result = result.map_err(Into::into);
        if let Some(gate) = tracking.gate.take() {
            gate.finish(outcome.unwrap_or(Outcome::Ignored), &result);
        }
        Poll::Ready(result)
    }
}

/// Dropped only while a panic in the inner future's `poll` unwinds: the request failed.
struct PanicIsFailure<'a, C> {
    tracking: &'a mut Option<Tracking<C>>,
}

impl<C> Drop for PanicIsFailure<'_, C> {
    fn drop(&mut self) {
        let Some(mut tracking) = self.tracking.take() else {
            return;
        };
        if tracking.record_outcome && tracking.classify.is_some() {
            tracking.stats.record_outcome(Outcome::Failure);
        }
        if let Some(gate) = tracking.gate.take() {
            gate.panicked();
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.tracking.is_some())
            .finish_non_exhaustive()
    }
}
