//! Bulkhead: a cap on the number of calls in flight, so one slow dependency cannot take
//! every worker with it.
//!
//! # Contract
//!
//! - **`poll_ready` only forwards to the inner service.** It never fails or waits because
//!   the bulkhead is full; capacity is not reserved there.
//! - **`call` takes the permit.** If one is free, the inner service is called at once and
//!   the permit travels with the response future. If none is free:
//!   - in [`FailFast`] mode (the default) the inner service is *not* called and the future
//!     resolves to [`BulkheadFull`](crate::error::BulkheadFull) (with a zero
//!     [`waited`](crate::error::BulkheadFull::waited));
//!   - in [`Queued`] mode (set by [`max_wait`](BulkheadConfigBuilder::max_wait)) the call
//!     joins a strictly FIFO queue, carrying the request and the ready inner service (the
//!     service is cloned to replace it, which is why `Queued` needs `S: Clone`). A freed
//!     permit is handed directly to the head of the queue, so a later arrival never
//!     overtakes a waiter. If no permit comes within `max_wait` (measured from `call`,
//!     on tokio's clock) the future resolves to
//!     [`BulkheadFull::after(waited)`](crate::error::BulkheadFull::after) without calling
//!     the inner service.
//! - **The permit is returned** as soon as the inner future completes, when the response
//!   future is dropped at any point (a queued call leaves the queue, or passes on a permit
//!   handed to it before it ran), and while unwinding if the inner future panics.
//! - **Errors**: the future's error is [`BoxError`]; the inner service's errors pass
//!   through boxed. Rejections are returned from the future, never from `poll_ready`.
//! - **Clone**: clones of a [`Bulkhead`] share one limit, and so do all services made by
//!   one [`BulkheadLayer`]. [`BulkheadConfig::layer`] makes a new, independent bulkhead.
//!   Each clone (and each service a layer makes) allocates one small record of its own
//!   that its calls' permits point at, so threads calling their own clones do not contend
//!   on one reference count; clone once per worker or connection, not per request.
//! - **Futures** are `Send` when the inner future (and, for `Queued`, the service and the
//!   request) are, and `'static` when those are.
//! - **Cost**: the free permits are spread over per-core shards, each on its own cache
//!   line, and each clone (and each service a layer makes) is given a shard round-robin.
//!   Admitting a call is one compare-and-swap on the clone's shard plus a load of a shared,
//!   rarely written line and a reference-count increment for the permit; releasing it is
//!   one atomic add on the same shard, two loads, and the reference-count decrement. So
//!   threads calling their own clones do not contend while their shards have permits in
//!   stock. When a shard runs dry the call takes a permit from the shared pool or steals
//!   one from another shard. No lock and no allocation (a rejection allocates only its
//!   boxed error). The queue's `parking_lot` lock is taken only when a call must wait,
//!   while it waits, or when a permit is released while someone waits.
//! - **Exact limit**: never more than the capacity in use at once, wherever the free
//!   permits are stocked; a call is rejected only after a consistent scan of every shard
//!   found none free (a fail-fast call gives up after 16 scans that other calls kept
//!   changing, which needs the bulkhead to be churning at its limit). A rejection scans
//!   every shard, so it costs more than an admission.
//! - **Memory**: a bulkhead has twice as many shards as the machine has cores (rounded up
//!   to a power of two, at most 64), 256 bytes each: 16 KiB at most, plus about 1 KiB.
//! - **Scope of a permit**: the response future, no further. For a streaming response
//!   (an HTTP body, say) the permit is returned when the response value is produced, not
//!   when the body is consumed.
//! - **Runtime**: fail-fast mode needs no runtime. Queued mode arms a tokio timer for the
//!   wait, so a call that has to queue must be made inside a tokio runtime with the time
//!   driver enabled (as with `tokio::time::sleep`).
//! - **Tracing**: with the `tracing` feature, rejections are `debug` events and capacity
//!   changes `info` events, under the target `palisade::bulkhead`.
//!
//! A [`BulkheadHandle`] reports `in_use`, `capacity`, `waiting` and `rejected`, and resizes
//! the bulkhead at run time with [`set_capacity`](BulkheadHandle::set_capacity).
//!
//! # Example
//!
//! ```
//! use palisade::bulkhead::BulkheadConfig;
//! use palisade::error::BulkheadFull;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let layer = BulkheadConfig::builder().max_concurrent_calls(1).build()?.layer();
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|x: u32| async move { Ok::<_, palisade::BoxError>(x * 2) }));
//!
//! let first = svc.ready().await?.call(1); // holds the only permit until it completes
//! let second = svc.ready().await?.call(2); // fails fast
//! assert_eq!(handle.in_use(), 1);
//! assert!(second.await.unwrap_err().is::<BulkheadFull>());
//! assert_eq!(first.await?, 2);
//! assert_eq!(handle.in_use(), 0);
//! assert_eq!(handle.rejected(), 1);
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod permits;

pub use config::{
    Admission, BulkheadConfig, BulkheadConfigBuilder, FailFast, Queued,
    DEFAULT_MAX_CONCURRENT_CALLS,
};
pub use future::{QueuedResponseFuture, ResponseFuture};
pub use handle::BulkheadHandle;
pub use layer::BulkheadLayer;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::error::BoxError;
use permits::{HomeShard, Permits};

/// Caps the calls in flight to an inner service. See the [module docs](self).
pub struct Bulkhead<S, M = FailFast> {
    inner: S,
    permits: Arc<Permits>,
    /// This clone's own reference to `permits`, held by its calls' permits.
    home: Arc<HomeShard>,
    /// `Some` exactly in [`Queued`] mode.
    max_wait: Option<Duration>,
    _mode: PhantomData<M>,
}

impl<S, M: Admission> Bulkhead<S, M> {
    /// Wraps `inner` in a new bulkhead of `config`.
    pub fn new(inner: S, config: &BulkheadConfig<M>) -> Self {
        Self::with_permits(
            inner,
            Permits::new(config.max_concurrent_calls()),
            config.max_wait(),
        )
    }

    pub(crate) fn with_permits(
        inner: S,
        permits: Arc<Permits>,
        max_wait: Option<Duration>,
    ) -> Self {
        Bulkhead {
            inner,
            home: HomeShard::new(Arc::clone(&permits)),
            permits,
            max_wait,
            _mode: PhantomData,
        }
    }

    /// A handle on this bulkhead (shared with its clones), for observing and resizing it.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(Arc::clone(&self.permits))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Bulkhead<S, FailFast>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match Permits::try_acquire_at(&self.home) {
            Some(permit) => ResponseFuture::running(self.inner.call(req), permit),
            None => {
                self.permits.record_rejection(Duration::ZERO);
                ResponseFuture::rejected()
            }
        }
    }
}

impl<S, Req> Service<Req> for Bulkhead<S, Queued>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = QueuedResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(permit) = Permits::try_acquire_fair_at(&self.home) {
            return QueuedResponseFuture::running(self.inner.call(req), permit);
        }
        match Permits::enqueue(&self.home) {
            Ok(permit) => QueuedResponseFuture::running(self.inner.call(req), permit),
            Err(ticket) => {
                // The queued call takes the service that was driven ready; a clone takes
                // its place here and must be driven ready before the next call.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let max_wait = self.max_wait.unwrap_or(Duration::ZERO);
                QueuedResponseFuture::waiting(ready, req, ticket, max_wait)
            }
        }
    }
}

impl<S: Clone, M> Clone for Bulkhead<S, M> {
    fn clone(&self) -> Self {
        Bulkhead {
            inner: self.inner.clone(),
            permits: Arc::clone(&self.permits),
            // A new home per clone: see `home`.
            home: HomeShard::new(Arc::clone(&self.permits)),
            max_wait: self.max_wait,
            _mode: PhantomData,
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Bulkhead<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("permits", &self.permits)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}
