//! [`ResponseFuture`]: the inner call's future, counted when it completes; or a
//! rejection, ready at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::shared::{Admission, SharedCircuit};
use crate::classify::{Classify, Outcome};
use crate::error::{BoxError, BreakerOpen, BulkheadFull, Elapsed};
use crate::window::Event;

pin_project! {
    /// The future of [`CircuitBreaker`](super::CircuitBreaker)'s `call`.
    ///
    /// Dropping it before it completes counts nothing and gives back a half-open probe
    /// permit it holds. If the inner future panics, the call counts as a failure (a
    /// failed probe, when it is one) while the panic unwinds through `poll`.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        call: Option<CallRecord<C>>,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            // Still set: the call did not complete. Give back what it held.
            if let Some(CallRecord { circuit, mut admission, .. }) = this.project().call.take() {
                if let Some(c) = circuit.live().filter(|_| admission.holds_probe()) {
                    c.abandon(&mut admission);
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
struct CallRecord<C> {
    circuit: Arc<SharedCircuit>,
    classify: C,
    admission: Admission,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(
        future: F,
        admission: Admission,
        circuit: Arc<SharedCircuit>,
        classify: C,
    ) -> Self {
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
        let result = ready!(poll_counting_panic(future, this.call, cx));
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
            if let Some(c) = circuit.live() {
                c.complete(admission, event);
            }
        }
        Poll::Ready(result)
    }
}

/// Polls the inner future; if it panics, counts the call (still in `call`) as a failure
/// while the panic unwinds.
#[inline]
fn poll_counting_panic<F: Future, C>(
    future: Pin<&mut F>,
    call: &mut Option<CallRecord<C>>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let guard = PanicIsFailure { call };
    let poll = future.poll(cx);
    // Returned normally: nothing to count here (the guard's drop runs only on unwind).
    std::mem::forget(guard);
    poll
}

/// Dropped only while a panic in the inner future's `poll` unwinds.
struct PanicIsFailure<'a, C> {
    call: &'a mut Option<CallRecord<C>>,
}

impl<C> Drop for PanicIsFailure<'_, C> {
    fn drop(&mut self) {
        if let Some(CallRecord {
            circuit, admission, ..
        }) = self.call.take()
        {
            count_panic(&circuit, admission);
        }
    }
}

/// Counts a call whose inner future panicked as a failure (a failed probe, if it is
/// one, which gives its permit back and reopens the circuit).
///
/// Runs while the panic unwinds, so a second panic would abort the process: one from
/// code run by the recording (an event callback, a tracing subscriber) is caught and
/// dropped, and the first panic goes on. As at any completion, a circuit retired
/// meanwhile is not touched.
#[cold]
pub(super) fn count_panic(circuit: &SharedCircuit, admission: Admission) {
    let record = std::panic::AssertUnwindSafe(move || {
        if let Some(c) = circuit.live() {
            c.complete(admission, Some(Event::Failure));
        }
    });
    let _ = std::panic::catch_unwind(record);
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
