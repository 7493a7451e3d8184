//! Timeout: a deadline per call, with an optional per-request override.
//!
//! # Contract
//!
//! - **`poll_ready` only forwards to the inner service**: readiness is not timed. (Put a
//!   timeout on readiness, or a load shedder, in front if waiting to be ready must be
//!   bounded too.)
//! - **`call` always calls the inner service** and picks the call's timeout: the
//!   per-request override's `Some(d)` if it gives one, otherwise the default.
//! - **The deadline is measured from `call`** (tokio's clock, so a paused test runtime
//!   drives it): a call whose future sits unpolled, say in a join, still expires on time.
//! - **The timer is armed lazily.** The response future polls the inner future first and
//!   creates a timer only if it is pending, so a call whose inner future is ready at the
//!   first poll costs no timer at all, and a response that is ready is always returned,
//!   even if the deadline has passed (the response wins a tie).
//! - **On expiry the inner future is dropped at once**, cancelling the call, and the
//!   future resolves to [`Elapsed`](crate::error::Elapsed) carrying the timeout that
//!   applied. Dropping the response future drops the inner future and the timer.
//! - **Errors**: the future's error is [`BoxError`]; inner errors pass through boxed.
//! - **Clone**: a clone is an independent service with the same configuration (the
//!   timeout keeps no shared state).
//! - **Futures** are `Send` when the inner future is, and `'static` when it is.
//! - **Runtime**: a call whose inner future is pending arms a tokio timer, so it must be
//!   polled inside a tokio runtime with the time driver enabled.
//! - **Tracing**: with the `tracing` feature, each expiry is a `debug` event under the
//!   target `palisade::timeout`.
//! - **Cost**: one clock read per call; no allocation, no lock, and no timer unless the
//!   inner future is pending.
//!
//! # Example
//!
//! ```
//! use palisade::error::Elapsed;
//! use palisade::timeout::TimeoutConfig;
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let config = TimeoutConfig::builder()
//!     .timeout(Duration::from_millis(100))
//!     // Requests asking for more than a second get 5 s instead.
//!     .per_request(|work: &Duration| (*work > Duration::from_secs(1)).then(|| Duration::from_secs(5)))
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(config.layer())
//!     .service(service_fn(|work: Duration| async move {
//!         tokio::time::sleep(work).await;
//!         Ok::<_, palisade::BoxError>(work)
//!     }));
//!
//! let err = svc.ready().await?.call(Duration::from_millis(500)).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<Elapsed>().unwrap().after(), Duration::from_millis(100));
//! assert!(svc.ready().await?.call(Duration::from_secs(2)).await.is_ok());
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod layer;
mod per_request;

pub use config::{TimeoutConfig, TimeoutConfigBuilder, DEFAULT_TIMEOUT};
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
pub use per_request::{NoOverride, TimeoutOverride};

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use crate::error::BoxError;
use per_request::override_name;

/// Bounds the time each call to an inner service may take. See the [module docs](self).
#[derive(Clone)]
pub struct Timeout<S, O = NoOverride> {
    inner: S,
    timeout: Duration,
    per_request: O,
}

impl<S, O: Clone> Timeout<S, O> {
    /// Wraps `inner` with the timeouts of `config`.
    pub fn new(inner: S, config: &TimeoutConfig<O>) -> Self {
        Self::from_parts(inner, config.timeout(), config.per_request().clone())
    }
}

impl<S, O> Timeout<S, O> {
    pub(crate) fn from_parts(inner: S, timeout: Duration, per_request: O) -> Self {
        Timeout {
            inner,
            timeout,
            per_request,
        }
    }

    /// The default timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

impl<S, O, Req> Service<Req> for Timeout<S, O>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    O: TimeoutOverride<Req>,
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
        let after = self.per_request.timeout_for(&req).unwrap_or(self.timeout);
        let started = Instant::now();
        ResponseFuture::new(self.inner.call(req), started, after)
    }
}

impl<S: fmt::Debug, O: 'static> fmt::Debug for Timeout<S, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("per_request", &format_args!("{}", override_name::<O>()))
            .finish()
    }
}
