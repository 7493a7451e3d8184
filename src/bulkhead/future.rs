//! The bulkhead's response futures: [`ResponseFuture`] (fail-fast) and
//! [`QueuedResponseFuture`] (queued).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::permits::{Permit, QueueTicket};
use crate::error::{BoxError, BulkheadFull};

pin_project! {
    /// The response future of a fail-fast [`Bulkhead`](super::Bulkhead): either the inner
    /// call holding its permit, or an immediate [`BulkheadFull`] rejection.
    ///
    /// The permit is returned as soon as the inner future completes, when this future is
    /// dropped, or while unwinding if the inner future panics.
    pub struct ResponseFuture<F> {
        #[pin]
        state: Admitted<F>,
    }
}

pin_project! {
    #[project = AdmittedProj]
    enum Admitted<F> {
        Running { #[pin] future: F, permit: Option<Permit> },
        Rejected,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(future: F, permit: Permit) -> Self {
        ResponseFuture {
            state: Admitted::Running {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected() -> Self {
        ResponseFuture {
            state: Admitted::Rejected,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            AdmittedProj::Running { future, permit } => poll_running(future, permit, cx),
            AdmittedProj::Rejected => Poll::Ready(Err(BulkheadFull::new().into())),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Admitted::Running { .. } => "running",
            Admitted::Rejected => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// The response future of a queued [`Bulkhead`](super::Bulkhead): waiting in the queue
    /// (holding the ready inner service and the request), running the inner call with its
    /// permit, or rejected.
    ///
    /// Dropped while queued, it leaves the queue (or, if a permit was handed to it in the
    /// meantime, passes the permit to the next waiter). Dropped while running, or on
    /// completion or panic of the inner future, it returns its permit.
    pub struct QueuedResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: Queue<S, Req, S::Future>,
    }
}

pin_project! {
    #[project = QueueProj]
    enum Queue<S, Req, F> {
        Waiting {
            service: S,
            request: Option<Req>,
            ticket: QueueTicket,
            #[pin]
            deadline: Sleep,
            started: Instant,
        },
        Running { #[pin] future: F, permit: Option<Permit> },
        Rejected { waited: std::time::Duration },
    }
}

impl<S: Service<Req>, Req> QueuedResponseFuture<S, Req> {
    pub(crate) fn running(future: S::Future, permit: Permit) -> Self {
        QueuedResponseFuture {
            state: Queue::Running {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        ticket: QueueTicket,
        max_wait: std::time::Duration,
    ) -> Self {
        let started = Instant::now();
        // An enormous wait stands for "forever"; about thirty years, as tokio's `sleep` does.
        let deadline = started
            .checked_add(max_wait)
            .unwrap_or_else(|| started + std::time::Duration::from_secs(86_400 * 365 * 30));
        QueuedResponseFuture {
            state: Queue::Waiting {
                service,
                request: Some(request),
                ticket,
                deadline: tokio::time::sleep_until(deadline),
                started,
            },
        }
    }
}

impl<S, Req> Future for QueuedResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let (future, permit) = match state.as_mut().project() {
                QueueProj::Running { future, permit } => return poll_running(future, permit, cx),
                QueueProj::Rejected { waited } => {
                    return Poll::Ready(Err(BulkheadFull::after(*waited).into()))
                }
                QueueProj::Waiting {
                    service,
                    request,
                    ticket,
                    deadline,
                    started,
                } => {
                    let permit = match ticket.poll_admitted(cx) {
                        Some(permit) => permit,
                        None => {
                            ready!(deadline.poll(cx));
                            let waited = started.elapsed();
                            match ticket.give_up(waited) {
                                Some(permit) => permit,
                                None => {
                                    state.set(Queue::Rejected { waited });
                                    continue;
                                }
                            }
                        }
                    };
                    let request = request
                        .take()
                        .expect("a waiting call holds its request until it is sent");
                    (service.call(request), permit)
                }
            };
            // Replacing the waiting state drops the service that made this one call.
            state.set(Queue::Running {
                future,
                permit: Some(permit),
            });
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for QueuedResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Queue::Waiting { .. } => "waiting",
            Queue::Running { .. } => "running",
            Queue::Rejected { .. } => "rejected",
        };
        f.debug_struct("QueuedResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Polls an admitted call, returning its permit unless the call is still pending, which
/// includes when the inner future panics (the guard runs during unwinding).
#[inline]
fn poll_running<F, T, E>(
    future: Pin<&mut F>,
    permit: &mut Option<Permit>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, BoxError>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let mut release = ReleaseUnlessPending {
        permit,
        pending: false,
    };
    let out = future.poll(cx);
    release.pending = out.is_pending();
    drop(release);
    out.map(|result| result.map_err(Into::into))
}

struct ReleaseUnlessPending<'a> {
    permit: &'a mut Option<Permit>,
    pending: bool,
}

impl Drop for ReleaseUnlessPending<'_> {
    fn drop(&mut self) {
        if !self.pending {
            self.permit.take();
        }
    }
}
