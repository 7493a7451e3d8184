//! [`ResponseFuture`]: the inner call's future, counted when it completes; or a
//! rejection, ready at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::directory::{self, CircuitId};
use super::shared::Admission;
use crate::classify::{Classify, Outcome};
use crate::error::{BoxError, BreakerOpen, BulkheadFull, Elapsed};
use crate::window::Event;

pin_project! {
    /// The future of [`CircuitBreaker`](super::CircuitBreaker)'s `call`.
    ///
    /// Dropping it before it completes counts nothing and gives back a half-open probe
    /// permit it holds.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        call: Option<CallRecord<C>>,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            // Still set: the call did not complete. Give back what it held.
            if let Some(CallRecord { circuit, mut admission, .. }) = this.project().call.take() {
                if admission.holds_probe() {
                    directory::with_circuit(circuit, |c| c.abandon(&mut admission));
                }
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { open: BreakerOpen },
    }
}

/// An admitted call's bookkeeping. While the future holds it, the call is in flight;
/// completion takes it out, and the future's drop releases what a cancelled call held.
///
/// It names its circuit by id, found through the thread's [`directory`] at the end,
/// rather than holding a reference count on it.
struct CallRecord<C> {
    circuit: CircuitId,
    classify: C,
    admission: Admission,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, admission: Admission, circuit: CircuitId, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            call: Some(CallRecord {
                circuit,
                classify,
                admission,
            }),
        }
    }

    pub(crate) fn rejected(open: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { open },
            call: None,
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = match this.kind.project() {
            KindProj::Called { future } => future,
            KindProj::Rejected { open } => return Poll::Ready(Err((*open).into())),
        };
        let result = ready!(future.poll(cx));
        let Some(record) = this.call.as_ref() else {
            // Polled after it completed (the inner future allowed it): count nothing twice.
            return Poll::Ready(result.map_err(Into::into));
        };
        // Classified while the future still holds the record, so that a panicking
        // classifier leaves the drop to give a probe permit back.
        let outcome = record.classify.classify(&result);
        let result = result.map_err(Into::into);
        let event = window_event(outcome, &result);
        if let Some(CallRecord {
            circuit, admission, ..
        }) = this.call.take()
        {
            // The admission, and a probe permit in it, goes to the circuit.
            directory::with_circuit(circuit, |c| c.complete(admission, event));
        }
        Poll::Ready(result)
    }
}

/// What the window counts for a classified result (`None`: nothing).
pub(super) fn window_event<T>(outcome: Outcome, result: &Result<T, BoxError>) -> Option<Event> {
    match (outcome, result) {
        (Outcome::Ignored, _) => None,
        (Outcome::Success, _) => Some(Event::Success),
        (Outcome::Failure, Err(e)) => Some(failure_event(e)),
        (Outcome::Failure, Ok(_)) => Some(Event::Failure),
    }
}

/// A timeout or a bulkhead rejection below the breaker counts as what it is, so a
/// Hystrix-style stack sees them as errors of their own kind.
fn failure_event(e: &BoxError) -> Event {
    if e.is::<Elapsed>() {
        Event::Timeout
    } else if e.is::<BulkheadFull>() {
        Event::Rejected
    } else {
        Event::Failure
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
