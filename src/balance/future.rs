//! The balancer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::endpoint::EndpointStats;
use crate::classify::Classify;
use crate::clock::Clock;
use crate::error::{BoxError, NoEndpoints};

pin_project! {
    /// The future of a request sent through a [`Balance`](super::Balance).
    ///
    /// It counts as in flight on its endpoint from `call` until it completes or is
    /// dropped, whichever is first. On completion it records the latency (when the picker
    /// uses latency) and the classified outcome (when outlier detection is on).
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
    }
}

/// What a completing request reports to its endpoint; dropping it ends the in-flight
/// count.
pub(crate) struct Tracking<C> {
    stats: Arc<EndpointStats>,
    classify: Option<C>,
    timing: Option<(Clock, u64)>,
}

impl<C> Tracking<C> {
    pub(crate) fn new(
        stats: Arc<EndpointStats>,
        classify: Option<C>,
        timing: Option<(Clock, u64)>,
    ) -> Self {
        Self {
            stats,
            classify,
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
            StateProj::Called { future } => future,
        };
        let result = ready!(future.poll(cx));
        if let Some(tracking) = this.tracking.take() {
            if let Some(classify) = &tracking.classify {
                tracking.stats.record_outcome(classify.classify(&result));
            }
            if let Some((clock, start)) = &tracking.timing {
                let now = clock.now();
                tracking
                    .stats
                    .record_latency(now.saturating_sub(*start), now);
            }
        }
        Poll::Ready(result.map_err(Into::into))
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.tracking.is_some())
            .finish_non_exhaustive()
    }
}
