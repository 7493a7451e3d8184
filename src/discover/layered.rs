//! A discovery source with a layer applied to every endpoint.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tower::discover::{Change, Discover};
use tower_layer::Layer;

use super::Weighted;

/// Applies `layer` to the service of every endpoint a source of [`Weighted`] endpoints
/// inserts, keeping the weight.
///
/// This is where per-endpoint middleware goes: a per-endpoint circuit breaker whose
/// `poll_ready` is `Pending` while open makes the balancer route around that endpoint
/// until the breaker wakes it for a probe.
///
/// ```
/// use palisade::discover::{FixedList, Layered};
/// use tower::limit::ConcurrencyLimitLayer;
///
/// let list = FixedList::unweighted([("a", tower::service_fn(|x: u8| async move { Ok::<_, std::io::Error>(x) }))]);
/// let limited = Layered::new(list, ConcurrencyLimitLayer::new(8));
/// # drop(limited);
/// ```
pub struct Layered<D, L> {
    discover: D,
    layer: L,
}

impl<D, L> Layered<D, L> {
    /// Wraps `discover`.
    pub fn new(discover: D, layer: L) -> Self {
        Self { discover, layer }
    }
}

impl<D: Unpin, L> Unpin for Layered<D, L> {}

impl<D, L, S> Stream for Layered<D, L>
where
    D: Discover<Service = Weighted<S>> + Unpin,
    L: Layer<S>,
{
    type Item = Result<Change<D::Key, Weighted<L::Service>>, D::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        Pin::new(&mut this.discover).poll_discover(cx).map(|c| {
            c.map(|r| {
                r.map(|change| match change {
                    Change::Insert(k, svc) => {
                        let weight = svc.weight();
                        let layered = this.layer.layer(svc.into_inner());
                        Change::Insert(k, Weighted::new(layered, weight))
                    }
                    Change::Remove(k) => Change::Remove(k),
                })
            })
        })
    }
}

impl<D: fmt::Debug, L> fmt::Debug for Layered<D, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("discover", &self.discover)
            .finish_non_exhaustive()
    }
}
