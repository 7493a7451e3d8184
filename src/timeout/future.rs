//! [`ResponseFuture`]: the inner call raced against its deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::{BoxError, Elapsed};

/// Stands in for an unrepresentable deadline (a start plus an enormous override): about
/// thirty years, as tokio does for `sleep(Duration::MAX)`.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

pin_project! {
    /// The response future of a [`Timeout`](super::Timeout).
    ///
    /// It polls the inner future first; only if that is pending does it arm a timer for
    /// the deadline (the call's start plus its timeout). When the timer fires, the inner
    /// future is dropped at once (cancelling it) and this future resolves to
    /// [`Elapsed`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        started: Instant,
        after: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, started: Instant, after: Duration) -> Self {
        ResponseFuture {
            inner: Some(inner),
            sleep: None,
            started,
            after,
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
        let mut this = self.project();
        // The response wins a tie with the timer.
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            if let Poll::Ready(result) = inner.poll(cx) {
                return Poll::Ready(result.map_err(Into::into));
            }
        }
        if this.sleep.is_none() {
            let deadline = this
                .started
                .checked_add(*this.after)
                .unwrap_or_else(|| *this.started + FAR_FUTURE);
            this.sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        this.inner.set(None);
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "palisade::timeout", after = ?this.after, "call timed out");
        Poll::Ready(Err(Elapsed::new(*this.after).into()))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("started", &self.started)
            .field("after", &self.after)
            .field("armed", &self.sleep.is_some())
            .field("expired", &self.inner.is_none())
            .finish()
    }
}
